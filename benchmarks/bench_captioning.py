"""The captioning recipe against a logistic regression on the same pixels, in the same run.

The digit captions are a function of the digit, so exact caption match is
digit recognition through a decoder. The baseline is scikit-learn's
``LogisticRegression`` (defaults, more iterations) trained on the same
training pixels with the caption as the class; its accuracy on validation is
its exact caption match. Each seed trains the recipe as `nlptk run` does and
reports the final validation metrics (not the best epoch's, which validation
itself chose) and the wall time of training.

    pip install -e ".[bench]"                              # scikit-learn, for the baseline
    python benchmarks/bench_captioning.py                  # markdown table, recipe seed
    python benchmarks/bench_captioning.py --seeds 13 1 2   # spread over seeds
    python benchmarks/bench_captioning.py --json           # one JSON object
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

from common import environment, markdown_table
from nlptoolkit.data.sources import load_splits
from nlptoolkit.recipe import load_recipe
from nlptoolkit.runs import train

REPO = Path(__file__).resolve().parents[1]


def logistic_regression(recipe_path: str) -> Dict[str, Any]:
    """Fit on the recipe's training pixels, score exact caption match on its validation split."""
    from sklearn.linear_model import LogisticRegression

    recipe = load_recipe(recipe_path)
    opts = recipe.task_options
    splits = load_splits(recipe.data, recipe.seed)

    def xy(split: str):
        rows = splits[split]
        return np.asarray(rows[opts.features_field], dtype=np.float64), np.asarray(rows[opts.caption_field])

    (x_train, y_train), (x_val, y_val) = xy("train"), xy("validation")
    start = time.perf_counter()
    model = LogisticRegression(max_iter=5000).fit(x_train, y_train)
    seconds = time.perf_counter() - start
    return {"exact_match": float((model.predict(x_val) == y_val).mean()), "train_seconds": seconds}


def recipe_run(recipe_path: str, seed: int, overrides: List[str]) -> Dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        summary = train(recipe_path, [f"seed={seed}", *overrides], output_dir=f"{tmp}/run", quiet=True)
        wall = time.perf_counter() - start
    final = summary["final"]
    return {"seed": seed, "exact_match": final["exact_match"], "bleu": final["bleu"], "loss": final["loss"],
            "train_seconds": summary["train_seconds"], "wall_seconds": wall, "steps": summary["steps"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default=str(REPO / "recipes" / "captioning.yaml"))
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds to train (default: the recipe's)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="recipe override (repeatable)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args()

    seeds = args.seeds or [load_recipe(args.recipe).seed]
    runs = [recipe_run(args.recipe, seed, args.overrides) for seed in seeds]
    baseline = logistic_regression(args.recipe)
    result = {"environment": environment(), "recipe": args.recipe, "overrides": args.overrides, "runs": runs,
              "median_exact_match": statistics.median(r["exact_match"] for r in runs),
              "logistic_regression": baseline}
    if args.json:
        print(json.dumps(result))
        return
    env = result["environment"]
    print(f"{env['machine']}; torch {env['torch']}; {env['threads']} threads; validation split")
    rows = [[f"recipe, seed {r['seed']}", f"{r['exact_match']:.4f}", f"{r['bleu']:.2f}", f"{r['train_seconds']:.1f}", f"{r['wall_seconds']:.1f}"]
            for r in runs]
    rows.append(["logistic regression (same pixels)", f"{baseline['exact_match']:.4f}", "", f"{baseline['train_seconds']:.1f}", ""])
    print(markdown_table(["model", "exact match", "BLEU", "train s", "wall s"], rows))
    print(f"median exact match over {len(runs)} seed(s): {result['median_exact_match']:.4f}")


if __name__ == "__main__":
    main()
