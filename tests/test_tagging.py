"""The tagging task: data checks, CoNLL files, padding, metrics (seqeval, hand-computed), frame
tagging on a rule that needs memory, and run / evaluate / predict through the CLI."""
from __future__ import annotations

import importlib
import json
import random
from pathlib import Path

import pytest
import torch

from conftest import one_line_error, shared_data_dir, write_jsonl
from nlptoolkit.data.conll import read_conll
from nlptoolkit.errors import NlptkError
from nlptoolkit.registry import registry
from nlptoolkit.runs import load_run

POS_DIR = shared_data_dir() / "tagging" / "pos_wsj"
NER_DIR = shared_data_dir() / "tagging" / "ner_tweets"


def rows(path: Path, start: int = 0, stop: int = None):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f][start:stop]


def tagging_module():
    """The plugin's module, found through the registry (the package may install it under another name)."""
    return importlib.import_module(registry.get("tagging").__module__)


RECIPE = """\
name: {name}
task:
  name: tagging
{task}
seed: 3
device: cpu
data:
  files:
    train: {train_file}
    validation: {validation_file}
{data}
encoder: {{cell: {cell}, embedding_dim: 16, hidden_size: {hidden}, bidirectional: {bidirectional}}}
train:
  lr: {lr}
  batch_size: {batch_size}
  epochs: {epochs}
{train}
"""


def write_recipe(folder: Path, name: str = "tag", task: str = "", data: str = "", train: str = "", cell: str = "lstm",
                 hidden: int = 16, bidirectional: bool = True, lr: float = 0.01, batch_size: int = 8, epochs: int = 1,
                 train_file: Path = None, validation_file: Path = None) -> Path:
    text = RECIPE.format(
        name=name, task=task, data=data, train=train, cell=cell, hidden=hidden, bidirectional=str(bidirectional).lower(),
        lr=lr, batch_size=batch_size, epochs=epochs, train_file=train_file, validation_file=validation_file,
    )
    path = folder / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------
# metrics: seqeval's entity rules, checked by hand
# --------------------------------------------------------------------------
def test_entity_metrics_hand_computed():
    metrics = tagging_module().tagging_metrics
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG", "I-ORG", "O"]]
    # sentence 1: PER right, LOC missed (tagged O); sentence 2: ORG cut short (wrong boundary) -> wrong
    pred = [["B-PER", "I-PER", "O", "O"], ["O", "B-ORG", "O", "O"]]
    m = metrics(pred, gold, entity=True, loss_sum=4.0)
    # 3 gold entities, 2 predicted, 1 correct
    assert m["precision"] == pytest.approx(1 / 2)
    assert m["recall"] == pytest.approx(1 / 3)
    assert m["f1"] == pytest.approx(2 * (1 / 2) * (1 / 3) / (1 / 2 + 1 / 3))
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["loss"] == pytest.approx(4.0 / 8)
    assert m["PER_f1"] == 1.0 and m["LOC_recall"] == 0.0 and m["ORG_precision"] == 0.0 and m["ORG_recall"] == 0.0


def test_an_inside_tag_after_O_starts_an_entity_as_in_conlleval():
    metrics = tagging_module().tagging_metrics
    gold = [["O", "B-PER", "I-PER", "O"]]
    # conlleval reads "O I-PER I-PER" as one PER entity over the same two tokens: a match
    assert metrics([["O", "I-PER", "I-PER", "O"]], gold, True, 0.0)["f1"] == 1.0
    # an I- of another type after O is an entity of that type: a wrong one
    m = metrics([["O", "B-PER", "I-PER", "I-LOC"]], gold, True, 0.0)
    assert m["precision"] == pytest.approx(1 / 2) and m["recall"] == 1.0
    # "B-PER I-LOC" is two entities (PER of one token, LOC of one): neither matches the 2-token PER
    m = metrics([["O", "B-PER", "I-LOC", "O"]], gold, True, 0.0)
    assert m["precision"] == 0.0 and m["recall"] == 0.0 and m["f1"] == 0.0
    assert m["accuracy"] == pytest.approx(3 / 4)


def test_non_entity_tags_give_accuracy_and_loss_only():
    m = tagging_module().tagging_metrics([["DT", "NN"], ["VB"]], [["DT", "VB"], ["VB"]], entity=False, loss_sum=3.0)
    assert m == {"accuracy": pytest.approx(2 / 3), "loss": pytest.approx(1.0)}


# --------------------------------------------------------------------------
# CoNLL files
# --------------------------------------------------------------------------
CONLL = "-DOCSTART- -X- -X- O\n\nEU\tNNP\tB-ORG\nrejects\tVBZ\tO\n\t\nPeter NNP B-PER\nBlackburn NNP I-PER\n\n\n"


def test_conll_sentences_default_and_named_columns(tmp_path):
    path = tmp_path / "train.conll"
    path.write_text(CONLL, encoding="utf-8")
    assert read_conll(path, None, "data.files.train") == {
        "tokens": [["EU", "rejects"], ["Peter", "Blackburn"]],
        "tags": [["B-ORG", "O"], ["B-PER", "I-PER"]],
    }
    named = read_conll(path, ["words", "pos", "ner"], "data.files.train")
    assert named["pos"] == [["NNP", "VBZ"], ["NNP", "NNP"]] and named["ner"][1] == ["B-PER", "I-PER"]


@pytest.mark.parametrize("text,columns,expected", [
    ("a\tB\nb\n", None, "line 2: one column"),
    ("a B C\nb C\n", None, "line 2: 2 columns, but the lines before have 3"),
    ("a B\n", ["tokens", "pos", "tags"], "line 1: 2 columns, but data.columns names 3"),
    ("a B\n", ["tokens", "tokens"], "names a column twice"),
])
def test_conll_errors_name_the_line(tmp_path, text, columns, expected):
    path = tmp_path / "bad.conll"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(NlptkError, match=expected):
        read_conll(path, columns, "data.files.train")


def test_conll_recipe_trains_and_evaluates(cli, tmp_path):
    sentences = rows(NER_DIR / "train.jsonl", 0, 40)
    text = "".join("\n".join(f"{w}\t{t}" for w, t in zip(r["tokens"], r["tags"])) + "\n\n" for r in sentences)
    train = tmp_path / "train.conll"
    train.write_text("-DOCSTART-\tO\n\n" + text, encoding="utf-8")
    recipe = write_recipe(tmp_path, task="", data="  format: conll", train="  max_steps: 2", train_file=train, validation_file=train)
    code, out, err = cli(["run", recipe, "--output-dir", tmp_path / "run", "--quiet"])
    assert code == 0, err
    code, out, err = cli(["evaluate", tmp_path / "run", "--files", f"again={train}", "--json"])
    assert code == 0, err
    assert {"accuracy", "precision", "recall", "f1", "loss"} <= set(json.loads(out))


# --------------------------------------------------------------------------
# bad data: one line naming the file and row
# --------------------------------------------------------------------------
GOOD = {"tokens": ["a", "b"], "tags": ["X", "Y"]}


@pytest.mark.parametrize("bad,expected", [
    ({"tokens": ["a", "b", "c"], "tags": ["X", "Y"]}, "row 3: 3 tokens in 'tokens' but 2 tags in 'tags'"),
    ({"tokens": [], "tags": []}, "row 3: field 'tokens' is empty"),
    ({"tokens": ["a", "b"], "tags": ["X", 7]}, "row 3: tag 2 of 'tags' is 7 (int), not a string"),
    ({"tokens": "a b", "tags": ["X", "Y"]}, "row 3: field 'tokens' is str, not a list"),
])
def test_bad_rows_are_one_line_errors(cli, tmp_path, bad, expected):
    train = write_jsonl(tmp_path / "train.jsonl", [GOOD, GOOD, bad, GOOD])
    recipe = write_recipe(tmp_path, train_file=train, validation_file=train)
    code, out, err = cli(["run", recipe, "--output-dir", tmp_path / "run"])
    line = one_line_error(code, out, err)
    assert f"{train} (data.files.train), {expected}" in line


def test_entity_metric_on_non_entity_tags_is_a_recipe_error(cli, tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [GOOD] * 4)
    recipe = write_recipe(tmp_path, train="  early_stopping: {metric: f1}", train_file=train, validation_file=train)
    line = one_line_error(*cli(["run", recipe, "--output-dir", tmp_path / "run"]))
    assert "train.early_stopping.metric: 'f1' is an entity score" in line and "use accuracy" in line


# --------------------------------------------------------------------------
# a small POS run (char features + CRF) shared by the tests below
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pos_run(tmp_path_factory):
    import nlptoolkit.cli

    folder = tmp_path_factory.mktemp("pos")
    train = write_jsonl(folder / "train.jsonl", rows(POS_DIR / "train.jsonl", 0, 120))
    validation = write_jsonl(folder / "validation.jsonl", rows(POS_DIR / "validation.jsonl", 0, 30))
    recipe = write_recipe(
        folder, name="pos", task="  decoder: crf\n  char_encoder: {hidden_size: 8, embedding_dim: 8}",
        data="  tokenizer: {kind: word, lowercase: true}", train="  max_steps: 12", lr=0.02, batch_size=16, epochs=2,
        train_file=train, validation_file=validation,
    )
    run_dir = folder / "run"
    with pytest.raises(SystemExit) as done:
        nlptoolkit.cli.main(["run", str(recipe), "--output-dir", str(run_dir), "--quiet"])
    assert done.value.code in (0, None)
    return run_dir, validation


def test_padding_changes_neither_loss_nor_metrics(pos_run):
    run_dir, validation = pos_run
    recipe, task, model = load_run(str(run_dir))
    from nlptoolkit.data.sources import load_files

    examples = task.encode(load_files({"v": str(validation)})["v"], "v")
    recipe.train.batch_size = 1  # each sentence alone: no padding at all
    alone = task.evaluate(model, examples)
    recipe.train.batch_size = 30  # one batch, lengths 4..50
    assert max(len(e.tags) for e in examples) > 2 * min(len(e.tags) for e in examples)
    together = task.evaluate(model, examples)
    assert together.keys() == alone.keys()
    for key in alone:
        assert together[key] == pytest.approx(alone[key], rel=1e-5, abs=1e-6), key


def test_predict_prints_token_tag_pairs_that_match_evaluate(cli, pos_run, tmp_path):
    run_dir, validation = pos_run
    code, out, err = cli(["predict", run_dir, "The cat sat ."])
    assert code == 0, err
    pairs = out.strip().split(" ")
    assert [p.rsplit("/", 1)[0] for p in pairs] == ["The", "cat", "sat", "."]
    _, task, _ = load_run(str(run_dir))
    assert all(p.rsplit("/", 1)[1] in task.tags.itos for p in pairs)
    code, out, err = cli(["predict", run_dir, "--json", "The cat sat ."])
    result = json.loads(out)
    assert result["input"] == "The cat sat ." and result["tokens"] == ["The", "cat", "sat", "."]
    assert [f"{w}/{t}" for w, t in zip(result["tokens"], result["tags"])] == pairs

    sentences = rows(validation)
    lines = tmp_path / "sentences.txt"
    lines.write_text("".join(" ".join(r["tokens"]) + "\n" for r in sentences), encoding="utf-8")
    code, out, err = cli(["predict", run_dir, "--file", lines])
    assert code == 0, err
    predicted = [[p.rsplit("/", 1)[1] for p in line.split(" ")] for line in out.strip().split("\n")]
    assert len(predicted) == len(sentences)
    correct = sum(p == g for ps, r in zip(predicted, sentences) for p, g in zip(ps, r["tags"]))
    code, out, err = cli(["evaluate", run_dir, "--json"])
    assert json.loads(out)["accuracy"] == pytest.approx(correct / sum(len(r["tags"]) for r in sentences))


# --------------------------------------------------------------------------
# frame tagging: vectors in, a label per frame that needs memory
# --------------------------------------------------------------------------
def running_sum_data(n: int, seed: int):
    """Frames of 2 numbers; a frame's label says whether the running sum of feature 0 is positive.

    No rule that sees only the current frame can do this well; a one-directional
    RNN can, by carrying the sum in its state.
    """
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        frames, total, tags = [], 0.0, []
        for _ in range(rng.randint(5, 16)):
            x = rng.choice([-1.0, 1.0]) * rng.uniform(0.2, 1.0)
            total += x
            frames.append([round(x, 4), round(rng.gauss(0, 1), 4)])
            tags.append("pos" if total > 0 else "neg")
        out.append({"frames": frames, "labels": tags})
    return out


def test_frame_tagging_learns_a_running_sum(cli, tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", running_sum_data(400, 0))
    validation_rows = running_sum_data(100, 1)
    validation = write_jsonl(tmp_path / "validation.jsonl", validation_rows)
    recipe = write_recipe(
        tmp_path, task="  input: vectors\n  tokens_field: frames\n  tags_field: labels\n  dropout: 0.0",
        cell="gru", hidden=24, bidirectional=False, lr=0.02, batch_size=16, epochs=12, train_file=train, validation_file=validation,
    )
    code, out, err = cli(["run", recipe, "--output-dir", tmp_path / "run", "--quiet"])
    assert code == 0, err
    code, out, err = cli(["evaluate", tmp_path / "run", "--json"])
    accuracy = json.loads(out)["accuracy"]
    # the best one-frame rule: the sign of the current frame
    memoryless = [("pos" if f[0] > 0 else "neg") == t for r in validation_rows for f, t in zip(r["frames"], r["labels"])]
    baseline = sum(memoryless) / len(memoryless)
    assert baseline < 0.8
    assert accuracy >= 0.9 and accuracy > baseline + 0.15, (accuracy, baseline)

    # predict reads one JSON list of frames per input
    frames = validation_rows[0]["frames"]
    code, out, err = cli(["predict", tmp_path / "run", json.dumps(frames)])
    assert code == 0, err
    assert len(out.split()) == len(frames) and set(out.split()) <= {"pos", "neg"}

    # a frame of the wrong width names both widths
    wrong = write_jsonl(tmp_path / "wrong.jsonl", [{"frames": [[0.1, 0.2], [0.1, 0.2, 0.3]], "labels": ["pos", "pos"]}])
    line = one_line_error(*cli(["evaluate", tmp_path / "run", "--files", f"test={wrong}"]))
    assert f"{wrong} (--files test), row 1, frame 2: the vector has 3 numbers, but the model reads vectors of 2" in line
    line = one_line_error(*cli(["predict", tmp_path / "run", "[[1, 2, 3, 4]]"]))
    assert "input 1, frame 1: the vector has 4 numbers, but the model reads vectors of 2" in line


# --------------------------------------------------------------------------
# the bundled recipes meet their targets (minutes each: pytest -m slow)
# --------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("recipe,metric,target", [("recipes/pos.yaml", "accuracy", 0.95), ("recipes/ner.yaml", "f1", 0.40)])
def test_bundled_recipe_meets_its_target(run_cli, tmp_path, recipe, metric, target):
    from conftest import REPO

    code, out, err = run_cli(["run", REPO / recipe, "--output-dir", tmp_path / "run", "--quiet"], cwd=REPO, timeout=1800)
    assert code == 0, err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["best"]["metrics"][metric] >= target, summary["best"]
