"""Which precision the training forward pass runs in: ``train.precision``.

``bf16`` runs the forward pass under ``torch.autocast`` in bfloat16; weights,
optimizer and evaluation stay float32. It pays only where the hardware does
bfloat16 natively: a CUDA GPU with bf16 (Ampere or later), or an x86 CPU with
AVX512-BF16 or AMX-BF16. Elsewhere it is emulated (slower than fp32) or, on a
CPU with only AVX2, oneDNN has no bf16 LSTM at all and the first step fails.

``auto`` (the default) therefore picks bf16 only where it is native and fast,
and fp32 everywhere else. An explicit ``bf16`` runs wherever bf16 works at all
(with a warning when it is emulated) and is refused with a one-line error where
it cannot run. The choice and the reason go into the run log and ``summary.json``.

How a CPU is judged, cheapest first: the CPU's flags (avx512_bf16, amx_bf16);
the instruction sets torch is allowed to use (``ATEN_CPU_CAPABILITY``,
``ONEDNN_MAX_CPU_ISA``: they can make a bf16 CPU behave like an AVX2 one); and
finally a tiny bf16 LSTM forward and backward, run once per process, as the
ground truth that the kernels exist.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import FrozenSet, Optional, Tuple

import torch

from nlptoolkit.errors import NlptkError

# CPU flags (as /proc/cpuinfo names them) that mean bfloat16 arithmetic in hardware.
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# ONEDNN_MAX_CPU_ISA values that still include native bf16 instructions (oneDNN's names).
ONEDNN_BF16_ISAS = frozenset({
    "ALL", "AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16",
    "AVX10_1_512", "AVX10_1_512_AMX", "AVX10_1_512_AMX_FP16",
})


@dataclass(frozen=True)
class PrecisionChoice:
    """What ``train.precision`` resolved to on this machine, and why."""

    requested: str  # what the recipe asked for: auto | fp32 | bf16
    used: str  # what training runs in: fp32 | bf16
    reason: str

    @property
    def autocast_dtype(self) -> Optional[torch.dtype]:
        return torch.bfloat16 if self.used == "bf16" else None

    def to_dict(self) -> dict:
        return {"requested": self.requested, "used": self.used, "reason": self.reason}


def cpu_flags() -> FrozenSet[str]:
    """The CPU's feature flags, lower case; empty where they cannot be read (not Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return frozenset(value.lower().split())
    except OSError:
        pass
    return frozenset()


def aten_capability() -> str:
    """The vector instruction set ATen's CPU kernels use (honours ATEN_CPU_CAPABILITY)."""
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):  # torch < 2.1
        return "unknown"


@functools.lru_cache(maxsize=None)
def bf16_lstm_runs() -> Tuple[bool, str]:
    """Run a tiny LSTM forward and backward under bf16 autocast on the CPU: can it work here?

    On an AVX2-only CPU oneDNN has no bf16 LSTM ("could not create a primitive
    descriptor for the LSTM forward propagation primitive"). Cached: it costs a
    few milliseconds once per process.
    """
    lstm = torch.nn.LSTM(4, 4, batch_first=True)
    inputs = torch.randn(2, 3, 4)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            outputs = lstm(inputs)[0]
        outputs.float().sum().backward()
    except RuntimeError as exc:
        first = " ".join(str(exc).split()).split(". ")[0]  # oneDNN appends advice on verbose logging
        return False, first[:160]
    return True, "a bf16 LSTM runs"


def native_cpu_bf16() -> Tuple[bool, str]:
    """(native, why): does this CPU do bf16 in hardware, and may torch use it?"""
    flags = cpu_flags()
    found = [f for f in NATIVE_BF16_FLAGS if f in flags]
    if not found:
        return False, "this CPU has no native bf16 (no avx512_bf16 or amx_bf16 flag)"
    capability = aten_capability()
    if capability.upper() in ("DEFAULT", "NO AVX", "AVX2"):
        return False, f"torch's CPU kernels are limited to {capability} (ATEN_CPU_CAPABILITY), which has no bf16"
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    if isa and isa not in ONEDNN_BF16_ISAS:
        return False, f"ONEDNN_MAX_CPU_ISA={isa} keeps oneDNN off this CPU's bf16 instructions"
    runs, detail = bf16_lstm_runs()
    if not runs:
        return False, f"a bf16 LSTM does not run here ({detail})"
    return True, f"this CPU has native bf16 ({', '.join(found)})"


def native_cuda_bf16() -> Tuple[bool, str]:
    try:
        native = torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # torch < 2.3 has no including_emulation; it then reports native support
        native = torch.cuda.is_bf16_supported()
    name = torch.cuda.get_device_name()
    return (True, f"the GPU ({name}) has native bf16") if native else (False, f"the GPU ({name}) has no native bf16")


def choose_precision(requested: str, device: torch.device) -> PrecisionChoice:
    """Resolve ``train.precision`` for ``device``; a one-line error where bf16 cannot run."""
    if requested == "fp32":
        return PrecisionChoice("fp32", "fp32", "the recipe asks for fp32")
    if device.type == "cuda":
        native, why = native_cuda_bf16()
    elif device.type == "cpu":
        native, why = native_cpu_bf16()
    else:
        native, why = False, f"bf16 autocast is not set up for device {device.type}"
    if requested == "auto":
        return PrecisionChoice("auto", "bf16" if native else "fp32", why)
    # An explicit bf16: run it wherever it works at all, even if emulated.
    if native:
        return PrecisionChoice("bf16", "bf16", why)
    if device.type == "cpu":
        runs, detail = bf16_lstm_runs()
        if not runs:
            raise NlptkError(
                f"train.precision: bf16 cannot run on this CPU ({why}; oneDNN: {detail}); "
                "set train.precision: auto (picks fp32 here) or fp32"
            )
    elif device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise NlptkError(f"train.precision: bf16 cannot run on this GPU ({why}); set train.precision: auto or fp32")
    return PrecisionChoice("bf16", "bf16", f"the recipe asks for bf16, but it is emulated and likely slower than fp32: {why}")
