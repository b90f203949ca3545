"""Run folders: train a recipe into one, and load a finished one back.

A run folder holds everything needed to use a model later::

    recipe.yaml      the fully resolved recipe
    metrics.jsonl    one line per evaluation
    summary.json     best and final metrics, training time
    best.pt last.pt  checkpoints (tensors and plain data only)
    curves.png       training curves
    tokenizer.model  the sentencepiece model, when one is used
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import yaml

from nlptoolkit.checkpoint import atomic_write_text, load_checkpoint
from nlptoolkit.data.sources import load_splits
from nlptoolkit.errors import NlptkError
from nlptoolkit.recipe import Recipe, load_recipe, recipe_from_dict
from nlptoolkit.registry import registry
from nlptoolkit.trainer import Trainer, pick_device, seed_everything


def prepare_run_dir(path: Path, force: bool) -> Path:
    """Create the run folder; never overwrite one silently."""
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        if not force:
            raise NlptkError(
                f"run folder {path} already exists; pass --force to replace it, --output-dir DIR to write elsewhere, "
                f"or --resume {path} to continue it"
            )
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    path.mkdir(parents=True, exist_ok=True)
    return path


def make_task(recipe: Recipe, run_dir: Optional[Path]) -> Any:
    task = registry.get(recipe.task)(recipe, run_dir)
    task.device = pick_device(recipe.device)
    return task


def train(
    recipe_path: str,
    overrides: Sequence[str] = (),
    output_dir: Optional[str] = None,
    force: bool = False,
    quiet: bool = False,
    resume: Optional[str] = None,
) -> Dict[str, Any]:
    """What `nlptk run` does: load, prepare data, build, train, summarise."""
    recipe = load_recipe(recipe_path, overrides)
    if resume:
        run_dir = Path(resume)
        payload = load_checkpoint(run_dir / "last.pt")
        check_same_recipe(payload["recipe"], recipe, run_dir)
    else:
        run_dir = prepare_run_dir(Path(output_dir) if output_dir else Path("runs") / recipe.name, force)
        payload = None
    seed_everything(recipe.seed)
    task = make_task(recipe, run_dir)
    splits = load_splits(recipe.data, recipe.seed, task.shuffle_split)
    task.sources = describe_sources(recipe)
    if payload is not None:
        task.load_state_dict(payload["task_state"])
    else:
        task.setup(splits["train"])
    train_examples = task.encode(splits["train"], "train")
    validation = task.encode(splits["validation"], "validation")
    model = task.build_model().to(task.device)
    if payload is None:
        atomic_write_text(run_dir / "recipe.yaml", recipe.to_yaml())
    trainer = Trainer(task, model, run_dir, quiet=quiet)
    if payload is not None:
        trainer.restore(payload)
    summary = trainer.fit(train_examples, validation)
    from nlptoolkit.plots import plot_curves

    plot_curves(run_dir)
    return {"run_dir": str(run_dir), **summary}


def describe_sources(recipe: Recipe) -> Dict[str, str]:
    """How to name each split in an error message."""
    data = recipe.data
    if data.files:
        names = {split: f"{path} (data.files.{split})" for split, path in data.files.items()}
        names.setdefault("validation", f"the validation split carved from {data.files['train']}")
        names["train"] = f"{data.files['train']} (data.files.train)"
        return names
    origin = f"hub dataset '{data.hub}'" if data.hub else f"saved dataset {data.disk}"
    return {split: f"split '{split}' of {origin}" for split in ("train", "validation", "test")}


def check_same_recipe(saved: Dict[str, Any], recipe: Recipe, run_dir: Path) -> None:
    """Resume only the recipe the run was started with."""
    current = recipe.to_dict()
    diffs = [k for k in sorted(set(flatten(saved)) | set(flatten(current))) if flatten(saved).get(k) != flatten(current).get(k)]
    if diffs:
        shown = "; ".join(f"{k}: {flatten(saved).get(k)!r} -> {flatten(current).get(k)!r}" for k in diffs[:5])
        raise NlptkError(f"--resume {run_dir}: the recipe differs from the one the run was started with ({shown}); resume with the same recipe")


def flatten(d: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def load_run(run_dir: str, checkpoint: str = "best") -> Tuple[Recipe, Any, Any]:
    """Recipe, task and model of a finished run, ready for evaluate/predict/generate."""
    folder = Path(run_dir)
    if not folder.is_dir():
        raise NlptkError(f"run folder {run_dir} does not exist; give a folder written by `nlptk run`")
    recipe_file = folder / "recipe.yaml"
    if not recipe_file.is_file():
        raise NlptkError(f"{recipe_file} is missing; {run_dir} is not a run folder written by `nlptk run`")
    saved = yaml.safe_load(recipe_file.read_text(encoding="utf-8"))
    recipe = recipe_from_dict(saved, file=str(recipe_file))
    payload = load_checkpoint(folder / f"{checkpoint}.pt")
    task = make_task(recipe, folder)
    task.load_state_dict(payload["task_state"])
    model = task.build_model()
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as exc:
        raise NlptkError(f"{folder / (checkpoint + '.pt')}: weights do not fit the model its recipe describes ({' '.join(str(exc).split())[:200]})") from None
    model.to(task.device).eval()
    return recipe, task, model
