"""Peak memory of `nlptk run` on a language model over a large text file.

Makes a text file of ``--size-mb`` megabytes (tiny Shakespeare repeated),
trains a small char LM on it for a few steps through the real CLI, and
reports the peak resident memory of that process, once reading the file into
memory-mapped Arrow rows and once streaming it (``data.streaming: true``:
rows read as batches need them, the vocabulary fitted on the first
``data.vocab_sample`` lines). The baseline, measured in
the same run, is the naive data path: read the whole file into one string,
turn it into a Python list of ids and then a tensor. The target is a peak
RSS of at most 2 GB for a 200 MB corpus.

    python benchmarks/bench_large_corpus.py [--size-mb 200] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import environment, markdown_table

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("NLPTK_DATA", REPO.parent / "shared" / "data")) / "lm" / "tiny_shakespeare"

RECIPE = """\
name: large_corpus
task: {{name: language_model, bptt: 100, sample_tokens: 0, eval_streams: 4}}
seed: 1
device: cpu
data:
  files: {{train: {train}, validation: {validation}}}
  tokenizer: {{kind: char}}
encoder: {{cell: lstm, embedding_dim: 32, hidden_size: 128, num_layers: 1}}
train: {{batch_size: 64, epochs: 1, max_steps: {steps}, eval_every: null}}
"""

NAIVE = """\
import sys, torch
text = open(sys.argv[1], encoding="utf-8").read()
stoi = {c: i for i, c in enumerate(sorted(set(text)))}
ids = torch.tensor([stoi[c] for c in text], dtype=torch.long)
print(ids.numel())
"""


MEASURE = "import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, code)"


def peak_rss_mb(command: list, env: dict) -> tuple:
    """Run a command under a fresh parent that reports its child's peak RSS: (MB, seconds, exit code)."""
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", MEASURE, *command], env=env, capture_output=True, text=True).stdout.split()
    return int(out[-2]) / 1024, time.perf_counter() - start, int(out[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        chunk = (DATA / "train.txt").read_text(encoding="utf-8")
        corpus = folder / "corpus.txt"
        with open(corpus, "w", encoding="utf-8") as f:
            for _ in range(-(-args.size_mb * 1_000_000 // len(chunk))):
                f.write(chunk)
        size_mb = corpus.stat().st_size / 1e6
        recipe = folder / "recipe.yaml"
        recipe.write_text(RECIPE.format(train=corpus, validation=DATA / "validation.txt", steps=args.steps), encoding="utf-8")
        env = {**os.environ, "HF_DATASETS_CACHE": str(folder / "hf_cache"), "PYTHONPATH": str(REPO)}
        command = [sys.executable, "-m", "nlptoolkit.cli", "run", str(recipe), "--quiet", "--output-dir"]
        ours = peak_rss_mb([*command, str(folder / "run")], env)
        streamed = peak_rss_mb([*command, str(folder / "streamed"), "--set", "data.streaming=true"], env)
        naive = peak_rss_mb([sys.executable, "-c", NAIVE, str(corpus)], env)
    rows = [
        {"name": "nlptk run (rows from the memory-mapped Arrow table, int32 ids)", "peak_rss_mb": ours[0], "seconds": ours[1], "exit_code": ours[2]},
        {"name": "nlptk run, data.streaming: true (a window of ids at a time)", "peak_rss_mb": streamed[0], "seconds": streamed[1], "exit_code": streamed[2]},
        {"name": "naive: whole string -> list -> tensor (no training)", "peak_rss_mb": naive[0], "seconds": naive[1], "exit_code": naive[2]},
    ]
    result = {**environment(), "corpus_mb": size_mb, "steps": args.steps, "rows": rows, "ours_vs_naive": ours[0] / naive[0], "streamed_vs_naive": streamed[0] / naive[0]}
    if args.json:
        print(json.dumps(result))
        return
    print(f"{result['machine']}; torch {result['torch']}; corpus {size_mb:.0f} MB; {args.steps} training steps (one run each)\n")
    print(markdown_table(["data path", "peak RSS MB", "seconds", "exit code"], [[r["name"], r["peak_rss_mb"], r["seconds"], r["exit_code"]] for r in rows]))


if __name__ == "__main__":
    main()
