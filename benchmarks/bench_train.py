"""`nlptk run` training throughput against a hand-written PyTorch loop.

Both train the same model (same initial weights) on the same batches from the
task's own pipeline with the same optimizer; the hand-written loop is the bare
minimum (forward, loss, backward, clip, step; the forward under bf16 autocast
when the recipe's ``train.precision`` resolves to bf16 on this machine). What `nlptk run` adds on top is
the trainer: progress bars, bookkeeping, the evaluation and checkpoints at the
end. Validation is cut to a few examples so that the comparison is about the
training loop. Runs alternate; the table gives medians.

    python benchmarks/bench_train.py             # markdown table
    python benchmarks/bench_train.py --json      # {"rows": [{"run_vs_handwritten": ...}]}
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Tuple

import torch

from common import environment, header, markdown_table, median, timed
from nlptoolkit.data.sources import load_splits
from nlptoolkit.precision import choose_precision
from nlptoolkit.recipe import load_recipe
from nlptoolkit.runs import make_task
from nlptoolkit.trainer import Trainer, fused_adam, seed_everything

CASES = {
    "sentiment": ("recipes/sentiment.yaml", 60),
    "char_lm": ("recipes/char_lm.yaml", 40),
    "tagging": ("recipes/ner.yaml", 60),  # BiLSTM + char BiLSTM over each batch's words + CRF
}


def prepare(recipe_path: str, steps: int) -> Tuple[Any, List[Any], List[Any]]:
    overrides = [f"train.max_steps={steps}", "train.epochs=1000", "train.max_minutes=null", "train.eval_every=null"]
    recipe = load_recipe(recipe_path, overrides)
    seed_everything(recipe.seed)
    task = make_task(recipe, None)
    splits = load_splits(recipe.data, recipe.seed, task.shuffle_split)
    task.setup(splits["train"])
    train = task.encode(splits["train"], "train")
    validation = task.encode(splits["validation"], "validation")
    return task, train, validation[: max(1, len(validation) // 500)]


def fresh_model(task: Any) -> torch.nn.Module:
    seed_everything(task.recipe.seed)
    return task.build_model().to(task.device)


def handwritten(task: Any, train: List[Any], steps: int) -> None:
    model = fresh_model(task)
    cfg = task.recipe.train
    optimizer = fused_adam(torch.optim.Adam, list(model.parameters()), lr=cfg.lr)  # the optimizer the trainer uses
    bf16 = choose_precision(cfg.precision, task.device).used == "bf16"  # what the trainer picks, too
    task.on_epoch_start(0)
    for i, batch in enumerate(task.batches(train, train=True, epoch=0)):
        if i == steps:
            break
        with torch.autocast(task.device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = task.training_step(model, task.to_device(batch))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()


def with_trainer(task: Any, train: List[Any], validation: List[Any]) -> None:
    model = fresh_model(task)
    with tempfile.TemporaryDirectory() as folder:
        task.run_dir = Path(folder)
        Trainer(task, model, Path(folder), quiet=True, log=lambda s: None).fit(train, validation)


def tokens_in(task: Any, train: List[Any], steps: int) -> int:
    total = 0
    for i, batch in enumerate(task.batches(train, train=True, epoch=0)):
        if i == steps:
            break
        total += task.count_tokens(batch)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--cases", nargs="*", default=list(CASES))
    args = parser.parse_args()
    env = environment()
    rows: List[Dict[str, Any]] = []
    for name in args.cases:
        recipe_path, steps = CASES[name]
        task, train, validation = prepare(recipe_path, steps)
        tokens = tokens_in(task, train, steps)
        ours, theirs = [], []
        with_trainer(task, train, validation)  # warm-up
        for _ in range(args.repeats):
            theirs.append(tokens / timed(lambda: handwritten(task, train, steps)))
            ours.append(tokens / timed(lambda: with_trainer(task, train, validation)))
        rows.append({
            "name": name, "steps": steps, "tokens": tokens,
            "run_tokens_per_s": median(ours), "handwritten_tokens_per_s": median(theirs),
            "run_vs_handwritten": median(ours) / median(theirs),
        })
    if args.json:
        print(json.dumps({**env, "repeats": args.repeats, "rows": rows}))
        return
    print(header(env, args.repeats))
    print()
    print(markdown_table(
        ["task", "steps", "nlptk run tokens/s", "hand-written tokens/s", "run / hand-written"],
        [[r["name"], r["steps"], r["run_tokens_per_s"], r["handwritten_tokens_per_s"], r["run_vs_handwritten"]] for r in rows],
    ))


if __name__ == "__main__":
    main()
