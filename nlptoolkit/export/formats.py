"""The two file formats: trace and save a module, and load a saved file back and run it.

TorchScript comes with torch. ONNX needs the ``[export]`` extra (onnx and
onnxruntime). Both are written from a trace: ``torch.onnx.export(...,
dynamo=False)`` is the TorchScript-based exporter, so one tracing path makes
both files. (torch's newer dynamo exporter needs the onnxscript package as
well, and gives nothing here that the checked trace does not.)
"""
from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Iterator, List, Tuple

import torch
from torch import Tensor

from nlptoolkit.errors import NlptkError
from nlptoolkit.export.graph import ExportGraph

FORMATS = ("torchscript", "onnx")
SUFFIX = {"torchscript": ".pt", "onnx": ".onnx"}
ONNX_OPSET = 17  # the LSTM, GRU and RNN operators as onnxruntime runs them since 1.12


def require_format(fmt: str) -> None:
    """Fail early, in one line, when a format's libraries are not installed."""
    if fmt not in FORMATS:
        raise NlptkError(f"--format {fmt}: unknown; choose one of {', '.join(FORMATS)}")
    if fmt == "onnx":
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
        except ImportError as exc:
            raise NlptkError(
                f"--format onnx needs the onnx and onnxruntime packages ({exc.name or 'one of them'} is not installed): "
                "pip install 'nlptoolkit[export]'"
            ) from None


@contextlib.contextmanager
def quiet_tracing() -> Iterator[None]:
    """Hide the tracer's warnings: they are about shapes and branches the exporter checks for itself
    (the written file is run on a batch of another size), and torch.jit's deprecation notices."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message=".*will be removed.*")
        warnings.filterwarnings("ignore", message=".*deprecated.*")
        warnings.filterwarnings("ignore", message=".*batch_size other than 1.*")  # checked on another batch size
        yield


def save(fmt: str, graph: ExportGraph, inputs: Tuple[Tensor, ...], path: Path) -> None:
    """Trace ``graph.module`` on ``inputs`` and write it to ``path``."""
    names = set(graph.inputs) | set(graph.outputs)
    dynamic = {name: axes for name, axes in graph.dynamic.items() if name in names}
    with quiet_tracing(), torch.no_grad():
        if fmt == "torchscript":
            traced = torch.jit.trace(graph.module, inputs, check_trace=False)
            traced.save(str(path))
        else:
            torch.onnx.export(
                graph.module, inputs, str(path), input_names=list(graph.inputs), output_names=list(graph.outputs),
                dynamic_axes=dynamic, opset_version=ONNX_OPSET, dynamo=False,
            )


def run_saved(fmt: str, path: Path, graph: ExportGraph, inputs: Tuple[Tensor, ...]) -> List[Tensor]:
    """Load a written file the way a consumer would and run it: its outputs, in order."""
    if fmt == "torchscript":
        with quiet_tracing(), torch.no_grad():
            out = torch.jit.load(str(path))(*inputs)
        return list(out) if isinstance(out, (tuple, list)) else [out]
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {name: x.cpu().numpy() for name, x in zip(graph.inputs, inputs)}
    return [torch.from_numpy(y) for y in session.run(list(graph.outputs), feed)]
