"""Fixed-size feature vectors as inputs: image features for captioning, and the like.

A feature vector is a list of numbers, all of one size. Two places read them:
a data set's column (a task's ``encode``) and a file given to ``nlptk predict
--features``. Both go through :func:`check_vector`, so a vector of the wrong
size, a word among the numbers, or a missing value gets the same one-line
error, naming the file and row or line.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable, List, Optional

import numpy as np
import torch
from torch import Tensor

from nlptoolkit.errors import NlptkError


def check_vector(value: Any, size: Optional[int], where: str, what: str = "the feature vector") -> List[float]:
    """``value`` as a list of floats, or an NlptkError that starts with ``where``.

    A string holding a JSON list is read as that list: a CSV file cannot hold a
    list any other way.
    """
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise NlptkError(f"{where}: {what} is the text {value[:40]!r}, not a list of numbers such as [0.0, 0.5, 1.0]") from None
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        shown = "missing (null)" if value is None else f"{type(value).__name__} {value!r}"[:60]
        raise NlptkError(f"{where}: {what} is {shown}, not a list of numbers such as [0.0, 0.5, 1.0]")
    value = [x.item() if isinstance(x, (np.ndarray, np.generic)) and np.ndim(x) == 0 else x for x in value]
    for i, x in enumerate(value):
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            shown = "null" if x is None else repr(x)[:40]
            raise NlptkError(f"{where}: {what} holds {shown} at position {i}; every entry must be a number")
        if not math.isfinite(x):
            raise NlptkError(f"{where}: {what} holds {x} at position {i}; every entry must be a finite number")
    if size is not None and len(value) != size:
        raise NlptkError(f"{where}: {what} has {len(value)} numbers, but the model reads vectors of {size}; give vectors of {size}")
    if not value:
        raise NlptkError(f"{where}: {what} is empty; give at least one number")
    return [float(x) for x in value]


def feature_matrix(values: Any, size: Optional[int], where: Callable[[int], str], what: str = "the feature vector") -> Tensor:
    """Stack a column of vectors into a (N, size) float tensor, checking every row.

    ``values`` is a sequence of vectors (lists, arrays, or JSON strings);
    ``where(i)`` names row i in an error. ``size`` None takes the first row's
    size. A column that numpy reads as one numeric matrix takes the fast path
    (no Python loop over the numbers); anything else is checked row by row,
    so the error names the first bad row.
    """
    try:
        matrix = np.asarray(values) if len(values) else None
    except (ValueError, TypeError):  # ragged rows
        matrix = None
    numeric = matrix is not None and matrix.dtype.kind in "fiu" and matrix.ndim == 2 and matrix.shape[1] > 0
    if numeric and (size is None or matrix.shape[1] == size) and np.isfinite(matrix).all():
        return torch.from_numpy(np.ascontiguousarray(matrix, dtype=np.float32))
    rows = []
    for i, value in enumerate(values):
        rows.append(check_vector(value, size, where(i), what))
        if size is None:
            size = len(rows[0])
    if not rows:
        return torch.zeros(0, size or 0)
    return torch.tensor(rows, dtype=torch.float32)


def read_feature_file(path: str, size: Optional[int]) -> Tensor:
    """Vectors from a file for ``nlptk predict --features``: one JSON list of
    numbers, a JSON list of such lists, or JSON Lines with one list per line.
    Returns (N, size); errors name the file and line."""
    file = Path(path)
    if not file.is_file():
        raise NlptkError(f"--features {path}: no such file; give a JSON list of numbers, or JSON Lines with one list per line")
    try:
        text = file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise NlptkError(f"--features {path}: not UTF-8 text; give a JSON list of numbers, or JSON Lines with one list per line") from None
    if not text.strip():
        raise NlptkError(f"--features {path}: the file is empty; give a JSON list of numbers, or JSON Lines with one list per line")
    try:
        whole = json.loads(text)
    except ValueError:
        whole = None
    if isinstance(whole, list) and whole and all(isinstance(v, list) for v in whole):
        return feature_matrix(whole, size, lambda i: f"--features {path}, vector {i + 1}")
    if isinstance(whole, list):
        return feature_matrix([whole], size, lambda i: f"--features {path}")
    vectors, lines = [], []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            vectors.append(json.loads(line))
        except ValueError as exc:
            reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
            raise NlptkError(f"--features {path}, line {number}: not valid JSON ({reason}); each line must be one list of numbers") from None
        lines.append(number)
    return feature_matrix(vectors, size, lambda i: f"--features {path}, line {lines[i]}")
