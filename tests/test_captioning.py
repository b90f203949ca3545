"""Captioning (one-to-many): the three ways features enter the decoder, data errors, metrics
recomputed independently (sacrebleu, per-example loss), and `nlptk predict --features`."""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import datasets
import pytest
import sacrebleu
import torch
import torch.nn.functional as F

from conftest import REPO, one_line_error, shared_data_dir, write_jsonl
import nlptoolkit
from nlptoolkit import beam_search
from nlptoolkit.recipe import recipe_from_dict
from nlptoolkit.runs import load_run, make_task, train

DIGITS = shared_data_dir() / "captioning" / "digits"
MODES = {
    "init_state": {"condition": "init_state"},
    "first_input": {"condition": "first_input"},
    "zeros": {"condition": "first_input", "later_inputs": "zeros"},
}


def digit_rows(split, start=0, stop=None):
    with open(DIGITS / f"{split}.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f][start:stop]


def caption_task(mode, cell="lstm", layers=1, seed=0):
    recipe = recipe_from_dict({
        "name": "cap", "task": {"name": "captioning", **MODES[mode]}, "seed": 0, "device": "cpu",
        "data": {"files": {"train": "train.jsonl"}, "tokenizer": {"kind": "word"}},
        "encoder": {"cell": cell, "embedding_dim": 6, "hidden_size": 8, "num_layers": layers},
    })
    task = make_task(recipe, None)
    task.setup(datasets.Dataset.from_list(digit_rows("train", 0, 50)))
    torch.manual_seed(seed)
    return task, task.build_model().eval()


def batch_of(task, start=0, stop=3):
    return task.collate(task.encode(datasets.Dataset.from_list(digit_rows("validation", start, stop)), "validation"))


def by_hand(model, mode, features, inputs):
    """Log-probabilities with the conditioning written out: the RNN, its first input and initial state."""
    decoder = model.decoder
    rnn, emb = decoder.rnn, decoder.embedding
    B, T = inputs.shape
    if mode == "init_state":
        h = torch.tanh(features @ model.bridge.h.weight.T + model.bridge.h.bias).expand(rnn.num_layers, B, -1).contiguous()
        state = (h, torch.zeros_like(h)) if rnn.cell == "lstm" else h
        x = emb(inputs)
    else:
        state = None  # zeros
        first = (features @ model.first_input.weight.T + model.first_input.bias).unsqueeze(1)
        later = emb(inputs[:, 1:]) if mode == "first_input" else torch.zeros(B, T - 1, emb.embedding_dim)
        x = torch.cat([first, later], 1)
    return decoder.out(rnn(x, state=state).outputs).log_softmax(-1)


def intended_path(model, mode):
    return model.bridge.h if mode == "init_state" else model.first_input


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("mode", list(MODES))
def test_each_condition_is_the_model_written_out(mode, cell):
    task, model = caption_task(mode, cell, layers=2 if cell == "gru" else 1)
    batch = batch_of(task)
    with torch.no_grad():
        got = model(batch["features"], batch["inputs"]).log_softmax(-1)
        expected = by_hand(model, mode, batch["features"], batch["inputs"])
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", list(MODES))
def test_features_reach_the_output_through_the_intended_path_only(mode):
    task, model = caption_task(mode)
    batch = batch_of(task)
    features = batch["features"].clone().requires_grad_(True)
    model(features, batch["inputs"]).sum().backward()
    assert features.grad.abs().sum() > 0  # the caption depends on the features
    assert (model.first_input is None) == (mode == "init_state") and (model.bridge is None) == (mode != "init_state")
    with torch.no_grad():
        intended_path(model, mode).weight.zero_()  # cut the one path the features should take
    features.grad = None
    model(features, batch["inputs"]).sum().backward()
    assert torch.count_nonzero(features.grad) == 0  # and no other path is left


@pytest.mark.parametrize("mode", list(MODES))
def test_what_the_steps_after_the_first_read(mode):
    task, model = caption_task(mode)
    batch = batch_of(task)
    other = batch["inputs"].clone()
    other[:, 2] = 4 + (other[:, 2] - 3) % (len(task.vocab) - 4)  # another word at position 2
    assert (other[:, 2] != batch["inputs"][:, 2]).all()
    with torch.no_grad():
        a = model(batch["features"], batch["inputs"])
        b = model(batch["features"], other)
    if mode == "zeros":
        torch.testing.assert_close(a, b)  # only the first step has an input; the tokens are never read
    else:
        torch.testing.assert_close(a[:, :2], b[:, :2])  # the past is unchanged
        assert not torch.allclose(a[:, 2:], b[:, 2:])  # the step that reads the word, and later ones, change


@pytest.mark.parametrize("mode", list(MODES))
def test_decoding_agrees_with_the_training_path(mode):
    """Greedy search (the frozen fast path) picks, at every step, the argmax of the teacher-forced
    logits given its own earlier tokens; beam 1 is greedy."""
    task, model = caption_task(mode, seed=5)
    batch = batch_of(task, 0, 6)
    greedy = task.caption(model, batch["features"], task.search_options())
    with torch.no_grad():
        beam1 = beam_search(model, batch["features"], None, dataclasses.replace(task.search_options(), beam_size=1))
    for b, hyps in enumerate(greedy):
        tokens = hyps[0].tokens
        with torch.no_grad():
            logits = model(batch["features"][b : b + 1], torch.tensor([[task.vocab.bos_id] + tokens]))[0]
        logits[:, [0, task.vocab.bos_id]] = -math.inf  # banned, as in the search
        assert logits.argmax(-1)[:-1].tolist() == tokens
        if len(tokens) + 1 < task.options.max_length:  # it ended by choice, not at the length limit
            assert int(logits[-1].argmax()) == task.vocab.eos_id
        assert beam1[b][0].tokens == tokens


# --------------------------------------------------------------------------
# recipes and data errors
# --------------------------------------------------------------------------
RECIPE = """\
name: cap
task:
  name: captioning
  condition: {condition}
  later_inputs: {later}
seed: 3
device: cpu
data:
  files:
    train: {train}
    validation: {validation}
  tokenizer: {{kind: word}}
encoder: {{cell: lstm, embedding_dim: 32, hidden_size: 32}}
train: {{lr: 0.01, batch_size: 16, epochs: 1, max_steps: {steps}, eval_every: {steps}, early_stopping: {{metric: exact_match}}}}
"""
import dataclasses


def write_recipe(folder: Path, train_rows, validation_rows, condition="init_state", later="tokens", steps=2) -> Path:
    train = write_jsonl(folder / "train.jsonl", train_rows)
    validation = write_jsonl(folder / "validation.jsonl", validation_rows)
    recipe = folder / "recipe.yaml"
    recipe.write_text(RECIPE.format(condition=condition, later=later, train=train, validation=validation, steps=steps))
    return recipe


def test_zero_later_inputs_need_the_first_input(cli, tmp_path):
    recipe = write_recipe(tmp_path, digit_rows("train", 0, 5), digit_rows("validation", 0, 5), later="zeros")
    msg = one_line_error(*cli(["validate", recipe]))
    assert "task.later_inputs" in msg and "condition: first_input" in msg


@pytest.mark.parametrize("change, expected", [
    (lambda r: r.update(features=r["features"][:63]), "row 3: field 'features' has 63 numbers, but the model reads vectors of 64"),
    (lambda r: r["features"].__setitem__(5, "dark"), "row 3: field 'features' holds 'dark' at position 5; every entry must be a number"),
    (lambda r: r.update(features=None), "row 3: field 'features' is missing (null)"),
    (lambda r: r.update(caption="   "), "row 3: field 'caption' has no tokens"),
])
def test_bad_rows_are_one_line_errors_naming_file_and_row(cli, tmp_path, change, expected):
    rows = digit_rows("validation", 0, 6)
    change(rows[2])
    recipe = write_recipe(tmp_path, digit_rows("train", 0, 20), rows)
    msg = one_line_error(*cli(["run", recipe, "--output-dir", tmp_path / "run", "--quiet"]))
    assert f"{tmp_path / 'validation.jsonl'} (data.files.validation), {expected}" in msg, msg


# --------------------------------------------------------------------------
# a trained run: evaluate and predict
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def caption_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("captioning")
    recipe = write_recipe(base, digit_rows("train", 0, 300), digit_rows("validation", 0, 40), steps=40)
    train(str(recipe), output_dir=str(base / "run"), quiet=True)  # what `nlptk run` does, in this process
    return base


def test_evaluate_metrics_match_an_independent_computation(caption_run, cli):
    code, out, err = cli(["evaluate", caption_run / "run", "--json"], cwd=caption_run)
    assert code == 0, err
    metrics = json.loads(out)
    assert set(metrics) == {"exact_match", "bleu", "loss"}

    rows = digit_rows("validation", 0, 40)
    (caption_run / "vectors.jsonl").write_text("".join(json.dumps(r["features"]) + "\n" for r in rows))
    code, out, err = cli(["predict", caption_run / "run", "--features", caption_run / "vectors.jsonl"], cwd=caption_run)
    assert code == 0, err
    captions = out.splitlines()
    assert len(captions) == 40
    assert metrics["exact_match"] == pytest.approx(sum(c == r["caption"] for c, r in zip(captions, rows)) / 40)
    assert metrics["bleu"] == pytest.approx(sacrebleu.corpus_bleu(captions, [[r["caption"] for r in rows]]).score)

    _, task, model = load_run(str(caption_run / "run"))
    total, tokens = 0.0, 0
    with torch.no_grad():
        for row in rows:  # one example at a time: no padding, no batching
            ids = task.vocab.encode(row["caption"].split())
            logits = model(torch.tensor([row["features"]]), torch.tensor([[task.vocab.bos_id] + ids]))[0]
            total += float(F.cross_entropy(logits, torch.tensor(ids + [task.vocab.eos_id]), reduction="sum"))
            tokens += len(ids) + 1
    assert metrics["loss"] == pytest.approx(total / tokens, rel=1e-4)


def test_predict_reads_one_vector_or_a_list_and_checks_sizes(caption_run, cli):
    row = digit_rows("validation", 0, 1)[0]
    (caption_run / "one.json").write_text(json.dumps(row["features"]))
    code, out, err = cli(["predict", caption_run / "run", "--features", caption_run / "one.json", "--json"], cwd=caption_run)
    assert code == 0, err
    result = json.loads(out)
    assert set(result) == {"caption", "score", "nbest"} and result["nbest"][0]["caption"] == result["caption"]

    (caption_run / "short.json").write_text(json.dumps(row["features"][:10]))
    msg = one_line_error(*cli(["predict", caption_run / "run", "--features", caption_run / "short.json"], cwd=caption_run))
    assert "has 10 numbers, but the model reads vectors of 64" in msg and "short.json" in msg
    msg = one_line_error(*cli(["predict", caption_run / "run", "a handwritten one"], cwd=caption_run))
    assert "reads feature vectors, not text" in msg and "--features FILE" in msg

    run = nlptoolkit.load(caption_run / "run")  # the Python API takes one vector, or a list of them
    assert run.predict(row["features"]) == result
    assert run.predict([row["features"]] * 2) == [result, result]


def test_predict_beam_and_nbest(caption_run, cli):
    rows = digit_rows("validation", 0, 3)
    (caption_run / "three.jsonl").write_text("".join(json.dumps(r["features"]) + "\n" for r in rows))
    code, out, err = cli(["predict", caption_run / "run", "--features", caption_run / "three.jsonl", "--beam", "4", "--nbest", "3", "--json"], cwd=caption_run)
    assert code == 0, err
    results = [json.loads(line) for line in out.splitlines()]
    assert len(results) == 3
    _, task, model = load_run(str(caption_run / "run"))
    for result in results:
        scores = [alt["score"] for alt in result["nbest"]]
        assert len(scores) == 3 and scores == sorted(scores, reverse=True)
        assert len({alt["caption"] for alt in result["nbest"]}) == 3  # three different captions
    code, out, err = cli(["predict", caption_run / "run", "--features", caption_run / "three.jsonl", "--beam", "4", "--nbest", "3"], cwd=caption_run)
    assert len(out.splitlines()) == 9 and all("\t" in line for line in out.splitlines())
    msg = one_line_error(*cli(["predict", caption_run / "run", "--features", caption_run / "three.jsonl", "--nbest", "3"], cwd=caption_run))
    assert "--nbest 3: at most the beam size (1)" in msg


def test_features_for_a_text_task_are_refused(cli, trained_run, tmp_path):
    (tmp_path / "v.json").write_text("[0.5, 0.25]")
    msg = one_line_error(*cli(["predict", trained_run.dir, "--features", tmp_path / "v.json"]))
    assert "a 'sentiment' run reads text, not feature vectors" in msg


@pytest.mark.slow
def test_recipe_reaches_the_target():
    """recipes/captioning.yaml: exact caption match >= 0.92 on validation (a logistic regression on the pixels: ~0.95)."""
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "nlptoolkit.cli", "run", str(REPO / "recipes" / "captioning.yaml"),
                        "--output-dir", f"{tmp}/run", "--quiet"], cwd=REPO, check=True)
        summary = json.loads(Path(f"{tmp}/run/summary.json").read_text())
    assert summary["final"]["exact_match"] >= 0.92


def test_inspect_refuses_a_captioning_run_in_one_line(caption_run, cli):
    """Its input is a feature vector: there are no input tokens to colour, and saying so beats a confusing failure."""
    (caption_run / "text.txt").write_text("a few words\n")
    msg = one_line_error(*cli(["inspect", caption_run / "run", "--text", caption_run / "text.txt", "--out", caption_run / "r.html"], cwd=caption_run))
    assert "reads feature vectors, not text" in msg
    assert not (caption_run / "r.html").exists()
