"""`nlptk run --nproc 2` (DDP on gloo) takes the same steps as one process with the same global batch."""
from __future__ import annotations

import torch

from nlptoolkit.checkpoint import load_checkpoint


def test_two_processes_match_one_process(tmp_path, tiny_sentiment, run_cli):
    # 60 rows / global batch 8: 7 batches of 8 and one of 4, all split evenly; no dropout, so the two
    # runs differ only in how each global batch's gradient is computed.
    common = ["--set", "train.max_steps=10", "--set", "train.epochs=2", "--set", "task.dropout=0.0",
              "--set", "train.batch_size=8", "--set", "train.lr=0.01", "--quiet"]
    code, out, err = run_cli(["run", tiny_sentiment.recipe, "--output-dir", tmp_path / "one", *common], cwd=tmp_path)
    assert code == 0, err
    code, out, err = run_cli(["run", tiny_sentiment.recipe, "--output-dir", tmp_path / "two", "--nproc", "2", *common], cwd=tmp_path)
    assert code == 0, err
    one = load_checkpoint(tmp_path / "one" / "last.pt")
    two = load_checkpoint(tmp_path / "two" / "last.pt")
    assert one["train_state"]["step"] == two["train_state"]["step"] == 10
    for name, weight in one["model"].items():
        # Adam divides by sqrt(v): float sums in another order move weights by ~1e-5.
        assert torch.allclose(weight, two["model"][name], atol=1e-4), name
    import json

    assert json.loads((tmp_path / "two" / "summary.json").read_text())["processes"] == 2
    # Only rank 0 wrote: one metrics line per evaluation, not one per process.
    lines_one = (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()
    lines_two = (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()
    assert len(lines_one) == len(lines_two)
