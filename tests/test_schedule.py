"""The cosine schedule ends where training ends: at the step horizon, or at max_minutes when the clock runs out first.

A fake clock advances one second per training step, so the time budget is
reached at a known step and the learning rates have a closed form.
"""
from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest

import nlptoolkit.trainer as trainer_module
from nlptoolkit.runs import train

LR = 0.05  # the tiny recipe's


def cosine(progress: float) -> float:
    return LR * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


@pytest.fixture
def one_second_per_step(monkeypatch):
    """perf_counter() reads a clock that only a training step moves (by 1 s)."""
    clock = SimpleNamespace(now=1000.0)
    monkeypatch.setattr(trainer_module, "time", SimpleNamespace(perf_counter=lambda: clock.now))
    real_step = trainer_module.Trainer._step

    def step(self, batch):
        clock.now += 1.0
        return real_step(self, batch)

    monkeypatch.setattr(trainer_module.Trainer, "_step", step)
    return clock


def lrs(run_dir) -> dict:
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return {r["step"]: r["lr"] for r in map(json.loads, lines)}


def test_cosine_follows_max_minutes_when_time_runs_out_first(tiny_sentiment, tmp_path, one_second_per_step):
    """max_minutes 0.4 = 24 one-second steps, long before max_steps 1000: the decay reaches 0 at step 24."""
    sets = ["train.scheduler=cosine", "train.max_steps=1000", "train.epochs=100", "train.max_minutes=0.4", "train.eval_every=6"]
    summary = train(str(tiny_sentiment.recipe), overrides=sets, output_dir=str(tmp_path / "run"), quiet=True)
    assert summary["stopped"] == "max_minutes" and summary["steps"] == 24
    got = lrs(tmp_path / "run")
    assert sorted(got) == [6, 12, 18, 24]
    for step, lr in got.items():
        assert lr == pytest.approx(cosine(step / 24), abs=1e-12), step
    assert got[24] == pytest.approx(0.0, abs=1e-12)


def test_cosine_follows_the_steps_when_they_run_out_first(tiny_sentiment, tmp_path, one_second_per_step):
    """20 steps take 20 s, well inside max_minutes 10: the curve is the step-based one, as without max_minutes."""
    sets = ["train.scheduler=cosine", "train.max_steps=20", "train.epochs=100", "train.max_minutes=10", "train.eval_every=5"]
    summary = train(str(tiny_sentiment.recipe), overrides=sets, output_dir=str(tmp_path / "run"), quiet=True)
    assert summary["stopped"] == "max_steps"
    got = lrs(tmp_path / "run")
    for step, lr in got.items():
        assert lr == pytest.approx(cosine(step / 20), abs=1e-12), step
