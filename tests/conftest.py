"""Shared fixtures: the real datasets, tiny recipes built from them, and ways to run the CLI.

Two ways to run `nlptk`:

* ``run_cli`` starts ``python -m nlptoolkit.cli`` in a subprocess: exactly what a
  user gets (exit code, stdout, stderr, no traceback). About 3 s each (torch import),
  so it is kept for the checks that need a real process.
* ``cli`` calls ``nlptoolkit.cli.main`` in this process with a fresh task registry
  and captured stdout/stderr. An exception that ``main`` does not turn into a
  one-line error propagates and fails the test, so "no traceback" holds here too.

Torch runs on one thread: on a small shared machine two OpenMP threads that
spin-wait for each other make a tiny LSTM ~100x slower.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Dict, List, Optional, Sequence, Tuple

import pytest
import torch

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]


def pytest_sessionstart(session: pytest.Session) -> None:
    """Refuse to test some other copy of the code.

    A `pytest` outside this checkout's environment imports whichever
    nlptoolkit that interpreter has installed, and an editable install made
    before setup.cfg changed keeps its old entry points; both pass or fail
    for the wrong reasons."""
    import configparser
    import importlib.metadata

    import nlptoolkit

    where = Path(nlptoolkit.__file__).resolve().parent
    if where != REPO / "nlptoolkit":
        pytest.exit(
            f"these tests import nlptoolkit from {where}, not from {REPO}: run `python -m pytest` "
            "with the Python where this checkout is installed (`pip install -e .`)", returncode=4,
        )
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg", encoding="utf-8")
    group = cfg["options.entry_points"]["nlptoolkit.plugins"]
    declared = dict(map(str.strip, line.split("=", 1)) for line in group.splitlines() if "=" in line and not line.strip().startswith("#"))
    installed = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="nlptoolkit.plugins")}
    stale = [f"{k} = {v}" for k, v in declared.items() if installed.get(k) != v]
    if stale:
        pytest.exit(f"setup.cfg declares entry points that are not installed ({'; '.join(stale)}); run `pip install -e .` again", returncode=4)


def shared_data_dir() -> Path:
    env = os.environ.get("NLPTK_DATA")
    return Path(env).resolve() if env else REPO.parent / "shared" / "data"


SENTIMENT_DIR = shared_data_dir() / "sentiment" / "movie_snippets"

_ROWS: Dict[str, List[dict]] = {}


def real_rows(split: str, start: int = 0, stop: Optional[int] = None) -> List[dict]:
    """Rows of the real movie-snippet data (cached), e.g. real_rows("train", 0, 60)."""
    if split not in _ROWS:
        path = SENTIMENT_DIR / f"{split}.jsonl"
        if not path.is_file():
            pytest.fail(f"shared data missing: {path} (set NLPTK_DATA or put shared/ beside the repo)")
        with open(path, encoding="utf-8") as f:
            _ROWS[split] = [json.loads(line) for line in f]
    return _ROWS[split][start:stop]


def write_jsonl(path: Path, rows: Sequence[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return path


RECIPE_TEMPLATE = """\
# A tiny sentiment recipe for tests.
name: {name}
task:
  name: sentiment
  text_field: text
  label_field: label
seed: {seed}
device: cpu
data:
  files:
    train: {train}
    validation: {validation}
  tokenizer:
    kind: word
    lowercase: true
encoder:
  cell: lstm
  embedding_dim: 16
  hidden_size: 16
train:
  lr: 0.05  # high, so that 6 steps give a model that predicts both labels
  batch_size: 8
  epochs: 1
  max_steps: {max_steps}
  eval_every: 3
  precision: fp32  # the same numbers on every CPU (auto would pick bf16 on some)
  early_stopping:
    metric: accuracy
"""


def make_tiny_sentiment(folder: Path, name: str = "tiny", seed: int = 7, max_steps: int = 6) -> SimpleNamespace:
    """60 real training rows, 20 validation rows, 40 test rows, and a recipe using them."""
    folder.mkdir(parents=True, exist_ok=True)
    train = write_jsonl(folder / "train.jsonl", real_rows("train", 0, 60))
    validation = write_jsonl(folder / "validation.jsonl", real_rows("validation", 0, 20))
    test = write_jsonl(folder / "test.jsonl", real_rows("validation", 20, 60))
    text = RECIPE_TEMPLATE.format(name=name, seed=seed, train=train, validation=validation, max_steps=max_steps)
    recipe = folder / "recipe.yaml"
    recipe.write_text(text, encoding="utf-8")
    return SimpleNamespace(dir=folder, recipe=recipe, text=text, train=train, validation=validation, test=test)


def one_line_error(code: int, out: str, err: str) -> str:
    """Assert the CLI failed the way a user mistake should; return the message."""
    assert code == 2, f"exit code {code}\nstdout: {out}\nstderr: {err}"
    assert "Traceback" not in err and "Traceback" not in out, err
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{err}"
    assert lines[0].startswith("error: "), err
    return lines[0]


# --------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------
@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if not (path / "sentiment" / "movie_snippets" / "train.jsonl").is_file():
        pytest.fail(f"shared data missing under {path} (set NLPTK_DATA or put shared/ beside the repo)")
    return path


@pytest.fixture
def tiny_sentiment(tmp_path: Path, shared_data: Path) -> SimpleNamespace:
    return make_tiny_sentiment(tmp_path / "data")


def _subprocess_cli(
    args: Sequence[str], cwd: Path, env: Optional[Dict[str, str]] = None, input: Optional[str] = None, timeout: float = 180
) -> Tuple[int, str, str]:
    full_env = dict(os.environ)
    full_env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)})
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-m", "nlptoolkit.cli", *[str(a) for a in args]],
        cwd=str(cwd), env=full_env, input=input if input is not None else "", capture_output=True, text=True, timeout=timeout,
    )
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture(scope="session")
def run_cli():
    """run_cli(args, cwd, env=None, input=None) -> (exit_code, stdout, stderr), in a subprocess."""
    return _subprocess_cli


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """cli(args, cwd=tmp_path, stdin=None) -> (exit_code, stdout, stderr), in this process."""
    import nlptoolkit.registry
    import nlptoolkit.runs
    from nlptoolkit.cli import main

    def invoke(args: Sequence[str], cwd: Optional[Path] = None, stdin: Optional[str] = None) -> Tuple[int, str, str]:
        fresh = nlptoolkit.registry.Registry()
        monkeypatch.setattr(nlptoolkit.registry, "registry", fresh)
        monkeypatch.setattr(nlptoolkit.runs, "registry", fresh)
        monkeypatch.chdir(cwd or tmp_path)
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin or ""))
        out, err = io.StringIO(), io.StringIO()
        code = None
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code
        finally:
            # plugin files are imported once per process; forget them so the next
            # fresh registry sees their tasks registered again
            for name in [m for m in sys.modules if m.startswith("nlptk_plugin_")]:
                del sys.modules[name]
        return (0 if code is None else code), out.getvalue(), err.getvalue()

    return invoke


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> SimpleNamespace:
    """One tiny sentiment run trained through the real CLI (`nlptk run`), shared by the tests."""
    base = tmp_path_factory.mktemp("trained")
    tiny = make_tiny_sentiment(base / "data")
    run_dir = base / "run"
    code, out, err = _subprocess_cli(["run", tiny.recipe, "--output-dir", run_dir, "--quiet"], cwd=base)
    assert code == 0, f"training failed ({code}):\n{out}\n{err}"
    return SimpleNamespace(dir=run_dir, data=tiny, stdout=out, stderr=err)


def child_venv(folder: Path) -> SimpleNamespace:
    """A virtual environment that sees everything this one has installed, for `pip install` in tests.

    `python -m venv --without-pip` takes a fraction of a second; a .pth file adds
    this interpreter's site-packages (nlptoolkit, torch, pip, setuptools), and
    small `nlptk` and `pip` scripts run them with the new interpreter, so a
    package installed there is seen by `nlptk` and gone with the folder. pip runs
    offline: no build isolation (setuptools and wheel come from the dev extra),
    no dependencies, no index.
    """
    import site
    import sysconfig
    import venv

    venv.EnvBuilder(with_pip=False).create(folder)
    bindir = folder / ("Scripts" if os.name == "nt" else "bin")
    python = bindir / ("python.exe" if os.name == "nt" else "python")
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    parents = [p for p in [*site.getsitepackages(), sysconfig.get_paths()["purelib"]] if Path(p).is_dir()]
    Path(purelib, "_nlptk_parent_env.pth").write_text(
        "import site; " + "; ".join(f"site.addsitedir({p!r})" for p in dict.fromkeys(parents)) + "\n", encoding="utf-8")
    for name, call in (("nlptk", "from nlptoolkit.cli import main; main()"),
                       ("pip", "from pip._internal.cli.main import main; sys.exit(main())")):
        script = bindir / name
        script.write_text(f"#!{python}\nimport sys\n{call}\n", encoding="utf-8")
        script.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update({
        "PATH": f"{bindir}{os.pathsep}{env.get('PATH', '')}", "VIRTUAL_ENV": str(folder),
        "PIP_NO_BUILD_ISOLATION": "0", "PIP_NO_DEPS": "1", "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
    })
    return SimpleNamespace(dir=folder, bin=bindir, python=python, env=env)
