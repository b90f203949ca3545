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


# The CPU features that decide which kernels run: vector width, and native bf16 / AMX.
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
# Variables that make MKL, PyTorch's own kernels and oneDNN act as on an older CPU.
ISA_VARIABLES = ("MKL_ENABLE_INSTRUCTIONS", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")


def cpu() -> Dict[str, object]:
    """The CPU model, which of CPU_FLAGS it has, what torch's kernels use, and any ISA limits set."""
    from nlptoolkit.precision import aten_capability, cpu_flags

    model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            model = next((line.partition(":")[2].strip() for line in f if line.startswith("model name")), model)
    except OSError:  # not Linux: the model as platform names it
        pass
    flags = cpu_flags()
    return {
        "cpu": model,
        "cpu_flags": [f for f in CPU_FLAGS if f in flags],
        "torch_cpu_capability": aten_capability(),
        "isa_limits": {k: os.environ[k] for k in ISA_VARIABLES if k in os.environ},
    }


def cpu_line(info: Dict[str, object]) -> str:
    limits = " ".join(f"{k}={v}" for k, v in info["isa_limits"].items()) or "none"
    return (f"CPU: {info['cpu']}; flags: {' '.join(info['cpu_flags']) or 'none of ' + '/'.join(CPU_FLAGS)}; "
            f"torch kernels: {info['torch_cpu_capability']}; ISA limits: {limits}")


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
