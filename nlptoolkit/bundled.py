"""What ships inside the package: recipes that run by name, and the data they read.

``nlptk run sentiment`` finds ``sentiment.yaml`` among the bundled recipes
(``recipes/`` of a checkout; setup.cfg installs it as ``nlptoolkit/recipes``).
A recipe names a bundled data file as ``bundled:<set>/<file>``, for example
``bundled:sentiment/movie_snippets/train.jsonl.gz``: the file inside the
installed package, so a bundled recipe needs no network and no data folder.
Which sets ship is decided in one place, ``tools/bundle_data.py`` (only those
whose licence allows it); larger or restricted sets are read from
``NLPTK_DATA`` as before.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional

from nlptoolkit.errors import NlptkError

PACKAGE_DIR = Path(__file__).resolve().parent
DATA_SCHEME = "bundled:"


def data_dir() -> Path:
    return PACKAGE_DIR / "bundled_data"


def recipes_dir() -> Path:
    installed = PACKAGE_DIR / "recipes"  # a wheel
    return installed if installed.is_dir() else PACKAGE_DIR.parent / "recipes"  # a checkout


def recipe_files() -> Dict[str, Path]:
    """Bundled recipes by name (the file name without .yaml)."""
    folder = recipes_dir()
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))} if folder.is_dir() else {}


def find_recipe(spec: str) -> Optional[Path]:
    """The bundled recipe that ``spec`` names (``sentiment`` or ``sentiment.yaml``), if any."""
    if "/" in spec or "\\" in spec:
        return None
    return recipe_files().get(spec[:-5] if spec.endswith(".yaml") else spec)


def describe_recipe(path: Path) -> str:
    """The recipe's first comment line: what it trains, on what."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
        if line.strip():
            break
    return ""


def data_sets() -> List[str]:
    """The bundled data sets, as ``bundled:`` prefixes (``sentiment/movie_snippets``)."""
    root = data_dir()
    return sorted(str(p.parent.relative_to(root)) for p in root.glob("**/SOURCE.md")) if root.is_dir() else []


def resolve_data_path(path: str, key: str) -> str:
    """A ``bundled:`` data path as a real file path; any other path unchanged."""
    if not path.startswith(DATA_SCHEME):
        return path
    relative = path[len(DATA_SCHEME):].lstrip("/")
    file = data_dir() / relative
    if ".." in Path(relative).parts or not file.is_file():
        sets = data_dir()
        shipped = ", ".join(f"{s}/{f.name}" for s in data_sets() for f in sorted((sets / s).glob("*.gz")))
        raise NlptkError(f"{key}: {path} is not a bundled data file; the package ships {shipped or 'none'}")
    return str(file)
