"""Decoding speed of a trained G2P model: batched greedy and beam search against a
hand-written beam search that decodes one word at a time.

All three use the same trained model (``--run``, default runs/g2p, made by
``nlptk run recipes/g2p.yaml``) and its frozen decoder (a Stepper inside), on
CMUdict validation words:

- ``greedy, batched``: ``nlptk predict --beam 1``'s code path (``task.predict``),
  the words length-bucketed into batches of ``train.batch_size``;
- ``beam 5, batched``: the same with ``--beam 5`` (``nlptoolkit.search.beam_search``:
  every word's 5 beams advance together in one batch);
- ``beam 5, one word at a time``: the loop a lecture writes: for each word, keep a
  list of (tokens, score, state) beams, step the live beams as one small batch,
  expand each by its 5 best tokens, keep the 5 best, set aside those that end.
  It runs on the first ``--baseline-words`` words (it is slow) and the table
  says how often its output agrees with the batched beam search.

Target (issue 11): beam 5 >= 300 words/s batched on 2 CPU cores; greedy faster.
One warm-up, then ``--repeats`` rounds interleaving the methods; medians.
Besides wall time the table gives words per CPU second of this process
(``time.process_time``): on shared cores that number does not move with the
neighbours' load, and with one thread it is what one idle core would do.

    python benchmarks/bench_decode.py --run runs/g2p
    python benchmarks/bench_decode.py --run runs/g2p --json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, List, Tuple

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import environment, header, markdown_table, median, timed  # noqa: E402


def one_word_beam_search(task: Any, model: Any, word: str, k: int = 5) -> List[int]:
    """A plain beam search for one word (the baseline): no batching across words."""
    v = task.tgt_vocab
    ids = task.src_vocab.encode(task.src_tok.tokenize(word)) or [task.src_vocab.unk_id]
    src = torch.tensor([ids], device=task.device)
    lengths = torch.tensor([len(ids)], device=task.device)
    options = task.search_options(len(ids))
    memory = model.encode(src, lengths)
    state = model.init_state(memory)
    beams: List[Tuple[List[int], float]] = [([], 0.0)]
    finished: List[Tuple[List[int], float]] = []
    order = torch.zeros(1, dtype=torch.long, device=task.device)
    for t in range(options.max_length):
        state, beam_memory = model.reorder(state, memory, order)
        prev = torch.tensor([b[0][-1] if b[0] else v.bos_id for b in beams], device=task.device)
        log_probs, state, _ = model.step(prev, state, beam_memory)
        log_probs[:, [v.pad_id, v.bos_id]] = float("-inf")
        if t == options.max_length - 1:
            keep = log_probs[:, v.eos_id].clone()
            log_probs.fill_(float("-inf"))
            log_probs[:, v.eos_id] = keep
        candidates = []
        top_lp, top_id = log_probs.topk(k, dim=1)
        for i, (tokens, score) in enumerate(beams):
            for lp, y in zip(top_lp[i].tolist(), top_id[i].tolist()):
                candidates.append((score + lp, i, y))
        candidates.sort(key=lambda c: -c[0])
        beams_next, rows = [], []
        for score, i, y in candidates:
            if y == v.eos_id:
                finished.append((beams[i][0], score))
            else:
                beams_next.append((beams[i][0] + [y], score))
                rows.append(i)
            if len(beams_next) == k:
                break
        if len(finished) >= k or not beams_next:
            break
        beams = beams_next
        order = torch.tensor(rows, device=task.device)
        state, _ = model.reorder(state, None, order)
        order = torch.zeros(len(rows), dtype=torch.long, device=task.device)  # the memory of one word
    return max(finished, key=lambda f: f[1])[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", default="runs/g2p", help="a trained G2P run folder")
    parser.add_argument("--words", type=int, default=None, help="validation words to decode batched (default: all)")
    parser.add_argument("--baseline-words", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from nlptoolkit.data.sources import load_splits
    from nlptoolkit.errors import NlptkError
    from nlptoolkit.runs import load_run

    try:
        recipe, task, model = load_run(args.run)
    except NlptkError as exc:
        sys.exit(f"error: {exc} (train one with `nlptk run recipes/g2p.yaml`)")
    data = load_splits(recipe.data, recipe.seed, task.shuffle_split)["validation"]
    words = list(data[task.options.source_field])[: args.words]
    baseline_words = words[: args.baseline_words]

    def batched(beam: int) -> Any:
        task.set_decoding(beam_size=beam)
        return task.predict(model, words)

    def one_at_a_time() -> List[List[int]]:
        with model.decoder.frozen():
            return [one_word_beam_search(task, model, w) for w in baseline_words]

    batched(1), batched(5), one_at_a_time()  # warm-up
    times = {"greedy, batched": [], "beam 5, batched": [], "beam 5, one word at a time": []}
    cpu = {name: [] for name in times}
    methods = {"greedy, batched": lambda: batched(1), "beam 5, batched": lambda: batched(5), "beam 5, one word at a time": one_at_a_time}
    for _ in range(args.repeats):
        for name, fn in methods.items():
            start = time.process_time()
            times[name].append(timed(fn))
            cpu[name].append(time.process_time() - start)
    counts = {"greedy, batched": len(words), "beam 5, batched": len(words), "beam 5, one word at a time": len(baseline_words)}

    beam_out = batched(5)[: len(baseline_words)]
    with model.decoder.frozen():
        plain = [" ".join(task.tgt_vocab.decode(one_word_beam_search(task, model, w))) for w in baseline_words]
    agree = sum(p == r["output"] for p, r in zip(plain, beam_out)) / len(baseline_words)

    env = environment(str(task.device))
    rows = []
    result = {"environment": env, "run": args.run, "agreement_one_at_a_time_vs_batched": agree, "methods": {}}
    base_rate = counts["beam 5, one word at a time"] / median(times["beam 5, one word at a time"])
    base_cpu_rate = counts["beam 5, one word at a time"] / median(cpu["beam 5, one word at a time"])
    for name, ts in times.items():
        rate, cpu_rate = counts[name] / median(ts), counts[name] / median(cpu[name])
        result["methods"][name] = {
            "words": counts[name], "median_seconds": median(ts), "words_per_second": rate,
            "median_cpu_seconds": median(cpu[name]), "words_per_cpu_second": cpu_rate,
        }
        rows.append([name, counts[name], median(ts), rate, rate / base_rate, cpu_rate, cpu_rate / base_cpu_rate])
    if args.json:
        print(json.dumps(result))
        return
    print(header(env, args.repeats))
    print(markdown_table(["method", "words", "seconds (median)", "words/s", "vs one at a time", "words/CPU-s", "vs one at a time (CPU)"], rows))
    print(f"\nthe one-word-at-a-time beam search gives the batched beam search's output for {agree:.1%} of its words")


if __name__ == "__main__":
    main()
