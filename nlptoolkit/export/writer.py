"""Write an export folder: the traced files, vocabularies, tokenizers and manifest, all at once.

The folder is filled under a temporary name beside ``--out`` and renamed into
place when everything is written and checked, so a reader never sees half an
export, and an existing non-empty folder is replaced only with ``force``.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence, Tuple

import torch
from torch import Tensor, nn

from nlptoolkit.checkpoint import atomic_write_bytes, write_json
from nlptoolkit.errors import NlptkError
from nlptoolkit.export.formats import FORMATS, SUFFIX, require_format, run_saved, save
from nlptoolkit.export.graph import Exportable, ExportGraph

TRACE_SIZE = (3, 7)  # (batch, time) of the batch each module is traced on ...
CHECK_SIZE = (5, 11)  # ... and of the batch the written file is checked on: other sizes, other lengths
TOLERANCE = 1e-4  # a written file further than this from the run's model is a bug, not rounding


def export_run(task: Any, model: nn.Module, run_dir: Path, fmt: str, out: Path, force: bool = False, checkpoint: str = "best") -> Dict[str, Any]:
    """Export a loaded run (its task and model) to the folder ``out``; returns the manifest."""
    require_format(fmt)
    exportable = task.exportable(copy.deepcopy(model).cpu().eval())
    if exportable is None:
        raise NlptkError(f"task '{task.name}' cannot be exported (yet); the tasks that can: {', '.join(exportable_tasks()) or 'none'}")
    out, run_dir = Path(out), Path(run_dir)
    check_target(out, run_dir, force)
    from nlptoolkit import __version__

    manifest: Dict[str, Any] = {
        "format": fmt, "task": task.name, "nlptoolkit_version": __version__, "torch_version": torch.__version__,
        "run": str(run_dir.resolve()), "checkpoint": checkpoint, "graphs": {}, "vocabularies": {}, "tokenizers": {},
        **exportable.info,
    }

    def fill(folder: Path) -> None:
        with torch.random.fork_rng(devices=[]):  # the examples are random; the caller's RNG is left alone
            torch.manual_seed(0)
            for graph in exportable.graphs:
                manifest["graphs"][graph.name] = write_graph(fmt, graph, folder)
        for name, itos in exportable.vocabularies.items():
            write_json(folder / f"{name}.json", list(itos))
            manifest["vocabularies"][name] = f"{name}.json"
        for name, tokenizer in exportable.tokenizers.items():
            manifest["tokenizers"][name] = describe_tokenizer(name, tokenizer, folder)
        write_json(folder / "manifest.json", manifest)

    write_folder(out, force, fill)
    return manifest


def exportable_tasks() -> List[str]:
    """The registered tasks that implement ``Task.exportable``."""
    from nlptoolkit.registry import registry
    from nlptoolkit.task import Task

    names = []
    for entry in registry.entries():
        try:
            cls = registry.get(entry.name)
        except NlptkError:
            continue
        if cls.exportable is not Task.exportable:
            names.append(entry.name)
    return sorted(names)


def check_target(out: Path, run_dir: Path, force: bool) -> None:
    """Refuse to replace the run itself, or anything without ``force``."""
    target, run = out.resolve(), run_dir.resolve()
    if target == run or target in run.parents:
        raise NlptkError(f"--out {out}: that is the run folder {run_dir} (or holds it); export to a new folder such as {run_dir}/export")
    if out.exists() and not out.is_dir():
        raise NlptkError(f"--out {out}: a file of that name exists; give a folder name")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise NlptkError(f"--out {out}: the folder exists and is not empty; pass --force to replace it, or give another folder")


def write_graph(fmt: str, graph: ExportGraph, folder: Path) -> Dict[str, Any]:
    """Trace, write, load back and check one module; its manifest entry."""
    module = graph.module.eval()
    inputs = graph.example(*TRACE_SIZE)
    with torch.no_grad():
        traced_outputs = as_list(module(*inputs))  # an eager call first (it also sets the LSTM padding gates)
    path = folder / f"{graph.name}{SUFFIX[fmt]}"
    save(fmt, graph, inputs, path)
    check_inputs = graph.example(*CHECK_SIZE)
    with torch.no_grad():
        expected = as_list(module(*check_inputs))
    got = run_saved(fmt, path, graph, check_inputs)
    difference = max_difference(got, expected)
    if difference is None or difference > TOLERANCE:
        shown = "outputs of other shapes" if difference is None else f"outputs {difference:.2e} apart"
        raise NlptkError(f"export of '{graph.name}' failed its check: the written {fmt} file and the run's model give {shown} on a new batch; please report this as a bug")
    return {
        "file": path.name,
        "doc": graph.doc,
        "inputs": [describe_tensor(n, x, graph.dynamic) for n, x in zip(graph.inputs, inputs)],
        "outputs": [describe_tensor(n, y, graph.dynamic) for n, y in zip(graph.outputs, traced_outputs)],
        "check": {"batch": CHECK_SIZE[0], "max_time": CHECK_SIZE[1], "max_abs_difference": difference},
    }


def as_list(outputs: Any) -> List[Tensor]:
    return list(outputs) if isinstance(outputs, (tuple, list)) else [outputs]


def max_difference(got: Sequence[Tensor], expected: Sequence[Tensor]) -> Any:
    """The largest absolute difference over all outputs (None if their number or shapes differ)."""
    if len(got) != len(expected) or any(g.shape != e.shape for g, e in zip(got, expected)):
        return None
    worst = 0.0
    for g, e in zip(got, expected):
        if e.is_floating_point():
            same_inf = torch.isinf(e) & (g == e)  # a masked score stays -inf in both
            worst = max(worst, float((g.double() - e.double()).masked_fill(same_inf, 0).abs().max()) if e.numel() else 0.0)
        elif not torch.equal(g.to(e.dtype), e):
            return float("inf")
    return worst


def describe_tensor(name: str, x: Tensor, dynamic: Dict[str, Dict[int, str]]) -> Dict[str, Any]:
    """``{"name", "dtype", "shape"}``; a size that varies is given by its name ("batch", "time")."""
    sizes = dynamic.get(name, {})
    return {"name": name, "dtype": str(x.dtype).replace("torch.", ""), "shape": [sizes.get(i, n) for i, n in enumerate(x.shape)]}


def describe_tokenizer(name: str, tokenizer: Any, folder: Path) -> Dict[str, Any]:
    """How to turn text into the tokens the vocabulary maps, in words a consumer can re-implement."""
    kind = tokenizer.kind
    described: Dict[str, Any] = {"kind": kind, "lowercase": bool(tokenizer.lowercase)}
    if kind == "char":
        described["rule"] = "every character is a token (after lower-casing when lowercase is true)"
    elif kind == "word":
        split = bool(getattr(tokenizer, "split_punctuation", False))
        described["split_punctuation"] = split
        if split:
            described["regex"] = tokenizer._words_and_punctuation.pattern
            described["rule"] = "the tokens are the matches of regex (Python re) in the text"
        else:
            described["rule"] = "the tokens are the text split on whitespace"
    elif kind == "sentencepiece":
        file = f"{name}.spm.model"
        atomic_write_bytes(folder / file, tokenizer.model)
        described["model"] = file
        described["rule"] = "sentencepiece.SentencePieceProcessor(model_file=model).encode(text, out_type=str)"
    return described


def write_folder(out: Path, force: bool, fill: Callable[[Path], None]) -> None:
    """Fill a temporary folder beside ``out``, then put it in place by renames."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's folder is private; an export is an ordinary folder
    old = None
    try:
        fill(tmp)
        for file in tmp.iterdir():  # durable before the rename makes it visible
            os.chmod(file, 0o666 & ~umask)
            with open(file, "rb") as f:
                os.fsync(f.fileno())
        if out.is_dir() and any(out.iterdir()):  # (check_target refused this without force)
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.replace(out, old / out.name)
        elif out.is_dir():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not out.exists():  # put the old export back
            os.replace(old / out.name, out)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
