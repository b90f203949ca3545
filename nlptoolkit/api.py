"""The Python API: train, load and use a run from a notebook or a script.

    import nlptoolkit
    run = nlptoolkit.train("sentiment", overrides={"train.epochs": 1})
    run = nlptoolkit.load("runs/sentiment")
    run.predict(["a gorgeous, witty, seductive movie."])   # [{"input": ..., "label": ..., "probabilities": {...}}]
    run.evaluate("test.jsonl")                              # {"accuracy": ..., "macro_f1": ..., "loss": ...}
    run.export("exported", format="onnx")                   # model, vocabularies, manifest.json

The `nlptk` commands are a thin layer over these functions: what the CLI
prints is what they return.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Union

from nlptoolkit.errors import NlptkError

PathLike = Union[str, "os.PathLike[str]"]
Overrides = Union[Mapping[str, Any], Sequence[str], None]


def override_strings(overrides: Overrides) -> List[str]:
    """``{"train.epochs": 1}`` or ``["train.epochs=1"]`` as the ``--set`` strings the recipe loader reads."""
    if overrides is None:
        return []
    if isinstance(overrides, Mapping):
        return [f"{key}={json.dumps(value)}" for key, value in overrides.items()]  # JSON is YAML: types survive
    if isinstance(overrides, str):
        raise NlptkError(f"overrides: give a mapping such as {{'train.epochs': 1}} or a list of 'key=value' strings, not the string {overrides!r}")
    return [str(o) for o in overrides]


class Run:
    """A finished run folder with its recipe, task and model loaded (from ``best.pt`` by default)."""

    def __init__(self, path: PathLike, checkpoint: str = "best") -> None:
        from nlptoolkit.runs import load_run

        self.path = Path(path)
        self.checkpoint = checkpoint
        self.recipe, self.task, self.model = load_run(str(path), checkpoint)
        self._weights_decided: Dict[str, str] = {}  # asked storage -> the one used (generation_weights)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, task={self.recipe.task!r})"

    @property
    def summary(self) -> Dict[str, Any]:
        """``summary.json``: best and final validation metrics, steps, training seconds."""
        file = self.path / "summary.json"
        return json.loads(file.read_text(encoding="utf-8")) if file.is_file() else {}

    # -- predict ----------------------------------------------------------------
    def predict(self, texts: Union[str, Sequence[str]], **options: Any) -> Any:
        """One JSON-able dict per input, in input order (a single string gives a single dict).

        A task that reads feature vectors (captioning) takes vectors instead:
        one list of numbers, or a list of such lists.

        What a dict holds depends on the task: a classifier gives ``label``,
        ``probability`` and ``probabilities``; see its ``predict``. ``options``
        are decoding settings of a sequence task (``beam_size``, ``nbest``),
        for this call only (``Task.set_decoding``).
        """
        if self.task.input_kind == "features":  # vectors: one list of numbers, or a list of them
            single = len(texts) > 0 and isinstance(texts[0], (int, float))
            inputs = [texts] if single else list(texts)
            if not inputs:
                return []
        else:
            single = isinstance(texts, str)
            inputs = [texts] if single else list(texts)
            if not inputs:
                return []
            bad = [i for i, t in enumerate(inputs) if not isinstance(t, str)]
            if bad:
                raise NlptkError(f"predict: input {bad[0]} is a {type(inputs[bad[0]]).__name__}; give strings")
        self.task.set_decoding(**options)
        results = self.task.predict(self.model, inputs)
        return results[0] if single else results

    def format_prediction(self, result: Dict[str, Any]) -> str:
        """The line `nlptk predict` prints for one result."""
        return self.task.format_prediction(result)

    # -- evaluate ---------------------------------------------------------------
    def evaluate(self, files: Union[PathLike, Mapping[str, PathLike], None] = None, split: Optional[str] = None) -> Dict[str, Any]:
        """Metrics on held-out data.

        ``run.evaluate("test.jsonl")`` gives ``{"accuracy": ..., ...}`` for one
        file (same format and fields as the training data); a mapping
        ``{"test": "test.jsonl", ...}`` gives ``{"test": {...}, ...}``; with no
        file, the recipe's own ``split`` (default ``validation``).
        """
        if files is not None and split is not None:
            raise NlptkError("evaluate: give files or split, not both")
        if isinstance(files, Mapping):
            return self.evaluate_many(files=files)
        if files is not None:
            return self.evaluate_many(files={"test": files})["test"]
        name = split or "validation"
        return self.evaluate_many(splits=[name])[name]

    def evaluate_many(self, files: Optional[Mapping[str, PathLike]] = None, splits: Sequence[str] = (), **options: Any) -> Dict[str, Dict[str, Any]]:
        """``{name: metrics}`` for each ``files`` entry and each of the recipe's ``splits``.

        ``options``: decoding settings of a sequence task (``beam_size``), for this call only.
        """
        from nlptoolkit.data.sources import load_files, load_splits
        from nlptoolkit.runs import describe_sources

        task, results = self.task, {}
        task.set_decoding(**options)
        wanted = {name: str(path) for name, path in (files or {}).items()}
        if wanted:
            loaded = load_files(wanted, self.recipe.data.format, key="--files", columns=self.recipe.data.columns)
            task.sources = {name: f"{path} (--files {name})" for name, path in wanted.items()}
            for name in wanted:
                results[name] = task.evaluate(self.model, task.encode(loaded[name], name))
        if splits:
            data = load_splits(self.recipe.data, self.recipe.seed, task.shuffle_split)
            task.sources = describe_sources(self.recipe)
            for name in splits:
                if name not in data:
                    raise NlptkError(f"--split {name}: the recipe's data has splits {', '.join(data)}; pick one of those")
                results[name] = task.evaluate(self.model, task.encode(data[name], name))
        return results

    # -- export -----------------------------------------------------------------
    def export(self, out: PathLike, format: str = "torchscript", force: bool = False) -> Dict[str, Any]:
        """Write the model (TorchScript or ONNX), its vocabularies and a manifest to the folder ``out``.

        The folder is usable without nlptoolkit (``torch.jit.load``,
        ``onnxruntime``); each written file is checked against this run's
        model on a fresh batch before the folder appears. An existing
        non-empty ``out`` is replaced only with ``force``. Returns the
        manifest (``out/manifest.json``). See ``nlptoolkit/export``.
        """
        from nlptoolkit.export import export_run

        return export_run(self.task, self.model, self.path, format, Path(out), force, self.checkpoint)

    # -- generate ---------------------------------------------------------------
    def generate_stream(self, prompt: str = "", max_tokens: int = 200, temperature: float = 1.0,
                        top_k: Optional[int] = None, seed: Optional[int] = None, weights: Optional[str] = None) -> Iterator[str]:
        """Text pieces from a language model run as they are made (``temperature`` 0: greedy).

        ``weights``: fp32, fp16 or int8 storage of the steps' weights (default:
        the recipe's ``task.generation_weights``); see :meth:`generation_weights`.
        """
        import torch

        from nlptoolkit.task import Task

        if type(self.task).generate is Task.generate:
            raise NlptkError(f"{self.path} is a '{self.recipe.task}' run, which cannot generate text; give a language model run folder")
        if temperature < 0:
            raise NlptkError(f"--temperature {temperature}: must be 0 (greedy) or positive")
        storage = self.generation_weights(weights)
        if seed is not None:
            torch.manual_seed(seed)
        if storage == "fp32":  # a task's generate need not know about weight storage
            return self.task.generate(self.model, prompt, max_tokens, temperature, top_k)
        return self.task.generate(self.model, prompt, max_tokens, temperature, top_k, weights=storage)

    def generate(self, prompt: str = "", max_tokens: int = 200, temperature: float = 1.0,
                 top_k: Optional[int] = None, seed: Optional[int] = None, weights: Optional[str] = None) -> str:
        """The generated text after ``prompt``, as one string."""
        return "".join(self.generate_stream(prompt, max_tokens, temperature, top_k, seed, weights))

    def generation_weights(self, asked: Optional[str] = None) -> str:
        """The weight storage generation uses: ``asked`` (default: the recipe's), if it is safe here, else "fp32".

        Safe means measured: the first time a storage is asked for, the
        validation loss is computed as generation computes it (one token at a
        time through a ``Stepper``) with fp32 weights and with that storage,
        and the change is kept in ``best.generation_weights.json`` beside the
        checkpoint. A change above the recipe's ``task.generation_tolerance``,
        or a machine without the kernel, falls back to fp32 with one line on
        stderr.
        """
        options = getattr(self.task, "options", None)
        storage = asked or getattr(options, "generation_weights", "fp32")
        if storage not in self._weights_decided:  # decided once per loaded run (a server asks on every request)
            self._weights_decided[storage] = self._decide_weights(storage, options)
        return self._weights_decided[storage]

    def _decide_weights(self, storage: str, options: Any) -> str:
        from nlptoolkit.matvec import STORAGE

        if storage not in STORAGE:
            raise NlptkError(f"--weights {storage}: one of {', '.join(STORAGE)}")
        if storage == "fp32":
            return storage
        if not hasattr(self.task, "stepped"):
            raise NlptkError(f"--weights {storage}: task '{self.recipe.task}' generates with fp32 weights only")
        try:
            check = self._weights_check(storage)
        except RuntimeError as exc:  # no FBGEMM kernel on this build or device
            print(f"generation weights: {storage} unavailable here ({' '.join(str(exc).split())[:120]}); using fp32", file=sys.stderr)
            return "fp32"
        tolerance = getattr(options, "generation_tolerance", 0.005)
        if check["loss_change"] > tolerance:
            print(f"generation weights: {storage} moved the validation loss by {check['loss_change']:+.4f} "
                  f"(> {tolerance} allowed, {self.path / WEIGHTS_CHECK_FILE.format(self.checkpoint)}); using fp32", file=sys.stderr)
            return "fp32"
        return storage

    def _weights_check(self, storage: str) -> Dict[str, Any]:
        """This checkpoint's measured validation loss with ``storage`` against fp32, measured once and kept."""
        from nlptoolkit.checkpoint import write_json
        from nlptoolkit.data.sources import load_splits

        file, checkpoint = self.path / WEIGHTS_CHECK_FILE.format(self.checkpoint), self.path / f"{self.checkpoint}.pt"
        stamp = f"{self.checkpoint}.pt {checkpoint.stat().st_size} {checkpoint.stat().st_mtime_ns}"  # a retrained run measures again
        record = json.loads(file.read_text(encoding="utf-8")) if file.is_file() else {}
        if record.get("checkpoint") != stamp:
            record = {"checkpoint": stamp}
        if storage not in record:
            print(f"generation weights: measuring the validation loss with {storage} weights (once for this checkpoint)", file=sys.stderr)
            data = load_splits(self.recipe.data, self.recipe.seed, self.task.shuffle_split)
            if "validation" not in data:
                raise NlptkError(f"--weights {storage}: needs the recipe's validation split to measure the loss it costs; the data has {', '.join(data)}")
            examples = self.task.encode(data["validation"], "validation")
            if "fp32" not in record:
                record["fp32"] = {"loss": self.task.evaluate(self.task.stepped(self.model, "fp32"), examples)["loss"]}
            loss = self.task.evaluate(self.task.stepped(self.model, storage), examples)["loss"]
            record[storage] = {"loss": loss, "loss_change": loss - record["fp32"]["loss"]}
            write_json(file, record)
        return record[storage]


WEIGHTS_CHECK_FILE = "{}.generation_weights.json"  # per checkpoint (best, last)


def train(
    recipe: Union[PathLike, Mapping[str, Any], None],
    overrides: Overrides = None,
    output_dir: Optional[PathLike] = None,
    force: bool = False,
    quiet: bool = False,
    resume: Optional[PathLike] = None,
    allow_changes: Sequence[str] = (),
) -> Run:
    """Train a recipe and return the finished :class:`Run`.

    ``recipe`` is a .yaml path, a bundled recipe's name (``"sentiment"``) or
    the recipe itself as a mapping; ``overrides`` are ``--set`` values,
    ``{"train.epochs": 1}``; the run folder is ``output_dir`` (default
    ``runs/<name>``), never overwritten unless ``force``. ``resume`` continues an
    interrupted run folder (``recipe`` may then be None: the folder's own recipe).
    """
    from nlptoolkit.runs import train as train_run

    summary = train_run(
        recipe if recipe is None or isinstance(recipe, Mapping) else str(recipe), override_strings(overrides),
        None if output_dir is None else str(output_dir), force, quiet,
        None if resume is None else str(resume), allow_changes,
    )
    return Run(summary["run_dir"])


def load(run_dir: PathLike, checkpoint: str = "best") -> Run:
    """A finished run folder (written by `nlptk run` or :func:`train`), ready to predict and evaluate."""
    return Run(run_dir, checkpoint)
