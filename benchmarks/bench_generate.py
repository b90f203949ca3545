"""Time text generation at batch 1: characters per second, and linear in length.

Setup: the model of recipes/char_lm.yaml (2-layer LSTM, hidden 512,
embedding 128, 69 tokens), random weights unless ``--run`` names a trained
run folder (speed does not depend on the weights). Every method samples at
temperature 0.8 after the prompt "ROMEO:", on one thread, with the same
weights; one warm-up, then ``--repeats`` rounds that interleave the methods
(so a change in machine load hits all alike), median reported.

Methods, all measured in this run:
- ``nn.LSTM`` per token: the hand-written loop a lecture would write, one
  ``nn.LSTM`` call per new token with the carried state (the baseline);
- ``RNNEncoder.step``: the encoder's differentiable single step;
- ``nlptk generate``: ``task.generate``, the command's code path (a Stepper).

Target (issue 3): >= 2,000 chars/s, and 10x the characters taking about 10x
the time (each new token is one step from the carried state; re-reading the
prefix would make it quadratic). The last line gives the machine's ceiling
right now: the plain matrix-vector products of the weights a Stepper reads.
On shared cores it moves with the neighbours' load, so read the speeds
against it.

    python benchmarks/bench_generate.py                     # markdown table
    python benchmarks/bench_generate.py --run runs/char_lm  # a trained model
    python benchmarks/bench_generate.py --json              # one JSON object
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import string
import sys
import time
from typing import Any, Callable, Dict, List

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common import environment, markdown_table  # noqa: E402
from nlptoolkit import Stepper  # noqa: E402
from nlptoolkit.recipe import load_recipe  # noqa: E402
from nlptoolkit.runs import load_run, make_task  # noqa: E402

TARGET_CHARS_PER_SECOND = 2000
PROMPT = "ROMEO:"
TEMPERATURE = 0.8
SHAKESPEARE_CHARS = "\n !$&',-.3:;?" + string.ascii_letters  # the 65 characters of tiny Shakespeare


def random_char_model(recipe_path: str):
    """The recipe's task and model, with a 65-character vocabulary like tiny Shakespeare's."""
    import datasets

    task = make_task(load_recipe(recipe_path), None)
    task.setup(datasets.Dataset.from_dict({"text": [SHAKESPEARE_CHARS]}))
    torch.manual_seed(0)
    return task, task.build_model().eval()


def plain_lstm(encoder: Any) -> nn.LSTM:
    """An ``nn.LSTM`` holding the encoder's weights (without the padding-indicator column)."""
    layers = encoder.layers
    lstm = nn.LSTM(encoder.input_size, encoder.hidden_size, num_layers=len(layers), batch_first=True)
    with torch.no_grad():
        for k, (rnn,) in enumerate(layers):
            getattr(lstm, f"weight_ih_l{k}").copy_(encoder.input_weight(k))
            for name in ("weight_hh", "bias_ih", "bias_hh"):
                getattr(lstm, f"{name}_l{k}").copy_(getattr(rnn, f"{name}_l0"))
    return lstm.eval()


def sampling_loop(step: Callable[[torch.Tensor, Any], Any], decoder: nn.Module, first: torch.Tensor, length: int) -> None:
    """Sample ``length`` tokens, each one step of ``step`` from the carried state."""
    generator = torch.Generator().manual_seed(0)
    token, state = first, None
    for _ in range(length):
        output, state = step(token, state)
        probs = (decoder(output)[0] / TEMPERATURE).softmax(-1)
        token = torch.multinomial(probs, 1, generator=generator)


def methods(task: Any, model: Any) -> Dict[str, Callable[[int], None]]:
    lstm, embedding, decoder = plain_lstm(model.encoder), model.encoder.embedding, model.decoder
    first = torch.tensor([task.vocab.stoi["R"]])

    def lstm_step(token: torch.Tensor, state: Any):
        out, state = lstm(embedding(token.view(1, 1)), state)
        return out[:, -1], state

    def nlptk_generate(length: int) -> None:
        text = "".join(task.generate(model, PROMPT, length, TEMPERATURE, None))
        assert len(text) == len(PROMPT) + length  # one character per token

    def run(step: Callable) -> Callable[[int], None]:
        return torch.no_grad()(lambda length: sampling_loop(step, decoder, first, length))

    return {
        "nn.LSTM per token (hand-written baseline)": run(lstm_step),
        "RNNEncoder.step (differentiable)": run(lambda t, s: model.encoder.step(t.view(1), s)),
        "nlptk generate (Stepper)": nlptk_generate,
    }


def matvec_ceiling(model: Any, steps: int = 300) -> float:
    """Steps per second of the Stepper's matrix products alone: no cell arithmetic, no sampling, no Python."""
    stepper = Stepper(model.encoder)
    mats = [m for layer in stepper.layers for m in ([layer.weight] if hasattr(layer, "weight") else [layer.w_hh])]
    mats.append(model.decoder.weight.detach().t().contiguous())
    rows = [torch.randn(1, m.shape[0]) for m in mats]
    start = time.perf_counter()
    for _ in range(steps):
        for m, r in zip(mats, rows):
            r @ m
    return steps / (time.perf_counter() - start)


def one_thread_timings(fns: Dict[str, Callable[[int], None]], lengths: Dict[str, List[int]], ceiling: Callable[[], float],
                       repeats: int) -> Dict[Any, List[float]]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as `nlptk generate` does
    try:
        for name, fn in fns.items():
            fn(200)  # warm-up
        seconds: Dict[Any, List[float]] = {(name, n): [] for name in fns for n in lengths[name]}
        seconds["ceiling"] = []
        for _ in range(repeats):
            for (name, n) in [k for k in seconds if k != "ceiling"]:
                start = time.perf_counter()
                fns[name](n)
                seconds[(name, n)].append(time.perf_counter() - start)
            seconds["ceiling"].append(ceiling())
        return seconds
    finally:
        torch.set_num_threads(before)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="recipes/char_lm.yaml")
    parser.add_argument("--run", help="time a trained run folder instead of random weights")
    parser.add_argument("--lengths", type=int, nargs=2, default=[1000, 10000], help="short and long length for nlptk generate")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    if args.run:
        _, task, model = load_run(args.run)
    else:
        task, model = random_char_model(args.recipe)
    fns = methods(task, model)
    short, long = args.lengths
    lengths = {name: [short] for name in fns}
    lengths["nlptk generate (Stepper)"] = [short, long]
    seconds = one_thread_timings(fns, lengths, lambda: matvec_ceiling(model), args.repeats)
    ceiling = statistics.median(seconds.pop("ceiling"))

    baseline = statistics.median(seconds[("nn.LSTM per token (hand-written baseline)", short)])
    rows: List[Dict[str, Any]] = []
    for (name, n), values in seconds.items():
        median = statistics.median(values)
        rows.append({"method": name, "chars": n, "median_seconds": median, "chars_per_second": n / median,
                     "speedup_vs_baseline": (baseline / short) / (median / n), "all_seconds": values})
    ours = [r for r in rows if r["method"] == "nlptk generate (Stepper)"]
    result = {
        **environment(),
        "generation_threads": 1,
        "model": "trained run " + args.run if args.run else f"{args.recipe} (random weights)",
        "repeats": args.repeats,
        "rows": rows,
        "time_ratio": ours[1]["median_seconds"] / ours[0]["median_seconds"],
        "length_ratio": long / short,
        "min_chars_per_second": min(r["chars_per_second"] for r in ours),
        "matvec_ceiling_steps_per_second": ceiling,
        "target_chars_per_second": TARGET_CHARS_PER_SECOND,
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"generation at batch 1, temperature {TEMPERATURE}: {result['model']}")
    print(f"machine: {result['machine']}, torch {result['torch']}, generation on 1 thread, median of {args.repeats}\n")
    print(markdown_table(
        ["method", "chars", "median seconds", "chars/s", "speed vs nn.LSTM loop"],
        [[r["method"], f"{r['chars']:,}", f"{r['median_seconds']:.3f}", f"{r['chars_per_second']:,.0f}",
          f"{r['speedup_vs_baseline']:.2f}x"] for r in rows],
    ))
    print(f"\nceiling now (the Stepper's matrix products alone, no cell arithmetic or sampling): {ceiling:,.0f} steps/s")
    met = result["min_chars_per_second"] >= TARGET_CHARS_PER_SECOND
    print(f"nlptk generate: {long:,} / {short:,} chars take {result['time_ratio']:.2f}x the time (linear: {long / short:.0f}x); "
          f"target >= {TARGET_CHARS_PER_SECOND:,} chars/s: {'met' if met else 'NOT met'}")


if __name__ == "__main__":
    main()
