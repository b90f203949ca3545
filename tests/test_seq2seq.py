"""The seq2seq task end to end on a slice of real G2P data: run, evaluate (metrics recomputed
independently, one example at a time), predict with beams and n-best lists, and its errors."""
from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import sacrebleu
import torch
import torch.nn.functional as F

from conftest import REPO, one_line_error, shared_data_dir, write_jsonl
from nlptoolkit import SearchOptions, greedy_search
from nlptoolkit.runs import load_run

G2P = shared_data_dir() / "seq2seq" / "g2p_cmudict"

RECIPE = """\
name: tiny_g2p
task:
  name: seq2seq
  target_tokenizer:
    kind: word
  attention: {attention}
  dropout: 0.0
  max_length: 20
seed: 3
device: cpu
data:
  files:
    train: {train}
    validation: {validation}
  tokenizer:
    kind: char
encoder:
  cell: lstm
  embedding_dim: 16
  hidden_size: 24
  bidirectional: true
train:
  lr: 0.01
  batch_size: 16
  epochs: 1
  max_steps: 12
  eval_every: 12
  precision: fp32
  early_stopping:
    metric: per
"""


def rows(split, start, stop):
    with open(G2P / f"{split}.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f][start:stop]


@pytest.fixture(scope="module")
def g2p_run(tmp_path_factory, shared_data):
    from conftest import _subprocess_cli

    base = tmp_path_factory.mktemp("g2p")
    train = write_jsonl(base / "train.jsonl", rows("train", 0, 400))
    validation = write_jsonl(base / "validation.jsonl", rows("validation", 0, 37))  # not a multiple of the batch
    recipe = base / "recipe.yaml"
    recipe.write_text(RECIPE.format(attention="general", train=train, validation=validation))
    run_dir = base / "run"
    code, out, err = _subprocess_cli(["run", recipe, "--output-dir", run_dir, "--quiet"], cwd=base)
    assert code == 0, f"training failed ({code}):\n{out}\n{err}"
    return SimpleNamespace(dir=run_dir, recipe=recipe, validation=validation, base=base)


def edit_distance(a, b):
    """Levenshtein distance by the textbook dynamic programme (independent of rapidfuzz)."""
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def test_evaluate_matches_a_one_example_at_a_time_computation(g2p_run, cli):
    code, out, err = cli(["evaluate", g2p_run.dir, "--json"])
    assert code == 0, err
    metrics = json.loads(out)
    assert set(metrics) == {"loss", "perplexity", "bleu", "chrf", "wer", "per"}

    _, task, model = load_run(str(g2p_run.dir))
    loss_sum, tokens, edits, wrong, hyps, refs = 0.0, 0, 0, 0, [], []
    v = task.tgt_vocab
    with torch.no_grad():
        for row in rows("validation", 0, 37):
            src = torch.tensor([v_src for v_src in task.src_vocab.encode(list(row["source"]))])[None]
            ref = v.encode(row["target"].split())
            logits, _ = model(src, torch.tensor([src.shape[1]]), torch.tensor([[v.bos_id] + ref]))
            loss_sum += float(F.cross_entropy(logits[0], torch.tensor(ref + [v.eos_id]), reduction="sum"))
            tokens += len(ref) + 1
            options = SearchOptions(v.bos_id, v.eos_id, max_length=min(20, 2 * src.shape[1] + 5), banned=(v.pad_id, v.bos_id))
            hyp = greedy_search(model, src, torch.tensor([src.shape[1]]), options)[0][0].tokens
            edits += edit_distance(hyp, ref)
            wrong += hyp != ref
            hyps.append(" ".join(v.decode(hyp)))
            refs.append(row["target"])
    n_ref = sum(len(r.split()) for r in refs)
    assert metrics["loss"] == pytest.approx(loss_sum / tokens, rel=1e-4)
    assert metrics["perplexity"] == pytest.approx(math.exp(loss_sum / tokens), rel=1e-4)
    assert metrics["wer"] == pytest.approx(wrong / 37) and metrics["per"] == pytest.approx(edits / n_ref)
    assert metrics["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score, abs=1e-6)
    assert metrics["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score, abs=1e-6)
    assert 0.0 < metrics["per"] < 1.0  # 12 steps learned something, and not everything


def test_predict_beams_and_nbest(g2p_run, cli):
    words = ["hello", "world", "zebra"]
    code, out, err = cli(["predict", g2p_run.dir, *words, "--json", "--beam", "4", "--nbest", "3"])
    assert code == 0, err
    results = [json.loads(line) for line in out.splitlines()]
    assert [r["input"] for r in results] == words
    for r in results:
        assert len(r["nbest"]) == 3 and len({h["output"] for h in r["nbest"]}) == 3
        scores = [h["score"] for h in r["nbest"]]
        assert scores == sorted(scores, reverse=True) and r["output"] == r["nbest"][0]["output"]
        assert all(math.isfinite(s) and s < 0 for s in scores)
    code, plain, err = cli(["predict", g2p_run.dir, *words, "--beam", "4", "--nbest", "3"])
    lines = plain.splitlines()
    assert len(lines) == 4 * len(words) and lines[0] == "hello" and lines[1].startswith("  ")
    # beam 1 prints "input<TAB>output", the greedy output
    code, greedy, err = cli(["predict", g2p_run.dir, *words, "--beam", "1", "--json"])
    _, task, model = load_run(str(g2p_run.dir))
    for word, line in zip(words, greedy.splitlines()):
        v = task.tgt_vocab
        src = torch.tensor([task.src_vocab.encode(list(word))])
        options = SearchOptions(v.bos_id, v.eos_id, max_length=min(20, 2 * src.shape[1] + 5), banned=(v.pad_id, v.bos_id))
        expected = greedy_search(model, src, torch.tensor([src.shape[1]]), options)[0][0]
        assert json.loads(line)["output"] == " ".join(v.decode(expected.tokens))


def test_nbest_beyond_the_beam_is_a_clear_error(g2p_run, cli):
    msg = one_line_error(*cli(["predict", g2p_run.dir, "hello", "--nbest", "3"]))
    assert "--nbest 3" in msg and "--beam 3" in msg


def test_beam_on_a_classifier_is_a_clear_error(trained_run, cli):
    msg = one_line_error(*cli(["predict", trained_run.dir, "a fine film", "--beam", "3"]))
    assert "--beam" in msg and "does not decode sequences" in msg


def test_evaluate_with_beam(g2p_run, cli):
    code, out, err = cli(["evaluate", g2p_run.dir, "--json", "--beam", "3"])
    assert code == 0, err
    assert 0.0 <= json.loads(out)["wer"] <= 1.0


@pytest.mark.parametrize("recipe", ["g2p.yaml", "translate.yaml", "translate_noattn.yaml"])
def test_bundled_recipes_validate(cli, recipe):
    code, out, err = cli(["validate", f"recipes/{recipe}"], cwd=REPO)
    assert code == 0, err
    assert out.strip() == f"recipes/{recipe}: ok (task seq2seq)"


def test_dot_attention_size_mismatch_is_named(cli, g2p_run):
    text = g2p_run.recipe.read_text().replace("attention: general", "attention: dot\n  decoder_hidden_size: 10")
    bad = Path(g2p_run.base) / "dot.yaml"
    bad.write_text(text)
    msg = one_line_error(*cli(["run", bad, "--output-dir", g2p_run.base / "dot_run"]))
    assert "task.attention" in msg and "general" in msg


def test_attention_heatmap_of_one_input(g2p_run, tmp_path):
    import nlptoolkit
    from nlptoolkit.plots import plot_attention

    run = nlptoolkit.load(g2p_run.dir)
    source, output, weights = run.task.attention_of(run.model, "hello")
    assert source == list("hello") and output[-1] == "<eos>"
    assert weights.shape == (len(output), len(source))
    torch.testing.assert_close(weights.sum(1), torch.ones(len(output)))
    assert output[:-1] == run.predict("hello", beam_size=1)["output"].split()
    png = tmp_path / "a.png"
    plot_attention(source, output, weights.tolist(), png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
