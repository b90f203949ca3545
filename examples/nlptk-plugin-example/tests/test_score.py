"""Tests of the `score` task: it learns, its metrics are right, bad data gets a clear error.

Run them with the package installed (`pip install -e .`, which declares the
entry point nlptk finds the task by): `pytest tests`.
"""
from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

import nlptoolkit

WORDS = {"great": 2.0, "fine": 1.0, "dull": -1.0, "awful": -2.0}
FILLER = ["the", "film", "is", "a", "plot", "very", "and"]


def write_rows(path: Path, n: int, seed: int) -> list:
    """Texts whose score is the sum of the scores of their rated words (the filler words score 0)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        rated = rng.choices(list(WORDS), k=rng.randint(1, 2))
        words = rated + rng.choices(FILLER, k=rng.randint(1, 5))
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "score": sum(WORDS[w] for w in rated)})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return rows


def recipe(tmp_path: Path, **train) -> dict:
    write_rows(tmp_path / "train.jsonl", 400, seed=1)
    write_rows(tmp_path / "validation.jsonl", 100, seed=2)
    return {
        "name": "score-test",
        "task": {"name": "score", "dropout": 0.0},
        "seed": 1,
        "device": "cpu",
        "data": {"files": {"train": str(tmp_path / "train.jsonl"), "validation": str(tmp_path / "validation.jsonl")}},
        "encoder": {"cell": "gru", "embedding_dim": 16, "hidden_size": 16, "bidirectional": True},
        "train": {"lr": 0.02, "batch_size": 16, "epochs": 4, "precision": "fp32", **train, "early_stopping": {"metric": "rmse"}},
    }


def test_learns_the_scores_and_reports_the_baseline(tmp_path: Path) -> None:
    run = nlptoolkit.train(recipe(tmp_path), output_dir=tmp_path / "run", quiet=True)
    metrics = run.evaluate()
    scores = [json.loads(line)["score"] for line in (tmp_path / "validation.jsonl").read_text().splitlines()]
    mean = sum(json.loads(line)["score"] for line in (tmp_path / "train.jsonl").read_text().splitlines()) / 400
    assert metrics["baseline_rmse"] == pytest.approx(math.sqrt(sum((s - mean) ** 2 for s in scores) / len(scores)), rel=1e-5)
    assert metrics["rmse"] < 0.5 * metrics["baseline_rmse"], metrics
    assert run.summary["best"]["metric"] == "rmse"  # early stopping picked the lowest rmse (lower_is_better)

    results = run.predict(["great great film", "awful plot"])
    assert [r["input"] for r in results] == ["great great film", "awful plot"]
    assert results[0]["score"] > 2 and results[1]["score"] < -1, results
    assert run.format_prediction(results[1]).endswith("\tawful plot")


def test_a_score_that_is_not_a_number_is_a_one_line_error(tmp_path: Path) -> None:
    r = recipe(tmp_path)
    with open(tmp_path / "train.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"text": "great", "score": None}) + "\n")
    with pytest.raises(nlptoolkit.NlptkError, match=r"train.jsonl \(data.files.train\), row 401: field 'score' is None"):
        nlptoolkit.train(r, output_dir=tmp_path / "run", quiet=True)
