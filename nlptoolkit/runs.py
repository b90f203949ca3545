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

import copy
import shutil
import sys
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

import torch

from nlptoolkit import distributed

from nlptoolkit.checkpoint import atomic_write_text, load_checkpoint
from nlptoolkit.data.selection import filter_examples, length_filter
from nlptoolkit.data.sources import load_splits
from nlptoolkit.data.streaming import StreamedExamples, fit_sample
from nlptoolkit.errors import NlptkError
from nlptoolkit.precision import choose_precision
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
    recipe_path: Optional[Union[str, Mapping[str, Any]]],
    overrides: Sequence[str] = (),
    output_dir: Optional[str] = None,
    force: bool = False,
    quiet: bool = False,
    resume: Optional[str] = None,
    allow_changes: Sequence[str] = (),
) -> Dict[str, Any]:
    """What `nlptk run` does: load, prepare data, build, train, summarise.

    ``recipe_path`` is a recipe file, a bundled recipe's name, or a recipe as a mapping.

    ``allow_changes`` (``--override KEY``) names recipe keys that may differ from
    the saved recipe on ``--resume``. Without ``recipe_path``, ``resume`` reads the
    run folder's own ``recipe.yaml``.
    """
    proc = distributed.init_from_env()
    if recipe_path is None:
        if not resume:
            raise NlptkError("give a recipe to train, or --resume RUN_DIR to continue a run")
        recipe_path = str(resume_recipe_file(Path(resume)))
    if isinstance(recipe_path, Mapping):
        recipe = recipe_from_dict(copy.deepcopy(dict(recipe_path)), overrides)
    else:
        recipe = load_recipe(recipe_path, overrides)
    try:  # refuse an impossible bf16 before anything is written
        precision = choose_precision(recipe.train.precision, pick_device(recipe.device))
    except NlptkError as exc:
        raise NlptkError(f"{recipe.source or 'recipe'}: {exc}") from None
    if resume:
        run_dir = Path(resume)
        payload = load_resume_checkpoint(run_dir)
        check_same_recipe(payload["recipe"], recipe, run_dir, allow_changes)
    else:
        run_dir = Path(output_dir) if output_dir else Path("runs") / recipe.name
        if proc.is_main:
            prepare_run_dir(run_dir, force)
        distributed.barrier()
        payload = None
    seed_everything(recipe.seed)
    task = make_task(recipe, run_dir if proc.is_main else None)  # only rank 0 writes files
    if proc.world_size > 1 and task.device.type == "cuda":
        task.device = torch.device("cuda", proc.local_rank)
    log = (lambda text: print(text, file=sys.stderr, flush=True)) if proc.is_main else (lambda text: None)
    if recipe.data.streaming and not getattr(task, "streams", False):  # a recipe dict built without validation
        raise NlptkError(f"data.streaming: task '{recipe.task}' reads its data in memory and cannot stream it; set data.streaming: false")
    splits = load_splits(recipe.data, recipe.seed, task.shuffle_split, log=log)
    task.sources = describe_sources(recipe)
    if payload is not None:
        try:
            task.load_state_dict(payload["task_state"])
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise NlptkError(f"--resume {run_dir}: last.pt is damaged: its task state does not load ({type(exc).__name__}: {' '.join(str(exc).split())[:120]})") from None
    else:
        task.setup(setup_rows(splits["train"], recipe.data, log))
    train_examples = filter_lengths(task, task.encode(splits["train"], "train"), recipe.data, log)
    validation = task.encode(splits["validation"], "validation")
    model = task.build_model().to(task.device)
    if payload is None and proc.is_main:
        atomic_write_text(run_dir / "recipe.yaml", recipe.to_yaml())
    parallel = None
    if proc.world_size > 1:
        ids = [proc.local_rank] if task.device.type == "cuda" else None
        parallel = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    trainer = Trainer(task, model, run_dir, quiet=quiet, rank=proc.rank, world_size=proc.world_size, parallel_model=parallel, precision=precision)
    if payload is not None:
        try:
            trainer.restore(payload)
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:
            raise NlptkError(
                f"--resume {run_dir}: last.pt does not fit the model and optimizer this recipe builds "
                f"({type(exc).__name__}: {' '.join(str(exc).split())[:160]}); an --override may have changed their shape"
            ) from None
        if proc.is_main:  # --override may have changed it; the folder describes what is trained
            atomic_write_text(run_dir / "recipe.yaml", recipe.to_yaml())
    summary = trainer.fit(train_examples, validation)
    if proc.is_main:
        from nlptoolkit.plots import plot_curves

        plot_curves(run_dir)
    distributed.shutdown()
    return {"run_dir": str(run_dir), "rank": proc.rank, **summary}


def setup_rows(train: Any, data: Any, log: Callable[[str], None]) -> Any:
    """What ``Task.setup`` fits on: the train split, or the first ``data.vocab_sample`` rows of a stream."""
    if not data.streaming:
        return train
    sample = fit_sample(train, data.vocab_sample)
    complete = " (all of it)" if len(sample) < data.vocab_sample else ""
    log(f"data: tokenizer, vocabulary and labels fitted on the first {len(sample):,} rows of the streamed train split{complete} (data.vocab_sample: {data.vocab_sample})")
    return sample


def filter_lengths(task: Any, examples: Any, data: Any, log: Callable[[str], None]) -> Any:
    """The training examples within ``data.min_length`` .. ``data.max_length`` tokens (the task's ``length``)."""
    keep = length_filter(data.min_length, data.max_length, task.length)
    if keep is None:
        return examples
    bounds = f"data.min_length: {data.min_length}, data.max_length: {data.max_length}"
    if isinstance(examples, StreamedExamples):
        log(f"data: training examples of other lengths are skipped as they are read ({bounds})")
        return examples.filtered(keep)
    kept = filter_examples(examples, keep, task.name)
    log(f"data: kept {len(kept):,} of {len(examples):,} training examples ({bounds}; lengths in the task's tokens)")
    if not kept:
        raise NlptkError(f"data.min_length / data.max_length: no training example is within them ({bounds}); widen them")
    return kept


def describe_sources(recipe: Recipe) -> Dict[str, str]:
    """How to name each split in an error message."""
    data = recipe.data
    if data.files and not data.split:
        shown = {split: path if isinstance(path, str) else " + ".join(path) for split, path in data.files.items()}
        names = {split: f"{path} (data.files.{split})" for split, path in shown.items()}
        names.setdefault("validation", f"the validation split carved from {shown['train']}")
        return names
    if data.split:
        return {split: f"split '{split}' ({expression}, data.split.{split})" for split, expression in data.split.items()}
    origin = f"hub dataset '{data.hub}'" if data.hub else f"saved dataset {data.disk}"
    return {split: f"split '{split}' of {origin}" for split in ("train", "validation", "test")}


def resume_recipe_file(run_dir: Path) -> Path:
    """The recipe a run folder was trained with: what `nlptk run --resume RUN_DIR` continues."""
    if not run_dir.is_dir():
        raise NlptkError(f"--resume {run_dir}: no such run folder; give the folder of an interrupted `nlptk run`")
    path = run_dir / "recipe.yaml"
    if not path.is_file():
        raise NlptkError(f"--resume {run_dir}: there is no recipe.yaml in it (not a run folder written by `nlptk run`); give the recipe too: nlptk run RECIPE --resume {run_dir}")
    return path


def load_resume_checkpoint(run_dir: Path) -> Dict[str, Any]:
    """last.pt of a run folder that can be continued, or a one-line error saying why not."""
    if not run_dir.is_dir():
        raise NlptkError(f"--resume {run_dir}: no such run folder; give the folder of an interrupted `nlptk run`")
    if not (run_dir / "last.pt").is_file():
        raise NlptkError(
            f"--resume {run_dir}: there is no last.pt in it (the run stopped before its first checkpoint, "
            "or this is not a run folder); start it again with --force"
        )
    remove_stale_temp_files(run_dir)
    payload = load_checkpoint(run_dir / "last.pt")
    missing = [k for k in ("recipe", "model", "optimizer", "train_state", "rng", "task_state") if k not in payload]
    if missing:
        raise NlptkError(f"--resume {run_dir}: last.pt lacks {', '.join(missing)}; it cannot be resumed exactly")
    state = payload["train_state"]
    if not isinstance(state, dict) or not isinstance(payload["recipe"], dict):
        raise NlptkError(f"--resume {run_dir}: last.pt is damaged (train_state or recipe is not a mapping); start the run again with --force")
    if state.get("finished"):
        raise NlptkError(
            f"--resume {run_dir}: this run already finished (step {state.get('step')}); there is nothing to resume; "
            "use `nlptk evaluate` on it, or start a new run"
        )
    return payload


def check_same_recipe(saved: Dict[str, Any], recipe: Recipe, run_dir: Path, allowed: Sequence[str] = ()) -> None:
    """Resume only the recipe the run was started with, except keys named by ``--override``."""
    old, new = flatten(saved), flatten(recipe.to_dict())
    diffs = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    allowed = [a.strip() for a in allowed]
    refused = [k for k in diffs if not any(k == a or k.startswith(a + ".") for a in allowed)]
    if refused:
        shown = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in refused[:5])
        more = f"; and {len(refused) - 5} more" if len(refused) > 5 else ""
        flags = " ".join(f"--override {k}" for k in refused)
        raise NlptkError(
            f"--resume {run_dir}: the recipe differs from the one the run was started with ({shown}{more}); "
            f"resume with the same recipe, or accept the change with {flags}"
        )


def remove_stale_temp_files(run_dir: Path) -> None:
    """Remove temporary files a killed save left behind (``.last.pt.XXXX.tmp``)."""
    for name in ("last.pt", "best.pt", "summary.json", "recipe.yaml", "metrics.jsonl"):
        for tmp in run_dir.glob(f".{name}.*.tmp"):
            try:
                tmp.unlink()
            except OSError:
                pass


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
    recipe = load_recipe(str(recipe_file))
    path = folder / f"{checkpoint}.pt"
    payload = load_checkpoint(path)
    task = make_task(recipe, folder)
    try:
        task.load_state_dict(payload["task_state"])
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise NlptkError(f"{path}: damaged checkpoint: its task state does not load ({type(exc).__name__}: {' '.join(str(exc).split())[:120]}); train the run again") from None
    model = task.build_model()
    try:
        model.load_state_dict(payload["model"])
    except (KeyError, TypeError, AttributeError) as exc:
        raise NlptkError(f"{path}: damaged checkpoint: no usable model weights ({type(exc).__name__}: {' '.join(str(exc).split())[:120]}); train the run again") from None
    except RuntimeError as exc:
        raise NlptkError(f"{folder / (checkpoint + '.pt')}: weights do not fit the model its recipe describes ({' '.join(str(exc).split())[:200]})") from None
    model.to(task.device).eval()
    return recipe, task, model
