"""`nlptk inspect`: per-layer states, probes, the ranking, the HTML report (rendered in Chromium)."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from nlptoolkit.encoder import RNNEncoder
from nlptoolkit.inspection.activations import unroll
from nlptoolkit.inspection.analysis import Unit, correlations, per_token, rank_units, token_spans
from nlptoolkit.inspection.probes import bracket_depth, inside_quotes, line_position, sentence_end, word_start

from conftest import one_line_error, shared_data_dir

# ----------------------------------------------------------------------------
# States at every step, against the encoder's fused forward pass
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_unroll_gives_the_encoders_outputs_and_final_states(cell: str, bidirectional: bool) -> None:
    torch.manual_seed(0)
    encoder = RNNEncoder(cell, hidden_size=6, num_layers=2, bidirectional=bidirectional, vocab_size=20, embedding_dim=5).eval()
    ids = torch.randint(4, 20, (3, 9))
    reference = encoder(ids)
    run = unroll(encoder, ids)
    torch.testing.assert_close(run.stacked("h", 1), reference.outputs, rtol=0, atol=1e-6)
    D = 2 if bidirectional else 1
    h_n = reference.state[0] if cell == "lstm" else reference.state
    for layer in range(2):
        # forward direction ends at the last step, backward at the first
        torch.testing.assert_close(run.h[layer][-1][:, :6], h_n[layer * D], rtol=0, atol=1e-6)
        if bidirectional:
            torch.testing.assert_close(run.h[layer][0][:, 6:], h_n[layer * D + 1], rtol=0, atol=1e-6)
        if cell == "lstm":
            torch.testing.assert_close(run.c[layer][-1][:, :6], reference.state[1][layer * D], rtol=0, atol=1e-6)
    assert (run.c == [[], []]) == (cell != "lstm")


# ----------------------------------------------------------------------------
# Probes: values worked out by hand
# ----------------------------------------------------------------------------
def test_probes_on_a_hand_checked_text() -> None:
    text = 'He said "go (now)." Then\nleft.'
    #       0123456789...
    assert inside_quotes(text) == [0.0] * 8 + [1.0] * 11 + [0.0] * 11
    assert bracket_depth('f(a[b])c') == [0, 1, 1, 2, 2, 2, 1, 0]
    assert line_position("ab\ncd") == [0, 1, 2, 0, 1]
    assert word_start("it's a b2-c") == [1, 0, 0, 0, 0, 1, 0, 1, 0, 0, 1]
    assert sentence_end("Hi. Mr.X? Ok!") == [0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1]
    for probe in (inside_quotes, bracket_depth, line_position, word_start, sentence_end):
        assert len(probe(text)) == len(text)


def test_token_spans_follow_the_tokenizers_conventions() -> None:
    text = "The cat\nsat."
    assert token_spans(text, ["the", "cat", "<eos>", "sat", "."]) == [(0, 3), (4, 7), (7, 8), (8, 11), (11, 12)]
    assert token_spans(text, ["\u2581The", "\u2581cat", "\n", "sat", "."]) == [(0, 3), (4, 7), (7, 8), (8, 11), (11, 12)]
    assert token_spans("a b", ["a", "zzz", "b"]) == [(0, 1), None, (2, 3)]
    assert per_token([5, 6, 7], [(1, 2), None, (0, 1)]).tolist() == [6, 6, 5]


def test_correlation_matches_numpy_and_ranking_finds_a_planted_unit() -> None:
    g = torch.Generator().manual_seed(0)
    probe = torch.randn(200, generator=g, dtype=torch.float64)
    states = {(1, "h"): torch.randn(200, 8, generator=g), (2, "c"): torch.randn(200, 8, generator=g)}
    states[(2, "c")][:, 5] = (-2 * probe + 0.5 * torch.randn(200, generator=g, dtype=torch.float64)).float()
    states[(1, "h")][:, 3] = 0.7  # constant: correlation 0, not nan
    r = correlations(states[(2, "c")], probe)
    expected = [np.corrcoef(states[(2, "c")][:, j].numpy(), probe.numpy())[0, 1] for j in range(8)]
    np.testing.assert_allclose(r.numpy(), expected, atol=1e-6)
    assert correlations(states[(1, "h")], probe)[3] == 0
    ranked = rank_units(states, probe, top=3)
    assert ranked[0].unit == Unit(2, "c", 5) and ranked[0].correlation < -0.9
    assert [abs(x.correlation) for x in ranked] == sorted((abs(x.correlation) for x in ranked), reverse=True)


# ----------------------------------------------------------------------------
# The command on real (tiny) runs
# ----------------------------------------------------------------------------
TINY_LM = """\
name: tiny_lm
task: {{name: language_model, bptt: 20, sample_tokens: 0}}
seed: 3
device: cpu
data:
  files: {{train: {train}, validation: {validation}}}
  tokenizer: {{kind: char}}
encoder: {{cell: {cell}, embedding_dim: 8, hidden_size: 12, num_layers: 2}}
train: {{batch_size: 8, epochs: 1, max_steps: 5}}
"""

QUOTED = 'MENENIUS:\nHe said "the people (all of them) are [quite] hungry." Ay.\n'


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory):
    from conftest import _subprocess_cli

    base = tmp_path_factory.mktemp("lm")
    text = (shared_data_dir() / "lm" / "tiny_shakespeare" / "train.txt").read_text(encoding="utf-8")[:12000]
    (base / "train.txt").write_text(text + QUOTED * 20, encoding="utf-8")
    (base / "valid.txt").write_text(text[:3000], encoding="utf-8")
    (base / "inspect.txt").write_text(text[:1500] + QUOTED * 4, encoding="utf-8")
    (base / "recipe.yaml").write_text(TINY_LM.format(train=base / "train.txt", validation=base / "valid.txt", cell="lstm"), encoding="utf-8")
    code, out, err = _subprocess_cli(["run", base / "recipe.yaml", "--output-dir", base / "run", "--quiet"], cwd=base)
    assert code == 0, err
    return base


def test_find_ranks_every_unit_of_every_layer(cli, tiny_lm: Path) -> None:
    code, out, err = cli(["inspect", tiny_lm / "run", "--text", tiny_lm / "inspect.txt", "--out", tiny_lm / "r.html", "--find", "--json", "--top", "4"])
    assert code == 0, err
    result = json.loads(out)
    assert result["units_scanned"] == 2 * 2 * 12  # 2 layers x (h, c) x 12 units
    assert set(result["probes"]) == {"inside_quotes", "bracket_depth", "line_position", "word_start", "sentence_end"}
    for ranked in result["probes"].values():
        assert len(ranked) == 4 and set(ranked[0]) == {"layer", "state", "unit", "correlation"}
        assert [abs(r["correlation"]) for r in ranked] == sorted((abs(r["correlation"]) for r in ranked), reverse=True)
    # the reported correlation is the one numpy computes from the unit's own activations
    from nlptoolkit.inspection.activations import find_encoder, trace
    from nlptoolkit.runs import load_run

    _, task, model = load_run(str(tiny_lm / "run"))
    text = (tiny_lm / "inspect.txt").read_text(encoding="utf-8")
    tokens, ids = task.read_text(text)
    assert tokens == list(text)
    states = trace(find_encoder(model), ids)
    best = result["probes"]["line_position"][0]
    values = states[(best["layer"], best["state"])][:, best["unit"]].numpy()
    assert best["correlation"] == pytest.approx(np.corrcoef(values, line_position(text))[0, 1], abs=1e-3)
    page = (tiny_lm / "r.html").read_text(encoding="utf-8")
    assert "48 units scanned" in page and "<script" not in page and "http" not in page.lower().replace("http-equiv", "")


def test_units_flag_and_its_errors(cli, tiny_lm: Path) -> None:
    args = ["inspect", tiny_lm / "run", "--text", tiny_lm / "inspect.txt", "--out", tiny_lm / "u.html"]
    code, out, err = cli(args + ["--units", "2:3,1:c:11"])
    assert code == 0, err
    page = (tiny_lm / "u.html").read_text(encoding="utf-8")
    assert "layer 2, hidden state, unit 3" in page and "layer 1, cell state, shown as tanh(c), unit 11" in page
    assert "Probe:" not in page  # --units alone does not rank
    for bad, words in [("2-3", "LAYER:UNIT"), ("3:1", "layers 1 to 2"), ("1:12", "units 0 to 11"), ("1:x:2", "LAYER:c:UNIT")]:
        message = one_line_error(*cli(args + ["--units", bad]))
        assert words in message, message
    message = one_line_error(*cli(["inspect", tiny_lm / "run", "--text", tiny_lm / "missing.txt", "--out", tiny_lm / "x.html"]))
    assert "missing.txt" in message


def test_inspect_works_on_a_bidirectional_gru_classifier(cli, tiny_sentiment, tmp_path: Path) -> None:
    run = tmp_path / "run"
    code, _, err = cli(["run", tiny_sentiment.recipe, "--output-dir", run, "--quiet", "--set", "encoder.cell=gru",
                        "--set", "encoder.bidirectional=true", "--set", "encoder.num_layers=2"])
    assert code == 0, err
    text = tmp_path / "t.txt"
    text.write_text('a gorgeous, witty, seductive movie. (not) "boring" at all.\n', encoding="utf-8")
    code, out, err = cli(["inspect", run, "--text", text, "--out", tmp_path / "r.html", "--json"])
    assert code == 0, err
    result = json.loads(out)
    assert result["units_scanned"] == 2 * (2 * 16)  # 2 layers of 16 units per direction, hidden state only
    assert result["tokens"] == 9  # whitespace words
    assert {r["state"] for ranked in result["probes"].values() for r in ranked} == {"h"}
    message = one_line_error(*cli(["inspect", run, "--text", text, "--out", tmp_path / "r.html", "--units", "1:c:0"]))
    assert "GRU has no cell state" in message


def test_a_plugin_registers_a_probe(cli, tiny_lm: Path, tmp_path: Path) -> None:
    plugin = tmp_path / "vowels.py"
    plugin.write_text(
        "import nlptoolkit\n\n"
        "@nlptoolkit.register_probe('vowel')\n"
        "def vowel(text):\n"
        "    \"1 at a vowel.\"\n"
        "    return [float(ch in 'aeiouAEIOU') for ch in text]\n",
        encoding="utf-8",
    )
    code, out, err = cli(["--plugin", plugin, "inspect", tiny_lm / "run", "--text", tiny_lm / "inspect.txt", "--out", tmp_path / "r.html", "--json"])
    assert code == 0, err
    assert "vowel" in json.loads(out)["probes"]
    assert "Probe: vowel" in (tmp_path / "r.html").read_text(encoding="utf-8")


# ----------------------------------------------------------------------------
# What a person sees: the report rendered by a real browser
# ----------------------------------------------------------------------------
def find_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return ""


def screenshot(html: Path, png: Path, width: int = 1000, height: int = 1600) -> None:
    """Render ``html`` in headless Chromium and save what it shows."""
    browser = find_chromium()
    subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--window-size={width},{height}",
         f"--screenshot={png}", html.resolve().as_uri()],
        check=True, capture_output=True, timeout=120,
    )


@pytest.mark.skipif(not find_chromium(), reason="Chromium is not installed (apt-get install chromium); the rendered report cannot be checked")
def test_the_report_renders_as_coloured_text_in_chromium(cli, tiny_lm: Path, tmp_path: Path) -> None:
    from PIL import Image

    code, _, err = cli(["inspect", tiny_lm / "run", "--text", tiny_lm / "inspect.txt", "--out", tmp_path / "r.html", "--units", "1:c:0,1:c:1,2:c:2,2:h:3"])
    assert code == 0, err
    screenshot(tmp_path / "r.html", tmp_path / "r.png")
    pixels = np.asarray(Image.open(tmp_path / "r.png").convert("RGB")).reshape(-1, 3).astype(int)
    r, g, b = pixels[:, 0], pixels[:, 1], pixels[:, 2]
    red = ((r > 200) & (r - g > 60) & (r - b > 60)).sum()
    blue = ((b > 200) & (b - r > 60) & (b - g > 60)).sum()
    dark = ((r < 80) & (g < 80) & (b < 80)).sum()  # the text itself
    assert red > 500 and blue > 500 and dark > 500, (red, blue, dark)
