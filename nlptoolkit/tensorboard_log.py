"""TensorBoard logging (``train.tensorboard: true``): the scalars of metrics.jsonl, in the run folder.

TensorBoard is an optional extra (``pip install 'nlptoolkit[tensorboard]'``);
``nlptk run`` checks for it before training starts, not after the first evaluation.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

from nlptoolkit.errors import NlptkError

FOLDER = "tensorboard"


def open_writer(run_dir: Path) -> Any:
    """A SummaryWriter on ``run_dir/tensorboard``, or a one-line error saying how to install TensorBoard."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise NlptkError(
            "train.tensorboard: true, but the tensorboard package is not installed; "
            "pip install 'nlptoolkit[tensorboard]' (or pip install tensorboard), or set train.tensorboard: false"
        ) from None
    return SummaryWriter(log_dir=str(Path(run_dir) / FOLDER))


def log_record(writer: Any, record: Dict[str, Any]) -> None:
    """One metrics.jsonl record as scalars at its step: train/... and validation/..."""
    step = record["step"]
    for key, value in record.items():
        if key == "validation":
            for name, metric in value.items():
                writer.add_scalar(f"validation/{name}", metric, step)
        elif key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
            writer.add_scalar(f"train/{key.removeprefix('train_')}", value, step)
    writer.flush()
