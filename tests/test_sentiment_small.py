"""End to end on tiny real data: run, evaluate, predict; metrics checked independently."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
import yaml

from conftest import make_tiny_sentiment, real_rows
from nlptoolkit.metrics import accuracy, classification_metrics, macro_f1
from nlptoolkit.recipe import recipe_from_dict
from nlptoolkit.runs import load_run

RUN_FILES = ["recipe.yaml", "metrics.jsonl", "summary.json", "best.pt", "last.pt", "curves.png"]


def metrics_lines(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def loaded(trained_run):
    return load_run(str(trained_run.dir))


def reference_predictions(loaded, rows):
    """Predict each row alone (no batching, no padding): the independent reference."""
    _, task, model = loaded
    preds, probs, losses = [], [], []
    with torch.no_grad():
        for row in rows:
            ids = task.vocab.encode(task.tokenizer.tokenize(row["text"]))
            logits = model(torch.tensor([ids]), torch.tensor([len(ids)]))[0]
            p = logits.softmax(-1)
            preds.append(task.labels.itos[int(p.argmax())])
            probs.append(float(p.max()))
            if row.get("label") in task.labels:
                losses.append(float(F.cross_entropy(logits[None], torch.tensor([task.labels.stoi[row["label"]]]))))
    return preds, probs, losses


def hand_macro_f1(preds, gold):
    scores = []
    for c in sorted(set(preds) | set(gold)):
        tp = sum(p == c and g == c for p, g in zip(preds, gold))
        precision = tp / sum(p == c for p in preds) if any(p == c for p in preds) else 0.0
        recall = tp / sum(g == c for g in gold) if any(g == c for g in gold) else 0.0
        scores.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    return sum(scores) / len(scores)


# --------------------------------------------------------------------------
# nlptk run
# --------------------------------------------------------------------------
def test_run_writes_the_run_folder(trained_run):
    run_dir = trained_run.dir
    for name in RUN_FILES:
        assert (run_dir / name).is_file(), name
    assert (run_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert trained_run.stdout.startswith("finished (max_steps)")
    assert f"run folder {run_dir}" in trained_run.stdout

    lines = metrics_lines(run_dir)
    assert [r["step"] for r in lines] == [3, 6]  # eval_every 3, max_steps 6
    for record in lines:
        assert set(record["validation"]) == {"accuracy", "macro_f1", "loss"}
        acc = record["validation"]["accuracy"]
        assert round(acc * 20) == pytest.approx(acc * 20)  # a fraction of the 20 validation rows
        assert math.isfinite(record["train_loss"]) and record["lr"] == pytest.approx(0.05)

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["stopped"] == "max_steps" and summary["steps"] == 6 and summary["task"] == "sentiment"
    assert summary["final"] == lines[-1]["validation"]
    accuracies = [r["validation"]["accuracy"] for r in lines]
    best = max(range(len(lines)), key=lambda i: (accuracies[i], -i))  # first of the best
    assert summary["best"]["metric"] == "accuracy"
    assert summary["best"]["step"] == lines[best]["step"] and summary["best"]["value"] == accuracies[best]
    assert summary["best"]["metrics"] == lines[best]["validation"]


def test_saved_recipe_round_trips(trained_run):
    saved = yaml.safe_load((trained_run.dir / "recipe.yaml").read_text())
    recipe = recipe_from_dict(saved)
    assert recipe.to_dict() == saved
    assert recipe.encoder.hidden_size == 16 and recipe.encoder.embedding_dim == 16 and recipe.train.max_steps == 6
    assert recipe.data.files["train"] == str(trained_run.data.train)


def test_checkpoint_holds_what_the_model_needs(loaded, trained_run):
    recipe, task, model = loaded
    assert task.labels.itos == ["negative", "positive"]
    train_words = {w for r in real_rows("train", 0, 60) for w in r["text"].lower().split()}
    assert set(task.vocab.itos[4:]) == train_words  # vocabulary from the training file only
    assert model.classify.out_features == 2 and model.encoder.output_size == 16
    assert not model.training


# --------------------------------------------------------------------------
# nlptk evaluate
# --------------------------------------------------------------------------
def test_evaluate_json_matches_independent_recomputation(trained_run, loaded, run_cli, tmp_path):
    rows = real_rows("validation", 20, 60)
    code, out, err = run_cli(["evaluate", trained_run.dir, "--files", f"test={trained_run.data.test}", "--json"], cwd=tmp_path)
    assert code == 0, err
    assert len(out.strip().splitlines()) == 1 and out.endswith("\n")
    metrics = json.loads(out)
    assert set(metrics) == {"accuracy", "macro_f1", "loss"}

    preds, _, losses = reference_predictions(loaded, rows)
    gold = [r["label"] for r in rows]
    assert set(preds) == {"negative", "positive"}  # a model that predicts one class would test little
    assert metrics["accuracy"] == pytest.approx(sum(p == g for p, g in zip(preds, gold)) / len(rows), abs=1e-12)
    assert metrics["macro_f1"] == pytest.approx(hand_macro_f1(preds, gold), abs=1e-9)
    assert metrics["loss"] == pytest.approx(sum(losses) / len(losses), abs=1e-5)


def test_evaluate_default_split_reproduces_best_checkpoint_metrics(trained_run, cli):
    code, out, err = cli(["evaluate", trained_run.dir, "--json"])
    assert code == 0, err
    metrics = json.loads(out)
    best = json.loads((trained_run.dir / "summary.json").read_text())["best"]["metrics"]
    assert metrics["accuracy"] == best["accuracy"] and metrics["macro_f1"] == pytest.approx(best["macro_f1"])
    assert metrics["loss"] == pytest.approx(best["loss"], abs=1e-6)
    code, out, err = cli(["evaluate", trained_run.dir, "--json", "--checkpoint", "last"])
    assert json.loads(out) == pytest.approx(json.loads((trained_run.dir / "summary.json").read_text())["final"], abs=1e-6)


def test_evaluate_several_splits(trained_run, cli):
    code, out, err = cli(
        ["evaluate", trained_run.dir, "--files", f"test={trained_run.data.test}", "--split", "validation", "--json"]
    )
    assert code == 0, err
    both = json.loads(out)
    assert set(both) == {"test", "validation"} and set(both["test"]) == {"accuracy", "macro_f1", "loss"}
    code, text, err = cli(["evaluate", trained_run.dir, "--files", f"test={trained_run.data.test}"])
    assert text.startswith("test: accuracy=") and f"accuracy={both['test']['accuracy']:.4f}" in text


# --------------------------------------------------------------------------
# nlptk predict
# --------------------------------------------------------------------------
def check_predictions(output, texts, loaded):
    lines = output.rstrip("\n").split("\n")
    assert len(lines) == len(texts)
    preds, probs, _ = reference_predictions(loaded, [{"text": t} for t in texts])
    for line, text, pred, prob in zip(lines, texts, preds, probs):
        label, probability, echoed = line.split("\t")
        assert echoed == text and label == pred
        assert float(probability) == pytest.approx(prob, abs=6e-5) and 0.5 <= float(probability) <= 1.0


def test_predict_arguments(trained_run, loaded, cli):
    texts = ["a gorgeous, witty, seductive movie.", "dull and lifeless", "zzz-unknown-words-only"]
    code, out, err = cli(["predict", trained_run.dir, *texts])
    assert code == 0, err
    check_predictions(out, texts, loaded)


def test_predict_file(trained_run, loaded, cli, tmp_path):
    texts = [r["text"] for r in real_rows("validation", 60, 70)]
    path = tmp_path / "inputs.txt"
    path.write_text("\n".join(texts) + "\n\n   \n", encoding="utf-8")  # blank lines are skipped
    code, out, err = cli(["predict", trained_run.dir, "--file", path])
    assert code == 0, err
    check_predictions(out, texts, loaded)


def test_predict_stdin(trained_run, loaded, run_cli, tmp_path):
    texts = [r["text"] for r in real_rows("validation", 70, 75)]
    code, out, err = run_cli(["predict", trained_run.dir], cwd=tmp_path, input="\n".join(texts) + "\n")
    assert code == 0, err
    check_predictions(out, texts, loaded)


# --------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------
def test_macro_f1_three_classes_closed_form():
    gold = [0, 0, 0, 1, 1, 2]
    pred = [0, 0, 1, 1, 2, 2]
    # class 0: tp=2 fp=0 fn=1 -> F1 = 4/5 ; class 1: tp=1 fp=1 fn=1 -> 1/2 ; class 2: tp=1 fp=1 fn=0 -> 2/3
    expected = (4 / 5 + 1 / 2 + 2 / 3) / 3
    assert macro_f1(pred, gold) == pytest.approx(expected, abs=1e-12)
    assert accuracy(pred, gold) == pytest.approx(4 / 6)
    assert macro_f1(pred, gold) == pytest.approx(hand_macro_f1(pred, gold))


def test_macro_f1_class_only_predicted_or_only_gold():
    # class 2 never in gold but predicted once: it counts with F1 0 (scikit-learn's macro average)
    gold = [0, 1, 1, 0]
    pred = [0, 1, 2, 0]
    expected = (1.0 + 2 / 3 + 0.0) / 3
    assert macro_f1(pred, gold) == pytest.approx(expected)
    assert macro_f1([0, 0], [0, 0]) == 1.0
    assert classification_metrics(3.0, [1, 0], [1, 1]) == {"accuracy": 0.5, "macro_f1": pytest.approx((0 + 2 / 3) / 2), "loss": 1.5}


# --------------------------------------------------------------------------
# determinism
# --------------------------------------------------------------------------
def validation_numbers(run_dir):
    return [(r["step"], r["train_loss"], r["validation"]) for r in metrics_lines(run_dir)]


def test_same_recipe_and_seed_give_identical_metrics(cli, tmp_path, trained_run):
    tiny = make_tiny_sentiment(tmp_path / "data")
    for out in ("a", "b"):
        code, _, err = cli(["run", tiny.recipe, "--output-dir", out, "--quiet"])
        assert code == 0, err
    a, b = validation_numbers(tmp_path / "a"), validation_numbers(tmp_path / "b")
    assert a == b
    # and the same as the run made by another process (the CLI subprocess)
    assert a == validation_numbers(trained_run.dir)
    # a different seed trains a different model
    code, _, err = cli(["run", tiny.recipe, "--output-dir", "c", "--quiet", "--set", "seed=8"])
    assert code == 0, err
    assert validation_numbers(tmp_path / "c") != a
