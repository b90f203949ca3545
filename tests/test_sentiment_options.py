"""The classifier's training options: an ensemble of members, and a graded score learned alongside the label.

Each is checked against an independent computation: the members' own
probabilities averaged by hand, each member's gradient when it is trained
alone, and the score loss written out from the data's own column.
"""
from __future__ import annotations

import statistics
from pathlib import Path

import datasets
import pytest
import torch
import torch.nn.functional as F

import nlptoolkit
from conftest import one_line_error, real_rows, write_jsonl


def tiny(base: Path, task: dict, rows: int = 60) -> nlptoolkit.Run:
    """A few steps of a tiny classifier on real rows (which carry a `score`: the mean human rating)."""
    files = {"train": str(write_jsonl(base / "train.jsonl", real_rows("train", 0, rows))),
             "validation": str(write_jsonl(base / "validation.jsonl", real_rows("validation", 0, 20)))}
    recipe = {
        "name": "t", "seed": 3, "device": "cpu", "task": {"name": "sentiment", "pooling": "max", **task},
        "data": {"files": files, "tokenizer": {"kind": "word", "lowercase": True}},
        "encoder": {"cell": "lstm", "embedding_dim": 8, "hidden_size": 8, "bidirectional": True},
        "train": {"max_steps": 4, "epochs": 1, "batch_size": 8, "lr": 0.05, "precision": "fp32"},
    }
    nlptoolkit.train(recipe, output_dir=base / "run", quiet=True)
    return nlptoolkit.load(base / "run")


def batch_of(run: nlptoolkit.Run, rows) -> dict:
    return run.task.collate(run.task.encode(datasets.Dataset.from_list(rows), "validation"))


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory, shared_data) -> nlptoolkit.Run:
    return tiny(tmp_path_factory.mktemp("ensemble"), {"ensemble": 3})


def test_ensemble_predicts_the_mean_of_its_members_probabilities(ensemble):
    model, rows = ensemble.model, real_rows("validation", 20, 40)
    members = list(model.members)
    assert len(members) == 3
    first = [p.detach().clone() for p in members[0].parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(first, members[1].parameters()))  # each member its own weights
    batch = batch_of(ensemble, rows)
    with torch.no_grad():
        by_hand = torch.stack([m(batch["tokens"], batch["lengths"]).softmax(-1) for m in members]).mean(0)
        combined = model(batch["tokens"], batch["lengths"]).softmax(-1)
    assert torch.allclose(combined, by_hand, atol=1e-6)
    predicted = ensemble.predict([r["text"] for r in rows])
    labels = ensemble.task.labels.itos
    assert torch.allclose(torch.tensor([[p["probabilities"][k] for k in labels] for p in predicted]), by_hand, atol=1e-6)


def test_each_member_gets_the_gradient_it_would_get_alone(ensemble):
    model = ensemble.model.eval()  # no dropout: the two computations see the same network
    batch = batch_of(ensemble, real_rows("train", 0, 16))
    model.zero_grad()
    ensemble.task.training_step(model, batch).backward()
    together = [p.grad.clone() for p in model.members[1].parameters()]
    model.zero_grad()
    F.cross_entropy(model.members[1](batch["tokens"], batch["lengths"]), batch["labels"]).backward()
    for a, b in zip(together, model.members[1].parameters()):
        assert torch.allclose(a, b.grad, atol=1e-7)


def test_score_is_learned_standardised_alongside_the_label(tmp_path, shared_data):
    run = tiny(tmp_path, {"score_field": "score", "score_weight": 0.5})
    scores = [r["score"] for r in real_rows("train", 0, 60)]
    mean, std = run.task.score_scale
    assert mean == pytest.approx(statistics.fmean(scores)) and std == pytest.approx(statistics.pstdev(scores))
    rows = real_rows("validation", 0, 16)
    batch = batch_of(run, rows)
    model = run.model.eval()
    with torch.no_grad():
        summary = model.summarise(batch["tokens"], batch["lengths"])
        target = torch.tensor([(r["score"] - mean) / std for r in rows])
        by_hand = F.cross_entropy(model.classify(summary), batch["labels"]) + 0.5 * ((model.score(summary).squeeze(-1) - target) ** 2).mean()
        assert float(run.task.training_step(model, batch)) == pytest.approx(float(by_hand), rel=1e-6)
    assert nlptoolkit.load(run.path).task.score_scale == (mean, std)  # kept in the run folder


def test_a_missing_score_is_a_one_line_error(tmp_path, shared_data, cli):
    rows = real_rows("train", 0, 30)
    rows[7] = {**rows[7], "score": None}
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    validation = write_jsonl(tmp_path / "validation.jsonl", real_rows("validation", 0, 10))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"""name: t
task: {{name: sentiment, score_field: score}}
device: cpu
data: {{files: {{train: {train}, validation: {validation}}}}}
encoder: {{embedding_dim: 8, hidden_size: 8}}
train: {{max_steps: 1, precision: fp32}}
""")
    message = one_line_error(*cli(["run", str(recipe), "--output-dir", str(tmp_path / "run")]))
    assert "train.jsonl (data.files.train), row 8" in message and "'score' is None, not a number" in message


@pytest.mark.slow
def test_the_shipped_recipe_reaches_080(run_cli, tmp_path):
    """One seed of recipes/sentiment.yaml (the README gives the 5-seed mean and spread, and the time)."""
    import json

    from conftest import REPO

    code, out, err = run_cli(["run", REPO / "recipes" / "sentiment.yaml", "--output-dir", tmp_path / "run", "--quiet"], cwd=REPO, timeout=1200)
    assert code == 0, err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["best"]["metrics"]["accuracy"] >= 0.80, summary["best"]
