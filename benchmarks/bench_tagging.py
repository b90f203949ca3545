"""Tagging quality: the bundled POS and NER recipes against baselines measured in the same run.

Rows (validation splits; the test splits are held back):

* POS: the most-frequent-tag baseline (each word gets the tag it has most
  often in training; an unseen word gets the most frequent tag overall, or in
  the second row a tag from its lowercase form or its spelling: digits CD,
  capital NNP, -ing VBG, -ed VBN, -ly RB, -s NNS, else NN), then
  ``nlptk run recipes/pos.yaml``.
* NER: the same most-frequent-tag baseline, then ``recipes/ner.yaml`` as
  shipped (character features + CRF) and three ablations through ``--set``:
  without character features, without the CRF (softmax), without both.

Each recipe runs through the real CLI in its own process (one at a time) and
is read back from its run folder's ``summary.json``: the best validation
metrics and the training seconds. Wall seconds include data loading.

    python benchmarks/bench_tagging.py                 # markdown table
    python benchmarks/bench_tagging.py --json          # {"rows": [...]}
    python benchmarks/bench_tagging.py --only pos      # one group
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Dict, List, Sequence

from common import environment, markdown_table

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("NLPTK_DATA", REPO.parent / "shared" / "data"))

RUNS = {
    "pos": [("recipes/pos.yaml (char features, softmax)", "recipes/pos.yaml", [])],
    "ner": [
        ("recipes/ner.yaml (char features + CRF)", "recipes/ner.yaml", []),
        ("ner, no char features (CRF)", "recipes/ner.yaml", ["task.char_encoder=null"]),
        ("ner, no CRF (char features, softmax)", "recipes/ner.yaml", ["task.decoder=softmax"]),
        ("ner, neither (words only, softmax)", "recipes/ner.yaml", ["task.char_encoder=null", "task.decoder=softmax"]),
    ],
}
FOLDERS = {"pos": "pos_wsj", "ner": "ner_tweets"}


def read(path: Path) -> List[Dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def spelling_rule(word: str) -> str:
    """A Penn Treebank tag guessed from an unseen word's spelling (a textbook unknown-word rule)."""
    if any(c.isdigit() for c in word):
        return "CD"
    if word[0].isupper():
        return "NNP"
    for suffix, tag in (("ing", "VBG"), ("ed", "VBN"), ("ly", "RB"), ("s", "NNS")):
        if word.endswith(suffix):
            return tag
    return "NN"


def most_frequent_tag(group: str, rules: bool = False) -> Dict[str, Any]:
    """Accuracy (and for BIO tags seqeval's entity f1) of tagging each word with its most frequent training tag.

    An unseen word gets the most frequent tag overall, or with ``rules`` the
    most frequent tag of its lowercase form, else :func:`spelling_rule`.
    """
    folder = DATA / "tagging" / FOLDERS[group]
    by_word: Dict[str, Counter] = defaultdict(Counter)
    by_lower: Dict[str, Counter] = defaultdict(Counter)
    overall: Counter = Counter()
    for row in read(folder / "train.jsonl"):
        for word, tag in zip(row["tokens"], row["tags"]):
            by_word[word][tag] += 1
            by_lower[word.lower()][tag] += 1
            overall[tag] += 1
    fallback = overall.most_common(1)[0][0]

    def guess(word: str) -> str:
        if word in by_word:
            return by_word[word].most_common(1)[0][0]
        if not rules:
            return fallback
        if word.lower() in by_lower:
            return by_lower[word.lower()].most_common(1)[0][0]
        return spelling_rule(word)

    gold, predicted = [], []
    for row in read(folder / "validation.jsonl"):
        gold.append(row["tags"])
        predicted.append([guess(w) for w in row["tokens"]])
    total = sum(len(g) for g in gold)
    result: Dict[str, Any] = {"accuracy": sum(p == g for ps, gs in zip(predicted, gold) for p, g in zip(ps, gs)) / total}
    if group == "ner":
        from seqeval.metrics import f1_score

        result["f1"] = float(f1_score(gold, predicted, zero_division=0))
    return result


def run_recipe(recipe: str, overrides: Sequence[str], folder: Path) -> Dict[str, Any]:
    args = [sys.executable, "-m", "nlptoolkit.cli", "run", recipe, "--output-dir", str(folder), "--quiet"]
    args += [a for o in overrides for a in ("--set", o)]
    start = time.perf_counter()
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    summary = json.loads((folder / "summary.json").read_text())
    best = summary["best"].get("metrics") or summary["final"]
    return {
        "accuracy": best["accuracy"], "f1": best.get("f1"), "precision": best.get("precision"), "recall": best.get("recall"),
        "best_step": summary["best"]["step"], "steps": summary["steps"], "epochs": summary["epochs"],
        "train_seconds": summary["train_seconds"], "wall_seconds": round(wall, 1), "precision_mode": summary.get("precision"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--only", choices=sorted(RUNS), nargs="*", default=sorted(RUNS, reverse=True))
    parser.add_argument("--jobs", type=int, default=1, help="recipe runs at once (their times then include each other's load)")
    args = parser.parse_args()
    rows: List[Dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(args.jobs) as pool:
        for group in args.only:
            rows.append({"group": group, "name": f"{group}: most frequent tag per word, unseen words the commonest tag (baseline)", **most_frequent_tag(group)})
            if group == "pos":
                rows.append({"group": group, "name": "pos: most frequent tag per word, unseen words by spelling rules (baseline)", **most_frequent_tag(group, rules=True)})
            runs = [(name, pool.submit(run_recipe, recipe, overrides, Path(tmp) / f"{group}{i}")) for i, (name, recipe, overrides) in enumerate(RUNS[group])]
            for name, future in runs:
                rows.append({"group": group, "name": name, **future.result(), "jobs": args.jobs})
                print(f"done: {name}", file=sys.stderr, flush=True)
    env = environment()
    if args.json:
        print(json.dumps({**env, "rows": rows}))
        return
    print(f"{env['machine']}; torch {env['torch']}; {env['threads']} threads")
    print()

    def show(v: Any) -> str:
        return "" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)

    print(markdown_table(
        ["run", "accuracy", "entity f1", "precision", "recall", "best at step / steps", "train s", "wall s"],
        [[r["name"], show(r["accuracy"]), show(r.get("f1")), show(r.get("precision")), show(r.get("recall")),
          f"{r['best_step']} / {r['steps']}" if "steps" in r else "", show(r.get("train_seconds")), show(r.get("wall_seconds"))] for r in rows],
    ))


if __name__ == "__main__":
    main()
