"""Products for single steps at inference, and a short measurement that picks the fastest here.

At batch 1 a product ``bias + x W^T`` does two flops per weight it reads, so
its speed is how fast the library streams the weights. That depends on the
library and the CPU far more than one would guess. The torch CPU wheel does
its fp32 products with Intel MKL, which takes generic code paths on some
CPUs (AMD's among them) and tuned ones on others; oneDNN and MKL's packed
format read the same weights in other orders. No one choice is fastest
everywhere, so :func:`pick_product` times each way on the weights it will
serve, checks that each gives the right answer, and keeps the fastest: detect,
fall back, and measure rather than guess. The choice is cached per process
(by shape, dtype, device and thread count), so it is paid once, ~10-50 ms.

A way is a function ``prepare(weight) -> product``: ``weight`` is (out, in)
as in ``nn.Linear``, and ``product(x, bias)`` returns ``bias + x @ weight.T``
for ``x`` (B, in) and ``bias`` (out,) or (B, out). Ways that this torch build
or CPU lacks fail in ``prepare`` or in the check, and drop out.
"""
from __future__ import annotations

import statistics
import time
import warnings
from contextlib import contextmanager
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Tuple

import torch
from torch import Tensor

Product = Callable[[Tensor, Tensor], Tensor]
Prepare = Callable[[Tensor], Product]


def _addmm_transposed(weight: Tensor) -> Product:
    """Weights stored (in, out): one input row reads them in memory order."""
    stored = weight.t().contiguous()
    return lambda x, bias: torch.addmm(bias, x, stored)


def _addmm(weight: Tensor) -> Product:
    """Weights as ``nn.Linear`` keeps them, (out, in): what ``F.linear`` does, bias of any shape."""
    stored = weight.contiguous()
    return lambda x, bias: torch.addmm(bias, x, stored.t())


def _packed(stored: Tensor, packed_product: Callable[[Tensor], Tensor]) -> Product:
    """A product on a packed weight layout; the packed ops have no backward, so a product that
    needs gradients takes plain ``addmm`` on the stored weights instead."""

    def product(x: Tensor, bias: Tensor) -> Tensor:
        if x.requires_grad and torch.is_grad_enabled():
            return torch.addmm(bias, x, stored.t())
        return packed_product(x).add_(bias)

    return product


def _mkl_packed(weight: Tensor) -> Product:
    """MKL's packed GEMM format (``cblas_sgemm_pack``), packed for batch 1."""
    stored = weight.contiguous()
    packed = torch.ops.mkl._mkl_reorder_linear_weight(stored, 1)
    return _packed(stored, lambda x: torch.ops.mkl._mkl_linear(x, packed, stored, None, 1))


def _onednn(weight: Tensor) -> Product:
    """oneDNN's inner product on weights reordered once into its blocked layout for batch 1."""
    stored = weight.contiguous()
    packed = torch.ops.mkldnn._reorder_linear_weight(stored, 1)
    return _packed(stored, lambda x: torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], ""))


# The ways, in order of preference on a tie (the first is the plain-PyTorch default, the fallback
# that works on every device and build).
WAYS: Dict[str, Prepare] = {
    "addmm, weights (in, out)": _addmm_transposed,
    "addmm, weights (out, in)": _addmm,
    "MKL packed": _mkl_packed,
    "oneDNN": _onednn,
}
DEFAULT = "addmm, weights (in, out)"

Timer = Callable[[str, Product, Tensor, Tensor], float]
_chosen: Dict[Tuple, str] = {}
_forced: Optional[str] = None


@contextmanager
def forced(name: str) -> Iterator[None]:
    """Make every product ``name``'s way, unmeasured, while inside (benchmarks, tests, debugging)."""
    global _forced
    if name not in WAYS:
        raise ValueError(f"unknown way {name!r}; one of {', '.join(WAYS)}")
    before, _forced = _forced, name
    try:
        yield
    finally:
        _forced = before


def _seconds_per_call(name: str, product: Product, x: Tensor, bias: Tensor, rounds: int = 5, budget: float = 0.002) -> float:
    """Median over ``rounds`` of the time per call, each round ~``budget`` seconds."""
    start = time.perf_counter()
    product(x, bias)
    calls = max(1, min(200, int(budget / max(time.perf_counter() - start, 1e-6))))
    per_call: List[float] = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            product(x, bias)
        per_call.append((time.perf_counter() - start) / calls)
    return statistics.median(per_call)


def measure(weight: Tensor, ways: Optional[Iterable[str]] = None, timer: Timer = _seconds_per_call) -> Dict[str, Optional[float]]:
    """Seconds per call of each way on ``weight`` at batch 1; None for a way that fails or is wrong here.

    "Wrong" means further from the float64 product than float32 rounding
    explains (1e-4 of the largest output).
    """
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, weight.shape[1], generator=generator).to(weight)
    bias = torch.randn(weight.shape[0], generator=generator).to(weight)
    want = (bias.double() + x.double() @ weight.double().t()).to(weight.dtype)
    tolerance = 1e-4 * max(1.0, float(want.abs().max()))
    results: Dict[str, Optional[float]] = {}
    with torch.no_grad():
        for name in ways if ways is not None else WAYS:
            try:
                product = WAYS[name](weight)
                ok = float((product(x, bias) - want).abs().max()) <= tolerance
            except (RuntimeError, AttributeError, NotImplementedError):  # not in this build, or not on this CPU
                ok = False
            results[name] = timer(name, product, x, bias) if ok else None
    return results


def pick_product(weight: Tensor, timer: Timer = _seconds_per_call) -> Tuple[str, Product]:
    """The fastest correct way to multiply by ``weight`` at batch 1 on this machine, prepared.

    On a GPU the plain default (its products are not memory-bound the same
    way, and timing them needs synchronisation): no measurement.
    """
    if _forced is not None:
        return _forced, WAYS[_forced](weight)
    if weight.device.type != "cpu":
        return DEFAULT, WAYS[DEFAULT](weight)
    key = (tuple(weight.shape), weight.dtype, torch.get_num_threads())
    if key not in _chosen:
        timings = measure(weight, timer=timer)
        working = {name: t for name, t in timings.items() if t is not None}
        _chosen[key] = min(working, key=working.__getitem__) if working else DEFAULT
    name = _chosen[key]
    return name, WAYS[name](weight)


def forget_choices() -> None:
    """Measure again next time (after the machine's load or thread count changed)."""
    _chosen.clear()


# ----------------------------------------------------------------------------
# Smaller weights: fewer bytes to stream a step, at a small cost in accuracy
# ----------------------------------------------------------------------------
# At batch 1 the time of a product is the bytes of its weights, so storing them
# in 16 or 8 bits makes it 2-4x faster on a CPU. Both ways below are FBGEMM's
# (the kernels behind ``torch.ao``'s dynamic quantization, with AVX2 and
# AVX-512 code paths), which accumulate in fp32 or int32:
# - "fp16": weights rounded to float16, inputs kept in fp32;
# - "int8": weights in int8 with one scale per output row, and the input of
#   each call quantized to 7 bits with one scale for the whole input (FBGEMM's
#   "dynamic" quantization; 7 rather than 8 bits keep AVX2's 16-bit sums from
#   saturating).
# They change the model's outputs, so they are not measured choices like the
# ways above: a run uses one only when asked, and only after its validation
# loss was measured to move less than a stated tolerance (the language-model
# task's ``generation_weights``; see ``nlptk generate --weights``).


def _fbgemm_fp16(weight: Tensor) -> Product:
    packed = torch.ops.quantized.linear_prepack_fp16(weight.float().contiguous(), None)
    return lambda x, bias: torch.ops.quantized.linear_dynamic_fp16(x, packed).add_(bias)


def int8_rows(weight: Tensor) -> Tuple[Tensor, Tensor]:
    """Symmetric int8 weights, one scale per output row: ``weight ~ q * scale[:, None]``."""
    scale = (weight.abs().amax(dim=1) / 127).clamp_min(1e-12)
    return torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8), scale


def _fbgemm_int8(weight: Tensor) -> Product:
    q, scale = int8_rows(weight.float())
    zero = torch.zeros(weight.shape[0], dtype=torch.long)
    with warnings.catch_warnings():  # quantized tensors are deprecated as a user API; FBGEMM's packed form still takes one
        warnings.simplefilter("ignore")
        stored = torch._make_per_channel_quantized_tensor(q, scale.double(), zero, 0)
    packed = torch.ops.quantized.linear_prepack(stored, None)
    return lambda x, bias: torch.ops.quantized.linear_dynamic(x, packed, True).add_(bias)


STORAGE: Dict[str, Optional[Prepare]] = {
    "fp32": None,  # the measured ways above
    "fp16": _fbgemm_fp16,
    "int8": _fbgemm_int8,
}


def prepare_stored(weight: Tensor, storage: str) -> Tuple[str, Product]:
    """``pick_product`` for fp32; otherwise the product with ``weight`` stored as ``storage``.

    Raises RuntimeError where this build or device lacks the kernel (FBGEMM
    is CPU-only): the caller falls back to fp32.
    """
    if storage not in STORAGE:
        raise ValueError(f"unknown weight storage {storage!r}; one of {', '.join(STORAGE)}")
    prepare = STORAGE[storage]
    if prepare is None:
        return pick_product(weight)
    if weight.device.type != "cpu" or not hasattr(torch.ops.quantized, "linear_prepack_fp16"):
        raise RuntimeError(f"{storage} weights need FBGEMM, which this torch build or device ({weight.device}) lacks")
    return f"FBGEMM {storage}", prepare(weight)
