"""The Python API (nlptoolkit.train / load / Run) and the CLI as a thin layer over it."""
from __future__ import annotations

import json

import pytest
import yaml

import nlptoolkit
from conftest import real_rows


@pytest.fixture
def api_run(tiny_sentiment, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = nlptoolkit.train(tiny_sentiment.recipe, overrides={"train.max_steps": 6, "seed": 3}, output_dir=tmp_path / "run", quiet=True)
    return run, tiny_sentiment


def test_train_returns_the_finished_run(api_run, tmp_path):
    run, _ = api_run
    assert isinstance(run, nlptoolkit.Run) and run.path == tmp_path / "run"
    assert run.summary["steps"] == 6
    saved = yaml.safe_load((run.path / "recipe.yaml").read_text())
    assert saved["seed"] == 3 and saved["train"]["max_steps"] == 6  # overrides as a mapping, types kept


def test_predict_is_structured_and_matches_evaluate(api_run):
    """Accuracy from run.evaluate equals the share of run.predict labels that match the gold labels."""
    run, tiny = api_run
    rows = [json.loads(line) for line in tiny.test.read_text().splitlines()]
    results = run.predict([r["text"] for r in rows])
    assert [r["input"] for r in results] == [r["text"] for r in rows]
    for r in results:
        assert set(r["probabilities"]) == {"negative", "positive"}
        assert abs(sum(r["probabilities"].values()) - 1) < 1e-5
        assert r["label"] == max(r["probabilities"], key=r["probabilities"].get)
    metrics = run.evaluate(tiny.test)
    expected = sum(p["label"] == r["label"] for p, r in zip(results, rows)) / len(rows)
    assert metrics["accuracy"] == pytest.approx(expected, abs=1e-9)
    assert run.evaluate({"test": tiny.test}) == {"test": metrics}
    one = run.predict(rows[0]["text"])  # one string in, one dict out
    # alone, the text is a batch of one with no padding: the same result up to float rounding,
    # which differs between kernels (AVX2 and AVX-512 round a batch and a single row differently)
    assert {k: v for k, v in one.items() if k != "probabilities"} == {k: v for k, v in results[0].items() if k != "probabilities"}
    assert one["probabilities"] == pytest.approx(results[0]["probabilities"], abs=1e-6)


def test_load_gives_the_same_model(api_run):
    run, tiny = api_run
    again = nlptoolkit.load(run.path)
    texts = [r["text"] for r in real_rows("validation", 0, 10)]
    assert again.predict(texts) == run.predict(texts)
    assert again.evaluate() == run.evaluate(split="validation")


def test_cli_prints_what_the_api_returns(api_run, cli):
    run, tiny = api_run
    code, out, err = cli(["evaluate", run.path, "--files", f"test={tiny.test}", "--json"])
    assert code == 0, err
    assert json.loads(out) == run.evaluate(tiny.test)
    texts = [r["text"] for r in real_rows("validation", 20, 25)]
    code, out, err = cli(["predict", run.path, "--json", *texts])
    assert code == 0, err
    assert [json.loads(line) for line in out.splitlines()] == run.predict(texts)
    code, out, err = cli(["predict", run.path, *texts])
    assert out.splitlines() == [run.format_prediction(r) for r in run.predict(texts)]


def test_train_from_a_mapping(tiny_sentiment, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = yaml.safe_load(tiny_sentiment.text)
    run = nlptoolkit.train(recipe, overrides=["train.max_steps=3"], output_dir="from_dict", quiet=True)
    assert run.summary["steps"] == 3 and (tmp_path / "from_dict" / "best.pt").is_file()
    assert recipe["train"]["max_steps"] == 6  # the caller's mapping is not changed


def test_api_mistakes_raise_nlptk_error(api_run, tmp_path):
    run, tiny = api_run
    with pytest.raises(nlptoolkit.NlptkError, match="run folder .* already exists"):
        nlptoolkit.train(tiny.recipe, output_dir=run.path, quiet=True)
    with pytest.raises(nlptoolkit.NlptkError, match="give a mapping"):
        nlptoolkit.train(tiny.recipe, overrides="train.epochs=1")
    with pytest.raises(nlptoolkit.NlptkError, match="does not exist"):
        nlptoolkit.load(tmp_path / "nope")
    with pytest.raises(nlptoolkit.NlptkError, match="cannot generate text"):
        run.generate("hello")
    with pytest.raises(nlptoolkit.NlptkError, match="give strings"):
        run.predict(["fine", 3])
