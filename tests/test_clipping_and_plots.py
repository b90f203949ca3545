"""Clipping made visible (metrics.jsonl), `nlptk plot`, and train.tensorboard."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from statistics import median

import pytest

from conftest import one_line_error


def records(run: Path) -> list:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]


def test_clipping_statistics_match_the_per_step_gradient_norms(cli, tiny_sentiment, tmp_path: Path) -> None:
    """With lr 0 the weights never move, so every run sees the same per-step gradients whatever the clip:
    run once evaluating after every step (each record is one step's norm), then with a clip at their
    median and evaluating every 3 steps; the shares and means must be those of the per-step norms."""
    frozen = ["--set", "train.optimizer=sgd", "--set", "train.lr=0", "--set", "train.max_steps=6"]
    code, _, err = cli(["run", tiny_sentiment.recipe, "--output-dir", tmp_path / "a", "--quiet", *frozen,
                        "--set", "train.eval_every=1", "--set", "train.grad_clip=null"])
    assert code == 0, err
    per_step = [r["grad_norm"] for r in records(tmp_path / "a")]
    assert len(per_step) == 6 and all(n > 0 for n in per_step)
    assert all(r["clipped_fraction"] == 0 and r["grad_norm_max"] == r["grad_norm"] for r in records(tmp_path / "a"))
    clip = median(per_step)
    code, _, err = cli(["run", tiny_sentiment.recipe, "--output-dir", tmp_path / "b", "--quiet", *frozen,
                        "--set", "train.eval_every=3", "--set", f"train.grad_clip={clip}"])
    assert code == 0, err
    windows = records(tmp_path / "b")
    assert len(windows) == 2
    for record, norms in zip(windows, (per_step[:3], per_step[3:])):
        assert record["grad_norm"] == pytest.approx(sum(norms) / 3, rel=1e-5)
        assert record["grad_norm_max"] == pytest.approx(max(norms), rel=1e-5)
        assert record["clipped_fraction"] == pytest.approx(sum(n > clip for n in norms) / 3)
    assert sum(r["clipped_fraction"] for r in windows) * 3 == sum(n > clip for n in per_step) == 3


def test_plot_overlays_runs_labelled_by_name(cli, tiny_sentiment, tmp_path: Path) -> None:
    from nlptoolkit.plots import plot_runs

    for name, cell in (("lstm_run", "lstm"), ("gru_run", "gru")):
        code, _, err = cli(["run", tiny_sentiment.recipe, "--output-dir", tmp_path / name, "--quiet", "--set", f"encoder.cell={cell}"])
        assert code == 0, err
    labels = plot_runs([tmp_path / "lstm_run", tmp_path / "gru_run"], ["loss", "clipped_fraction"], tmp_path / "p.png")
    assert labels == {
        "loss": ["lstm_run: validation loss", "lstm_run: train loss", "gru_run: validation loss", "gru_run: train loss"],
        "clipped_fraction": ["lstm_run: clipped_fraction", "gru_run: clipped_fraction"],
    }
    code, out, err = cli(["plot", tmp_path / "lstm_run", tmp_path / "gru_run", "--metric", "accuracy", "--out", tmp_path / "q.png"])
    assert code == 0, err
    assert (tmp_path / "q.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    message = one_line_error(*cli(["plot", tmp_path / "lstm_run", "--metric", "bleu", "--out", tmp_path / "r.png"]))
    assert "--metric bleu" in message and "accuracy" in message and "grad_norm" in message
    message = one_line_error(*cli(["plot", tmp_path / "nowhere", "--out", tmp_path / "r.png"]))
    assert "metrics.jsonl does not exist" in message


def test_tensorboard_gets_the_same_scalars(cli, tiny_sentiment, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="the [tensorboard] extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    code, _, err = cli(["run", tiny_sentiment.recipe, "--output-dir", tmp_path / "run", "--quiet", "--set", "train.tensorboard=true"])
    assert code == 0, err
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    logged = records(tmp_path / "run")
    accuracy = events.Scalars("validation/accuracy")
    assert [e.step for e in accuracy] == [r["step"] for r in logged]
    assert [e.value for e in accuracy] == pytest.approx([r["validation"]["accuracy"] for r in logged])
    assert [e.value for e in events.Scalars("train/clipped_fraction")] == pytest.approx([r["clipped_fraction"] for r in logged])
    assert {"train/loss", "train/grad_norm", "train/lr"} <= set(events.Tags()["scalars"])


def test_a_missing_tensorboard_is_a_one_line_error_before_training(cli, tiny_sentiment, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # what `import` sees when it is not installed
    message = one_line_error(*cli(["run", tiny_sentiment.recipe, "--output-dir", tmp_path / "run", "--quiet", "--set", "train.tensorboard=true"]))
    assert "pip install 'nlptoolkit[tensorboard]'" in message and "train.tensorboard: false" in message
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
