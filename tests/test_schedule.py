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


def test_cosine_decays_to_zero_when_the_epochs_run_out_before_max_steps(tiny_sentiment, tmp_path):
    """1 epoch of 8 steps with max_steps 1000: training ends at step 8, and so must the decay."""
    sets = ["train.scheduler=cosine", "train.max_steps=1000", "train.epochs=1", "train.eval_every=2"]
    summary = train(str(tiny_sentiment.recipe), overrides=sets, output_dir=str(tmp_path / "run"), quiet=True)
    assert summary["stopped"] == "completed" and summary["steps"] == 8
    got = lrs(tmp_path / "run")
    assert sorted(got) == [2, 4, 6, 8]
    for step, lr in got.items():
        assert lr == pytest.approx(cosine(step / 8), abs=1e-12), step
    assert got[8] == pytest.approx(0.0, abs=1e-12)


def test_warmup_steps_work_with_the_plateau_scheduler(tiny_sentiment, tmp_path):
    """warmup_steps: 4 ramps the learning rate up as it does for the other schedules (lr * (step + 1) / 4
    for the step after `step`), and plateau reductions start only after it."""
    sets = ["train.scheduler=plateau", "train.warmup_steps=4", "train.max_steps=8", "train.eval_every=1"]
    train(str(tiny_sentiment.recipe), overrides=sets, output_dir=str(tmp_path / "run"), quiet=True)
    got = lrs(tmp_path / "run")
    for step in (1, 2, 3, 4):
        assert got[step] == pytest.approx(LR * min(1.0, (step + 1) / 4), abs=1e-12), step
    # afterwards only ReduceLROnPlateau moves it: halvings of the full rate
    for step in (5, 6, 7, 8):
        assert any(got[step] == pytest.approx(LR / 2**k, abs=1e-12) for k in range(5)), (step, got[step])
