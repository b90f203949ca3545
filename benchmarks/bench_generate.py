"""Time text generation at batch 1: characters per second, and linear in length.

Setup: the model of recipes/char_lm.yaml (2-layer LSTM, hidden 512,
embedding 128, 69 tokens), random weights unless ``--run`` names a trained
run folder (speed does not depend on the weights). Each length is generated
from the prompt "ROMEO:" at temperature 0.8 through ``task.generate``, the
code path of `nlptk generate`; one warm-up run, then ``--repeats`` timed runs,
median reported. Target (issue 3): >= 2,000 chars/s, and 10x the characters
taking about 10x the time (each new token is one RNN step from the carried
state; re-reading the prefix would make it quadratic).

    python benchmarks/bench_generate.py               # markdown table
    python benchmarks/bench_generate.py --run runs/char_lm   # a trained model
    python benchmarks/bench_generate.py --json        # one JSON object
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import string
import sys
import time
from typing import Any, Dict, List

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common import environment  # noqa: E402
from nlptoolkit.recipe import load_recipe  # noqa: E402
from nlptoolkit.runs import load_run, make_task  # noqa: E402

TARGET_CHARS_PER_SECOND = 2000
PROMPT = "ROMEO:"
SHAKESPEARE_CHARS = "\n !$&',-.3:;?" + string.ascii_letters  # the 65 characters of tiny Shakespeare


def random_char_model(recipe_path: str):
    """The recipe's task and model, with a 65-character vocabulary like tiny Shakespeare's."""
    import datasets

    task = make_task(load_recipe(recipe_path), None)
    task.setup(datasets.Dataset.from_dict({"text": [SHAKESPEARE_CHARS]}))
    torch.manual_seed(0)
    return task, task.build_model().eval()


def time_once(task: Any, model: Any, length: int) -> float:
    start = time.perf_counter()
    text = "".join(task.generate(model, PROMPT, length, 0.8, None))
    seconds = time.perf_counter() - start
    assert len(text) == len(PROMPT) + length  # one character per token
    return seconds


def matvec_floor(model: Any, steps: int = 1000) -> float:
    """Steps per second of one step's matrix-vector products alone, on one thread.

    No cell arithmetic, no sampling, no Python: the machine's ceiling for
    this model right now. On shared cores it moves with the load, so it is
    measured between the timed runs, and generation is reported against it.
    """
    mats = [p.detach() for name, p in model.named_parameters() if p.dim() == 2 and "embedding" not in name]
    vecs = [torch.randn(m.shape[1]) for m in mats]
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        start = time.perf_counter()
        for _ in range(steps):
            for m, v in zip(mats, vecs):
                m @ v
        return steps / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(before)


def time_lengths(task: Any, model: Any, lengths: List[int], repeats: int) -> Dict[Any, List[float]]:
    """Repeats interleave the lengths (and the floor), so a change in machine load hits all alike."""
    seconds: Dict[Any, List[float]] = {n: [] for n in lengths}
    seconds["floor"] = []
    for _ in range(repeats):
        for n in lengths:
            seconds[n].append(time_once(task, model, n))
        seconds["floor"].append(matvec_floor(model))
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="recipes/char_lm.yaml")
    parser.add_argument("--run", help="time a trained run folder instead of random weights")
    parser.add_argument("--lengths", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, help="torch.set_num_threads outside generation (generation itself uses one thread)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.run:
        _, task, model = load_run(args.run)
    else:
        task, model = random_char_model(args.recipe)
    time_once(task, model, 200)  # warm-up
    timings = time_lengths(task, model, args.lengths, args.repeats)
    floor = statistics.median(timings.pop("floor"))

    rows: List[Dict[str, Any]] = []
    for length, seconds in timings.items():
        median = statistics.median(seconds)
        rows.append({"chars": length, "median_seconds": median, "chars_per_second": length / median, "all_seconds": seconds})
    ratio = rows[-1]["median_seconds"] / rows[0]["median_seconds"]
    expected = rows[-1]["chars"] / rows[0]["chars"]
    result = {
        "machine": environment()["machine"],
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "generation_threads": 1,  # plugins/language_model.py: one_thread()
        "model": "trained run " + args.run if args.run else f"{args.recipe} (random weights)",
        "repeats": args.repeats,
        "rows": rows,
        "time_ratio": ratio,
        "length_ratio": expected,
        "min_chars_per_second": min(r["chars_per_second"] for r in rows),
        "matvec_floor_steps_per_second": floor,
        "target_chars_per_second": TARGET_CHARS_PER_SECOND,
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"generation at batch 1: {result['model']}")
    print(f"machine: {result['machine']} ({result['cpu_count']} CPUs), torch {result['torch']}, {result['threads']} threads "
          f"(generation runs on {result['generation_threads']}), median of {args.repeats}\n")
    print("| chars | median seconds | chars/s |")
    print("|---|---|---|")
    for r in rows:
        print(f"| {r['chars']:,} | {r['median_seconds']:.3f} | {r['chars_per_second']:,.0f} |")
    print(f"| matrix-vector products alone (ceiling) | {1 / floor * 1000:.3f} per 1,000 | {floor:,.0f} |")
    print(f"\ntime ratio {rows[-1]['chars']:,} / {rows[0]['chars']:,} chars: {ratio:.2f} (linear: {expected:.0f}); "
          f"target >= {TARGET_CHARS_PER_SECOND:,} chars/s: {'met' if result['min_chars_per_second'] >= TARGET_CHARS_PER_SECOND else 'NOT met'}")


if __name__ == "__main__":
    main()
