"""train.ema_decay: the moving average of the weights against the formula written out, and wired
through training, best.pt, evaluation and exact resume."""
from __future__ import annotations

import json
import shlex

import pytest
import torch
from torch import nn

from conftest import one_line_error
from nlptoolkit.averaging import weight_average
from nlptoolkit.checkpoint import load_checkpoint
from test_resume import assert_same_run, max_abs_diff, metric_records, resume_recipe


def test_the_average_follows_the_formula_step_by_step():
    """Scalar weights w_1, w_2, ... : the average starts at w_1, then a_t = d_t a + (1 - d_t) w with
    d_t = min(d, (1 + t) / (10 + t)), computed here in plain Python floats."""
    model = nn.Linear(1, 1, bias=False)
    average = weight_average(model, decay=0.6)
    g = torch.Generator().manual_seed(0)
    expected = None
    for t, w in enumerate(torch.randn(40, generator=g, dtype=torch.float64).tolist()):
        with torch.no_grad():
            model.weight.fill_(w)
        average.update_parameters(model)
        expected = w if expected is None else min(0.6, (1 + t) / (10 + t)) * expected + (1 - min(0.6, (1 + t) / (10 + t))) * w
        assert float(average.module.weight) == pytest.approx(expected, abs=1e-6)
    assert not any(p.requires_grad for p in average.parameters())  # the optimizer never touches it


def ema_recipe(folder, decay):
    tiny = resume_recipe(folder)
    tiny.recipe.write_text(tiny.recipe.read_text() + f"  ema_decay: {decay}\n", encoding="utf-8")
    return tiny


def test_decay_zero_is_exactly_no_averaging(tmp_path, cli):
    """d = 0 makes the average the weights themselves: the same metrics and best.pt as a run without it."""
    plain = resume_recipe(tmp_path / "plain")
    zero = ema_recipe(tmp_path / "zero", 0.0)
    for tiny, out in ((plain, "a"), (zero, "b")):
        code, _, err = cli(["run", tiny.recipe, "--output-dir", tmp_path / out, "--quiet"])
        assert code == 0, err
    assert metric_records(tmp_path / "a") == metric_records(tmp_path / "b")
    assert max_abs_diff(load_checkpoint(tmp_path / "a" / "best.pt")["model"], load_checkpoint(tmp_path / "b" / "best.pt")["model"]) == 0.0


def test_the_average_is_what_is_evaluated_and_saved(tmp_path, cli):
    tiny = ema_recipe(tmp_path / "data", 0.9)
    run = tmp_path / "run"
    code, _, err = cli(["run", tiny.recipe, "--output-dir", run, "--quiet"])
    assert code == 0, err
    last = load_checkpoint(run / "last.pt")
    assert max_abs_diff(last["model"], last["trained_model"]) > 1e-4  # the average is not the weights
    assert last["ema_updates"] == tiny.total_steps
    # `nlptk evaluate --checkpoint last` rebuilds the final evaluation from last.pt's "model"
    code, out, err = cli(["evaluate", run, "--checkpoint", "last", "--json"])
    assert code == 0, err
    final = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["validation"]
    assert json.loads(out) == pytest.approx(final, abs=1e-6)


def test_resume_with_averaging_is_exact(tmp_path, run_cli, cli):
    tiny = ema_recipe(tmp_path / "data", 0.8)
    code, _, err = cli(["run", tiny.recipe, "--output-dir", tmp_path / "straight", "--quiet"])
    assert code == 0, err
    run = tmp_path / "run"
    code, _, err = run_cli(["run", tiny.recipe, "--output-dir", run, "--quiet"], cwd=tmp_path, env={"NLPTK_TEST_SIGNAL_AT_STEP": "7:TERM"})
    assert code == 143, err
    command = err.strip().splitlines()[-1].split("Resume with: ", 1)[1]
    code, _, err = cli(shlex.split(command)[1:] + ["--quiet"])
    assert code == 0, err
    assert_same_run(run, tmp_path / "straight", tiny)
    assert max_abs_diff(load_checkpoint(run / "last.pt")["trained_model"], load_checkpoint(tmp_path / "straight" / "last.pt")["trained_model"]) == 0.0


def test_bad_decay_is_one_line(tmp_path, cli):
    tiny = ema_recipe(tmp_path / "data", 1.5)
    msg = one_line_error(*cli(["validate", tiny.recipe]))
    assert "train.ema_decay" in msg and "at most" in msg
