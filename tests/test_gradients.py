"""`nlptk gradients`: dL/dh_t against the closed form, and the vanishing gradient it is meant to show."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from nlptoolkit.encoder import RNNEncoder
from nlptoolkit.gradients import at_initialisation, gradient_norms

from conftest import one_line_error


def scalar_rnn(w_xh: float, w_hh: float, b: float) -> RNNEncoder:
    """h_t = tanh(w_xh x_t + w_hh h_{t-1} + b) with one unit, as an RNNEncoder."""
    encoder = RNNEncoder("rnn", hidden_size=1, input_size=1)
    rnn = encoder.layers[0][0]
    with torch.no_grad():
        rnn.weight_ih_l0.fill_(w_xh)
        rnn.weight_hh_l0.fill_(w_hh)
        rnn.bias_ih_l0.fill_(b)
        rnn.bias_hh_l0.zero_()
    return encoder


def test_the_lectures_scalar_case_matches_the_closed_form() -> None:
    """w_hh = 3, w_xh = 2, b = 1: dh_3/dh_1 = tanh'(a_3) w_hh * tanh'(a_2) w_hh, with a_t = w_xh x_t + w_hh h_{t-1} + b."""
    w_xh, w_hh, b = 2.0, 3.0, 1.0
    x = [-0.5, -0.8, -0.4]
    h, a = 0.0, []
    for x_t in x:
        a.append(w_xh * x_t + w_hh * h + b)
        h = math.tanh(a[-1])
    d_tanh = [1 - math.tanh(v) ** 2 for v in a]
    dh3_dh2 = d_tanh[2] * w_hh
    dh3_dh1 = d_tanh[2] * w_hh * d_tanh[1] * w_hh
    norms = gradient_norms(scalar_rnn(w_xh, w_hh, b), torch.tensor(x).view(1, 3, 1), direction=torch.tensor([1.0]))
    assert norms.shape == (1, 3)
    assert norms[0].tolist() == pytest.approx([1.0, abs(dh3_dh2), abs(dh3_dh1)], rel=1e-6)


def test_the_last_step_gets_the_loss_direction_itself() -> None:
    """dL/dh_T = u / |u| for L = u . h_T / |u|: norm 1 at distance 0 with one layer; with two, the lower
    layer's h_T also reaches the loss (through the top layer at the same step), so the norm is larger."""
    torch.manual_seed(0)
    u = torch.randn(5)
    for layers in (1, 2):
        encoder = RNNEncoder("gru", hidden_size=5, num_layers=layers, input_size=3)
        norms = gradient_norms(encoder, torch.randn(4, 6, 3), direction=u)
        if layers == 1:
            assert norms[:, 0].tolist() == pytest.approx([1.0] * 4, rel=1e-6)
        else:
            assert (norms[:, 0] > 1.0).all()
        assert (norms[:, 1:] > 0).all()


def test_gradients_vanish_at_initialisation_for_the_vanilla_rnn_faster_than_for_the_lstm() -> None:
    torch.manual_seed(0)
    config = SimpleNamespace(embedding_dim=32, hidden_size=64, num_layers=1)
    curves = {c.label.split()[0]: c for c in at_initialisation(config, steps=60, samples=8)}
    assert curves["rnn"].fall(50) >= 100
    assert curves["lstm"].fall(50) < curves["rnn"].fall(50)


def test_cli_on_a_recipe_and_on_a_run(cli, trained_run, tmp_path: Path) -> None:
    code, out, err = cli(["gradients", trained_run.data.recipe, "--out", tmp_path / "g", "--steps", "30", "--samples", "4", "--json"])
    assert code == 0, err
    result = json.loads(out)
    assert result["distance"] == 29 and set(result["fall"]) == {"rnn at initialisation", "lstm at initialisation", "gru at initialisation"}
    assert (tmp_path / "g" / "gradient_norms.png").stat().st_size > 10_000
    with open(tmp_path / "g" / "gradient_norms.csv", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["distance", "rnn at initialisation", "lstm at initialisation", "gru at initialisation"] and len(rows) == 31
    text = tmp_path / "t.txt"
    text.write_text("a gorgeous , witty , seductive movie . " * 10, encoding="utf-8")
    code, out, err = cli(["gradients", trained_run.dir, "--out", tmp_path / "g2", "--steps", "20", "--samples", "3", "--text", text])
    assert code == 0, err
    assert "lstm trained (run): the gradient norm falls" in out
    message = one_line_error(*cli(["gradients", trained_run.data.recipe, "--out", tmp_path / "g3", "--text", text]))
    assert "only used with a run folder" in message
    message = one_line_error(*cli(["gradients", trained_run.dir, "--out", tmp_path / "g3", "--text", text, "--steps", "500"]))
    assert "fewer than --steps 500" in message
