"""Time RNNEncoder against padded nn.LSTM and the pack_padded_sequence path.

Setup: bidirectional LSTM, hidden 256, input 128, batch 64, padded length 100,
forward plus backward (``outputs.sum().backward()``). Three length mixes:

* all equal (100)          -- no padding at all
* 90-100                   -- about 95% real tokens
* skewed                   -- about 28% real tokens, max 100

Methods:

* padded  -- nn.LSTM(bidirectional=True) on the padded batch: fast but *wrong*
             for every sequence shorter than the batch (the baseline for speed)
* packed  -- pack_padded_sequence / nn.LSTM / pad_packed_sequence: exact, slow
* ours    -- RNNEncoder(input_size=128): must be exact and close to padded speed

Each method is warmed up once, then the methods are timed round-robin
``--repeats`` times each; the median per method is reported. As a sanity check (not a timing) ours is compared with the packed
results on the same weights: ``max_abs_diff`` over outputs, h_n and c_n.

    python benchmarks/bench_encoder.py                # markdown table
    python benchmarks/bench_encoder.py --json         # one JSON object
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Callable, Dict, List, Tuple

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common import environment  # noqa: E402
from nlptoolkit.encoder import RNNEncoder  # noqa: E402

HIDDEN, INPUT, BATCH, MAX_LEN = 256, 128, 64, 100


def make_lengths(kind: str, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if kind == "equal":
        lengths = torch.full((BATCH,), MAX_LEN, dtype=torch.long)
    elif kind == "near":
        lengths = torch.randint(90, MAX_LEN + 1, (BATCH,), generator=g)
    elif kind == "skewed":
        # 1 + floor(Exponential(mean 28)), capped at 100: most sequences are
        # short, a few are long -- about 28% of the padded batch is real.
        lengths = (1 + torch.empty(BATCH).exponential_(1 / 28, generator=g).floor()).clamp(max=MAX_LEN).long()
    else:
        raise ValueError(kind)
    lengths[0] = MAX_LEN  # the batch is padded to exactly MAX_LEN
    return lengths


ROWS = [
    ("all equal (100)", "equal"),
    ("90-100 (95% real tokens)", "near"),
    ("skewed (~28% real tokens)", "skewed"),
]


def copy_to_reference(enc: RNNEncoder, ref: nn.LSTM) -> None:
    """Copy our per-layer/per-direction modules into one multi-layer torch LSTM."""
    with torch.no_grad():
        for layer, directions in enumerate(enc.layers):
            for d, rnn in enumerate(directions):
                sfx = f"_l{layer}" + ("_reverse" if d == 1 else "")
                w_ih = rnn.weight_ih_l0[:, :-1] if enc.cell == "lstm" else rnn.weight_ih_l0  # drop padding column
                getattr(ref, "weight_ih" + sfx).copy_(w_ih)
                getattr(ref, "weight_hh" + sfx).copy_(rnn.weight_hh_l0)
                getattr(ref, "bias_ih" + sfx).copy_(rnn.bias_ih_l0)
                getattr(ref, "bias_hh" + sfx).copy_(rnn.bias_hh_l0)
    ref.flatten_parameters()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(steps: Dict[str, Tuple[Callable[[], None], List[nn.Parameter]]], repeats: int, device: torch.device) -> Dict[str, float]:
    """Warm every method up once, then time them round-robin (so that load from
    other processes hits all methods alike) and return each one's median in ms."""

    def once(step: Callable[[], None], params: List[nn.Parameter]) -> float:
        for p in params:
            p.grad = None
        sync(device)
        start = time.perf_counter()
        step()
        sync(device)
        return (time.perf_counter() - start) * 1e3

    for step, params in steps.values():
        once(step, params)  # warm-up
    times: Dict[str, List[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, (step, params) in steps.items():
            times[name].append(once(step, params))
    return {name: statistics.median(t) for name, t in times.items()}


def bench_device(device: torch.device, repeats: int) -> List[Dict]:
    torch.manual_seed(0)
    enc = RNNEncoder("lstm", HIDDEN, num_layers=1, bidirectional=True, input_size=INPUT).to(device).train()
    ref = nn.LSTM(INPUT, HIDDEN, batch_first=True, bidirectional=True).to(device).train()
    copy_to_reference(enc, ref)
    padded = nn.LSTM(INPUT, HIDDEN, batch_first=True, bidirectional=True).to(device).train()

    rows = []
    for name, kind in ROWS:
        lengths = make_lengths(kind)
        x = torch.randn(BATCH, MAX_LEN, INPUT, generator=torch.Generator().manual_seed(1)).to(device)
        lengths_dev = lengths.to(device)

        def step_padded() -> None:
            out, _ = padded(x)
            out.sum().backward()

        def step_packed() -> None:
            packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            out, _ = ref(packed)
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=MAX_LEN)
            out.sum().backward()

        def step_ours() -> None:
            enc(x, lengths_dev).outputs.sum().backward()

        ms = median_ms(
            {
                "padded": (step_padded, list(padded.parameters())),
                "packed": (step_packed, list(ref.parameters())),
                "ours": (step_ours, list(enc.parameters())),
            },
            repeats,
            device,
        )
        padded_ms, packed_ms, ours_ms = ms["padded"], ms["packed"], ms["ours"]

        # Sanity check, not a timing: ours == packed on the same weights.
        with torch.no_grad():
            ours = enc(x, lengths_dev)
            packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            out, (h, c) = ref(packed)
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=MAX_LEN)
            diff = max(
                (ours.outputs - out).abs().max().item(),
                (ours.state[0] - h).abs().max().item(),
                (ours.state[1] - c).abs().max().item(),
            )
        rows.append(
            {
                "name": name,
                "device": str(device),
                "real_token_share": round(lengths.sum().item() / (BATCH * MAX_LEN), 4),
                "padded_ms": round(padded_ms, 3),
                "packed_ms": round(packed_ms, 3),
                "encoder_ms": round(ours_ms, 3),
                "encoder_vs_padded": round(ours_ms / padded_ms, 3),
                "encoder_vs_packed": round(ours_ms / packed_ms, 3),
                "max_abs_diff": diff,
            }
        )
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print only one JSON object")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per method (median reported)")
    parser.add_argument("--device", default="cpu", help="device for the first set of rows (CUDA rows are added when available)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")

    devices = [torch.device(args.device)]
    if torch.cuda.is_available() and not any(d.type == "cuda" for d in devices):
        devices.append(torch.device("cuda"))
    info = {
        "machine": environment()["machine"],
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "devices": [str(d) for d in devices],
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "setup": f"bidirectional LSTM, hidden {HIDDEN}, input {INPUT}, batch {BATCH}, padded length {MAX_LEN}, "
        f"forward+backward, median of {args.repeats}",
    }
    rows = [row for d in devices for row in bench_device(d, args.repeats)]

    if args.json:
        print(json.dumps({**info, "rows": rows}))
        return
    print(f"machine: {info['machine']}")
    print(f"torch {info['torch']}, threads {info['threads']}, devices {', '.join(info['devices'])}"
          + (f" ({info['gpu']})" if info["gpu"] else ""))
    print(f"setup: {info['setup']}")
    print()
    print("| row | device | real-token share | padded nn.LSTM ms | packed ms | ours ms | ours/padded | ours/packed | max abs diff vs packed |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['name']} | {r['device']} | {r['real_token_share']:.1%} | {r['padded_ms']:.1f} | {r['packed_ms']:.1f} "
            f"| {r['encoder_ms']:.1f} | {r['encoder_vs_padded']:.2f} | {r['encoder_vs_packed']:.2f} | {r['max_abs_diff']:.2e} |"
        )


if __name__ == "__main__":
    main()
