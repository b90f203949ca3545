"""Time text generation at batch 1: characters per second, the machine's ceilings, and the product kernels.

Setup: the model of recipes/char_lm.yaml (2-layer LSTM, hidden 512,
embedding 128, 65 characters), random weights unless ``--run`` names a
trained run folder (speed does not depend on the weights). Generation samples
at temperature 0.8 after the prompt "ROMEO:", on one thread, with the same
weights; one warm-up, then ``--repeats`` rounds that interleave the methods
(so a change in machine load hits all alike), medians reported.

Printed, all measured in this run:
- the CPU: model, flags (AVX2, AVX-512, AVX512-BF16, AMX), the kernels torch
  uses, and any ISA limits set in the environment (MKL_ENABLE_INSTRUCTIONS,
  ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA: set them to act like an older CPU);
- bandwidth ceilings: a 256 MB copy (main memory) and a read of a buffer as
  big as the weights one step reads (caches, if they hold it), with the steps
  per second each would allow if a step cost nothing but reading its weights;
- the products of one step made each way ``nlptoolkit/matvec.py`` knows,
  on 1 and 2 threads, and the way ``Stepper`` measured and chose;
- generation: one ``nn.LSTM`` call per token (the hand-written baseline),
  ``RNNEncoder.step``, the ``Stepper`` with its products forced to the plain
  default way, and ``nlptk generate`` (``task.generate``, a ``Stepper`` that
  picks its products by measurement), with fp32 weights and with each smaller
  storage (``--weights fp16``, ``int8``: FBGEMM kernels, weights 2x and 4x
  smaller; their cost in validation loss is measured by ``nlptk generate``,
  not here, see ``Run.generation_weights``).

Target (issues 3 and 9): >= 2,000 chars/s, and 10x the characters taking
about 10x the time. On shared cores the numbers move with the neighbours'
load: read the speeds against the ceilings measured in the same run.

    python benchmarks/bench_generate.py                     # markdown tables
    python benchmarks/bench_generate.py --run runs/char_lm  # a trained model
    MKL_ENABLE_INSTRUCTIONS=AVX2 ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 \
        python benchmarks/bench_generate.py                 # as on an AVX2-only CPU
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
from common import cpu, cpu_line, environment, markdown_table  # noqa: E402
from nlptoolkit import Stepper, matvec  # noqa: E402
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

    def nlptk_generate(length: int, weights: str = "fp32") -> None:
        text = "".join(task.generate(model, PROMPT, length, TEMPERATURE, None, weights=weights))
        assert len(text) == len(PROMPT) + length  # one character per token

    def run(step: Callable) -> Callable[[int], None]:
        return torch.no_grad()(lambda length: sampling_loop(step, decoder, first, length))

    def default_products(length: int) -> None:
        with matvec.forced(matvec.DEFAULT):
            nlptk_generate(length)

    return {
        "nn.LSTM per token (hand-written baseline)": run(lstm_step),
        "RNNEncoder.step (differentiable)": run(lambda t, s: model.encoder.step(t.view(1), s)),
        f"Stepper, products forced to {matvec.DEFAULT}": default_products,
        GENERATE: nlptk_generate,
        **{stored_name(storage): (lambda length, storage=storage: nlptk_generate(length, storage)) for storage in SMALLER},
    }


SMALLER = [name for name in matvec.STORAGE if name != "fp32"]  # fp16, int8: the lossy weight storages


def stored_name(storage: str) -> str:
    return f"nlptk generate --weights {storage}"


GENERATE = "nlptk generate (Stepper, products measured)"


def step_weights(model: Any) -> List[torch.Tensor]:
    """The (out, in) matrices one generation step multiplies by: what a Stepper keeps, and the output layer."""
    mats = []
    for k, (rnn,) in enumerate(model.encoder.layers):
        if k == 0 and model.encoder.embedding is not None:  # the input product is a table lookup
            mats.append(rnn.weight_hh_l0.detach())
        else:
            mats.append(torch.cat([model.encoder.input_weight(k), rnn.weight_hh_l0], dim=1).detach())
    return mats + [model.decoder.weight.detach()]


def interleaved(fns: Dict[Any, Callable[[], float]], repeats: int) -> Dict[Any, float]:
    """Median over ``repeats`` rounds of each function's own reading, the functions taking turns."""
    readings: Dict[Any, List[float]] = {key: [] for key in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            readings[key].append(fn())
    return {key: statistics.median(values) for key, values in readings.items()}


def seconds_per_call(fn: Callable[[], Any], calls: int) -> Callable[[], float]:
    def reading() -> float:
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        return (time.perf_counter() - start) / calls
    return reading


def bandwidth(step_bytes: int, repeats: int) -> Dict[str, float]:
    """GB/s of a 256 MB copy (read + write) and of reading a step-sized buffer, one thread."""
    big = torch.ones(64 * 2**20)  # 256 MB
    big_out = torch.empty_like(big)
    step_sized = torch.ones(step_bytes // 4)
    seconds = interleaved({
        "copy": seconds_per_call(lambda: big_out.copy_(big), 3),
        "read": seconds_per_call(lambda: step_sized.sum(), 30),
    }, repeats)
    return {"copy_gb_per_s": 2 * big.numel() * 4 / seconds["copy"] / 1e9, "read_gb_per_s": step_bytes / seconds["read"] / 1e9}


def product_timings(weights: List[torch.Tensor], repeats: int, threads: List[int]) -> Dict[Any, float]:
    """Seconds for one step's products made each way, at each thread count; the ways this machine lacks are left out."""
    fns: Dict[Any, Callable[[], float]] = {}
    fp32_ways = [way for way, timing in matvec.measure(weights[0], timer=lambda *a: 0.0).items() if timing is not None]
    for way in fp32_ways + SMALLER:
        try:  # the output layer stays fp32 in every storage (as Stepper keeps it)
            prepared = [matvec.WAYS[way](w) if way in matvec.WAYS else matvec.prepare_stored(w, way)[1] for w in weights[:-1]]
        except RuntimeError:  # no FBGEMM here
            continue
        prepared.append(matvec.WAYS[matvec.DEFAULT](weights[-1]))
        products = [(product, torch.randn(1, w.shape[1]), torch.randn(w.shape[0])) for product, w in zip(prepared, weights)]

        def one_step(products=products) -> None:
            for product, x, bias in products:
                product(x, bias)

        for n in threads:
            def reading(n=n, one_step=one_step) -> float:
                torch.set_num_threads(n)
                return seconds_per_call(one_step, 50)()
            fns[(way, n)] = reading
    with torch.no_grad():
        for fn in fns.values():
            fn()  # warm-up
        return interleaved(fns, repeats)


def works(fn: Callable[[int], None]) -> bool:
    """False where this build or machine lacks the kernel (a storage's row is then left out)."""
    try:
        fn(2)
        return True
    except RuntimeError:
        return False


def generation_timings(fns: Dict[str, Callable[[int], None]], lengths: Dict[str, List[int]], repeats: int) -> Dict[Any, List[float]]:
    for fn in fns.values():
        fn(200)  # warm-up (and the Stepper's one-off measurement of its products)
    seconds: Dict[Any, List[float]] = {(name, n): [] for name in fns for n in lengths[name]}
    for _ in range(repeats):
        for (name, n) in seconds:
            start = time.perf_counter()
            fns[name](n)
            seconds[(name, n)].append(time.perf_counter() - start)
    return seconds


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
    weights = step_weights(model)
    step_bytes = sum(w.numel() * w.element_size() for w in weights)
    threads_before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # as `nlptk generate` does
        ceilings = bandwidth(step_bytes, args.repeats)
        products = product_timings(weights, args.repeats, threads=[1, 2])
        torch.set_num_threads(1)
        chosen = Stepper(model.encoder)
        chosen_ways = sorted({way for layer in chosen.layers for way in layer.ways})
        fns = methods(task, model)
        short, long = args.lengths
        lengths = {name: [short] for name in fns}
        lengths[GENERATE] = [short, long]
        fns = {name: fn for name, fn in fns.items() if name not in map(stored_name, SMALLER) or works(fn)}
        for storage in SMALLER:
            if stored_name(storage) in fns:
                lengths[stored_name(storage)] = [short, long]
        with torch.no_grad():
            seconds = generation_timings(fns, lengths, args.repeats)
    finally:
        torch.set_num_threads(threads_before)

    baseline = statistics.median(seconds[("nn.LSTM per token (hand-written baseline)", short)])
    rows: List[Dict[str, Any]] = []
    for (name, n), values in seconds.items():
        median = statistics.median(values)
        rows.append({"method": name, "chars": n, "median_seconds": median, "chars_per_second": n / median,
                     "speedup_vs_baseline": (baseline / short) / (median / n), "all_seconds": values})
    ours = [r for r in rows if r["method"] == GENERATE]
    product_rows = [{"way": way, "threads": n, "step_ms": t * 1e3, "steps_per_second": 1 / t, "gb_per_s": step_bytes / t / 1e9}
                    for (way, n), t in sorted(products.items(), key=lambda kv: (kv[0][1], kv[1]))]
    result = {
        **environment(),
        **cpu(),
        "generation_threads": 1,
        "model": "trained run " + args.run if args.run else f"{args.recipe} (random weights)",
        "repeats": args.repeats,
        "step_megabytes": step_bytes / 1e6,
        **ceilings,
        "read_ceiling_steps_per_second": ceilings["read_gb_per_s"] * 1e9 / step_bytes,
        "copy_ceiling_steps_per_second": ceilings["copy_gb_per_s"] / 2 * 1e9 / step_bytes,
        "products": product_rows,
        "stepper_ways": chosen_ways,
        "rows": rows,
        "time_ratio": ours[1]["median_seconds"] / ours[0]["median_seconds"],
        "length_ratio": long / short,
        "min_chars_per_second": min(r["chars_per_second"] for r in ours),
        "min_chars_per_second_by_weights": {
            storage: min(r["chars_per_second"] for r in rows if r["method"] == (GENERATE if storage == "fp32" else stored_name(storage)))
            for storage in ["fp32"] + SMALLER if any(r["method"] == stored_name(storage) for r in rows) or storage == "fp32"
        },
        "target_chars_per_second": TARGET_CHARS_PER_SECOND,
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"generation at batch 1, temperature {TEMPERATURE}: {result['model']}")
    print(f"machine: {result['machine']}, torch {result['torch']}, generation on 1 thread, medians of {args.repeats}")
    print(cpu_line(result) + "\n")
    print(f"one step reads {result['step_megabytes']:.1f} MB of fp32 weights. Ceilings (1 thread): "
          f"256 MB copy {result['copy_gb_per_s']:.1f} GB/s (read+write) = {result['copy_ceiling_steps_per_second']:,.0f} steps/s "
          f"from main memory; reading a {result['step_megabytes']:.0f} MB buffer {result['read_gb_per_s']:.1f} GB/s "
          f"= {result['read_ceiling_steps_per_second']:,.0f} steps/s\n")
    print(markdown_table(
        ["one step's products, made by (fp16, int8: FBGEMM, weights stored so)", "threads", "ms a step", "steps/s", "GB/s (fp32 bytes)"],
        [[r["way"] + (" (chosen)" if r["way"] in chosen_ways and r["threads"] == 1 else ""), r["threads"],
          f"{r['step_ms']:.3f}", f"{r['steps_per_second']:,.0f}", f"{r['gb_per_s']:.1f}"] for r in product_rows],
    ))
    print()
    print(markdown_table(
        ["method", "chars", "median seconds", "chars/s", "speed vs nn.LSTM loop"],
        [[r["method"], f"{r['chars']:,}", f"{r['median_seconds']:.3f}", f"{r['chars_per_second']:,.0f}",
          f"{r['speedup_vs_baseline']:.2f}x"] for r in rows],
    ))
    met = result["min_chars_per_second"] >= TARGET_CHARS_PER_SECOND
    print(f"\nthe Stepper chose: {', '.join(chosen_ways)}")
    for storage, speed in result["min_chars_per_second_by_weights"].items():
        print(f"weights {storage}: slowest {speed:,.0f} chars/s, target {'met' if speed >= TARGET_CHARS_PER_SECOND else 'NOT met'}")
    print(f"nlptk generate: {long:,} / {short:,} chars take {result['time_ratio']:.2f}x the time (linear: {long / short:.0f}x); "
          f"target >= {TARGET_CHARS_PER_SECOND:,} chars/s: {'met' if met else 'NOT met'}")


if __name__ == "__main__":
    main()
