"""What every benchmark prints: the machine, the versions, and a markdown table."""
from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from typing import Callable, Dict, List, Sequence

import torch

# Benchmarks run from a checkout: `python benchmarks/bench_x.py`.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def environment(device: str = "cpu") -> Dict[str, object]:
    u = platform.uname()
    return {
        "machine": f"{u.system} {u.machine}, {os.cpu_count()} CPUs" + (f", {torch.cuda.get_device_name()}" if device == "cuda" else ""),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": device,
    }


def header(env: Dict[str, object], repeats: int) -> str:
    return f"{env['machine']}; torch {env['torch']}; {env['threads']} threads; device {env['device']}; median of {repeats} repeats"


def markdown_table(columns: Sequence[str], rows: List[Sequence[object]]) -> str:
    def cell(v: object) -> str:
        return f"{v:,.2f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def timed(fn: Callable[[], object]) -> float:
    """Seconds one call takes (synchronising CUDA so the time is real)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def median(values: Sequence[float]) -> float:
    return statistics.median(values)
