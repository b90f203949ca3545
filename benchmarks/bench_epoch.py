"""One full training epoch on the real sentiment data: bucketed batches through
RNNEncoder against the lecture's recipe (random batches, padded to the batch
maximum, packed with pack_padded_sequence through nn.LSTM).

Both use the same vocabulary, sizes (bidirectional LSTM, embedding 128,
hidden 128), batch size and optimizer. The table gives each epoch's padding
fraction (share of padded tokens in its batches), median seconds and tokens/s.

    python benchmarks/bench_epoch.py [--repeats 5] [--json]
"""
from __future__ import annotations

import argparse
import json
from typing import Any, Dict, List

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from common import environment, header, markdown_table, median, timed
from nlptoolkit.data.batching import BucketSampler
from nlptoolkit.data.sources import load_splits
from nlptoolkit.recipe import load_recipe
from nlptoolkit.runs import make_task
from nlptoolkit.trainer import fused_adam, seed_everything


class PackedClassifier(nn.Module):
    """The lecture's model: embedding, packed bidirectional LSTM, linear."""

    def __init__(self, vocab: int, emb: int, hidden: int, labels: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, emb, padding_idx=0)
        self.lstm = nn.LSTM(emb, hidden, batch_first=True, bidirectional=True)
        self.classify = nn.Linear(2 * hidden, labels)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = pack_padded_sequence(self.embedding(tokens), lengths, batch_first=True, enforce_sorted=False)
        _, (h, _) = self.lstm(packed)
        return self.classify(torch.cat([h[-2], h[-1]], dim=-1))


def epoch(model: nn.Module, task: Any, train: List[Any], bucket: bool) -> None:
    cfg = task.recipe.train
    optimizer = fused_adam(torch.optim.Adam, list(model.parameters()), lr=cfg.lr)  # the optimizer the trainer uses
    sampler = BucketSampler([task.length(e) for e in train], cfg.batch_size, shuffle=True, bucket=bucket, seed=task.recipe.seed)
    for indices in sampler:
        batch = task.collate([train[i] for i in indices])
        loss = F.cross_entropy(model(batch["tokens"], batch["lengths"]), batch["labels"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    recipe = load_recipe("recipes/sentiment.yaml", ["encoder.dropout=0.0", "task.dropout=0.0"])
    seed_everything(recipe.seed)
    task = make_task(recipe, None)
    splits = load_splits(recipe.data, recipe.seed)
    task.setup(splits["train"])
    train = task.encode(splits["train"], "train")
    tokens = sum(task.length(e) for e in train)
    enc = recipe.encoder

    def ours() -> nn.Module:
        seed_everything(recipe.seed)
        return task.build_model()

    def lecture() -> nn.Module:
        seed_everything(recipe.seed)
        return PackedClassifier(len(task.vocab), enc.embedding_dim, enc.hidden_size, len(task.labels))

    methods = {"bucketed + RNNEncoder (nlptk)": (ours, True), "random + pack_padded_sequence (lecture)": (lecture, False)}
    times: Dict[str, List[float]] = {name: [] for name in methods}
    for _ in range(args.repeats):
        for name, (build, bucket) in methods.items():
            model = build()
            times[name].append(timed(lambda: epoch(model, task, train, bucket)))
    rows = []
    for name, (_, bucket) in methods.items():
        sampler = BucketSampler([task.length(e) for e in train], recipe.train.batch_size, bucket=bucket, seed=recipe.seed)
        seconds = median(times[name])
        rows.append({"name": name, "padding_fraction": sampler.padding_fraction(), "seconds": seconds, "tokens_per_s": tokens / seconds})
    speedup = rows[1]["seconds"] / rows[0]["seconds"]
    if args.json:
        print(json.dumps({**environment(), "repeats": args.repeats, "rows": rows, "bucketed_speedup": speedup}))
        return
    print(header(environment(), args.repeats))
    print(f"sentiment train split: {len(train)} sentences, {tokens} tokens, batch {recipe.train.batch_size}\n")
    print(markdown_table(
        ["batches", "padding fraction", "epoch seconds", "tokens/s"],
        [[r["name"], f"{r['padding_fraction']:.1%}", r["seconds"], r["tokens_per_s"]] for r in rows],
    ))
    print(f"\nbucketed epoch is {speedup:.2f}x faster")


if __name__ == "__main__":
    main()
