"""Files that must never be half-written, and checkpoints that are safe to open.

Every file the trainer writes goes to a temporary name in the same folder, is
fsynced, and then renamed over the old one: a crash at any moment leaves
either the old file or the new one, never a torn mix. Checkpoints hold only
tensors and plain Python data and are read with ``torch.load(weights_only=True)``,
which refuses pickled objects that could run code.
"""
from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Dict

import torch

from nlptoolkit.errors import NlptkError

FORMAT = "nlptoolkit-checkpoint-1"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, whole."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def save_checkpoint(path: Path, payload: Dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **payload}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: Path) -> Dict[str, Any]:
    """Load a checkpoint onto the CPU, refusing anything but tensors and plain data."""
    path = Path(path)
    if not path.is_file():
        raise NlptkError(f"checkpoint {path} does not exist; is this a finished run folder?")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        if "weights_only" in str(exc) or "Unsupported global" in str(exc) or "pickle" in type(exc).__name__.lower():
            raise NlptkError(
                f"{path}: refused to load: it holds Python objects, not only tensors and plain data "
                "(it may have been tampered with); only load checkpoints written by nlptoolkit from a source you trust"
            ) from None
        raise NlptkError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {' '.join(str(exc).split())[:200]}); the file may be truncated or corrupt") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise NlptkError(f"{path}: not an nlptoolkit checkpoint (format {payload.get('format') if isinstance(payload, dict) else type(payload).__name__!r}); pass a run folder made by `nlptk run`")
    return payload
