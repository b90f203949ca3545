"""Recipes: ${VAR} interpolation, --set overrides, line numbers, numbers, round trips."""
from __future__ import annotations

import re

import pytest
import yaml

from conftest import REPO
from nlptoolkit.config_schema import Locator
from nlptoolkit.errors import NlptkError
from nlptoolkit.recipe import interpolate, load_recipe, read_yaml, recipe_from_dict


def where() -> Locator:
    return Locator("r.yaml", {})


# --------------------------------------------------------------------------
# interpolation
# --------------------------------------------------------------------------
def test_interpolate_set_variable():
    assert interpolate("${A}/x", "k", where(), {"A": "/data"}) == "/data/x"


def test_interpolate_default_when_unset_or_empty():
    assert interpolate("${A:-../shared}/x", "k", where(), {}) == "../shared/x"
    assert interpolate("${A:-../shared}/x", "k", where(), {"A": ""}) == "../shared/x"
    assert interpolate("${A:-../shared}/x", "k", where(), {"A": "/d"}) == "/d/x"


def test_interpolate_empty_default():
    assert interpolate("a${A:-}b", "k", where(), {}) == "ab"


def test_whole_value_variable_is_typed():
    assert interpolate("${N:-3}", "k", where(), {}) == 3
    assert type(interpolate("${N:-3}", "k", where(), {})) is int
    assert interpolate("${N}", "k", where(), {"N": "0.5"}) == 0.5
    assert interpolate("${N}", "k", where(), {"N": "true"}) is True
    # inside a longer string the text stays text
    assert interpolate("run-${N:-3}", "k", where(), {}) == "run-3"


def test_interpolate_nested_and_untouched():
    data = {"a": ["${X}", 1, {"b": "${Y:-y}"}], "c": None, "d": "no vars", "e": "$X not braced"}
    assert interpolate(data, "", where(), {"X": "x"}) == {"a": ["x", 1, {"b": "y"}], "c": None, "d": "no vars", "e": "$X not braced"}


def test_interpolate_unset_names_key_and_variable():
    with pytest.raises(NlptkError) as info:
        interpolate({"data": {"files": {"train": "${NOPE}/t.jsonl"}}}, "", Locator("r.yaml", {"data.files.train": 9}), {})
    assert str(info.value).startswith("r.yaml:9: data.files.train: environment variable NOPE is not set")
    assert "${NOPE:-default}" in str(info.value)


def test_load_recipe_interpolates_from_environment(tiny_sentiment, monkeypatch):
    text = tiny_sentiment.text.replace("  epochs: 1\n", "  epochs: ${NLPTK_T_EPOCHS:-2}\n")
    text = text.replace("name: tiny\n", "name: tiny-${NLPTK_T_SUFFIX:-x}\n")
    path = tiny_sentiment.dir / "r.yaml"
    path.write_text(text)
    monkeypatch.delenv("NLPTK_T_EPOCHS", raising=False)
    monkeypatch.delenv("NLPTK_T_SUFFIX", raising=False)
    recipe = load_recipe(str(path))
    assert recipe.train.epochs == 2 and recipe.name == "tiny-x"
    monkeypatch.setenv("NLPTK_T_EPOCHS", "5")
    monkeypatch.setenv("NLPTK_T_SUFFIX", "gru")
    recipe = load_recipe(str(path))
    assert recipe.train.epochs == 5 and recipe.name == "tiny-gru"
    monkeypatch.setenv("NLPTK_T_EPOCHS", "five")
    with pytest.raises(NlptkError, match=r"train\.epochs: expected an integer, got 'five'"):
        load_recipe(str(path))


# --------------------------------------------------------------------------
# overrides
# --------------------------------------------------------------------------
def test_overrides(tiny_sentiment):
    recipe = load_recipe(str(tiny_sentiment.recipe), ["train.epochs=3", "encoder.cell=gru"])
    assert recipe.train.epochs == 3 and recipe.encoder.cell == "gru"
    # untouched keys keep their recipe values
    assert recipe.encoder.hidden_size == 16 and recipe.train.batch_size == 8


def test_override_later_wins_and_creates_sections(tiny_sentiment):
    recipe = load_recipe(
        str(tiny_sentiment.recipe),
        ["train.epochs=3", "train.epochs=4", "train.lr=2e-3", "encoder.bidirectional=true", "task.dropout=0.1"],
    )
    assert recipe.train.epochs == 4
    assert recipe.train.lr == pytest.approx(0.002)
    assert recipe.encoder.bidirectional is True
    assert recipe.task_options.dropout == pytest.approx(0.1)


def test_override_value_is_yaml(tiny_sentiment):
    recipe = load_recipe(str(tiny_sentiment.recipe), ["train.max_steps=null", "data.tokenizer.max_size=100"])
    assert recipe.train.max_steps is None and recipe.data.tokenizer.max_size == 100


def test_override_into_scalar_is_an_error(tiny_sentiment):
    with pytest.raises(NlptkError, match=r"'train\.epochs' is not a mapping"):
        load_recipe(str(tiny_sentiment.recipe), ["train.epochs.x=1"])


def test_override_errors_point_at_set(tiny_sentiment):
    with pytest.raises(NlptkError) as info:
        load_recipe(str(tiny_sentiment.recipe), ["encoder.cell=transformer"])
    assert str(info.value).startswith("--set encoder.cell: expected one of 'rnn', 'lstm', 'gru'")


# --------------------------------------------------------------------------
# line numbers
# --------------------------------------------------------------------------
RECIPE = """\
name: lines
task:
  name: sentiment
data:
  files:
    train: t.jsonl
encoder:
  cell: gru
  hidden_size: big
"""


def test_read_yaml_records_lines():
    _, lines = read_yaml(RECIPE, "r.yaml")
    assert lines["name"] == 1 and lines["task.name"] == 3 and lines["data.files.train"] == 6
    assert lines["encoder.hidden_size"] == 9


def test_type_error_has_line(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(RECIPE)
    with pytest.raises(NlptkError) as info:
        load_recipe(str(path))
    assert str(info.value).startswith(f"{path}:9: encoder.hidden_size: expected an integer, got 'big' (str)")


def test_section_level_errors_point_at_section(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(RECIPE.replace("  hidden_size: big\n", "  hidden_size: 8\n").replace("  files:\n    train: t.jsonl\n", "  disk: d\n  hub: h\n"))
    with pytest.raises(NlptkError) as info:
        load_recipe(str(path))
    assert str(info.value).startswith(f"{path}:4: data: give exactly one data source (hub, files or disk), got hub and disk")


def test_duplicate_key_has_line(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(RECIPE.replace("  cell: gru\n", "  cell: gru\n  cell: lstm\n"))
    with pytest.raises(NlptkError, match=re.escape(f"{path}:9: encoder.cell: duplicate key")):
        load_recipe(str(path))


def test_scientific_notation_string_is_a_float(tmp_path):
    # PyYAML (YAML 1.1) reads 2e-3 as the string '2e-3'; a float field accepts it
    assert yaml.safe_load("lr: 2e-3")["lr"] == "2e-3"
    path = tmp_path / "r.yaml"
    path.write_text(RECIPE.replace("  hidden_size: big\n", "  hidden_size: 8\ntrain:\n  lr: 2e-3\n  weight_decay: 1E-5\n"))
    recipe = load_recipe(str(path))
    assert recipe.train.lr == 0.002 and type(recipe.train.lr) is float
    assert recipe.train.weight_decay == 1e-5
    # but only where a number is expected: a string field keeps it as text
    path.write_text(RECIPE.replace("  hidden_size: big\n", "  hidden_size: 8\ntrain:\n  lr: fast\n"))
    with pytest.raises(NlptkError, match=r":11: train\.lr: expected a number"):
        load_recipe(str(path))


def test_integer_field_rejects_float_and_bool(tmp_path):
    path = tmp_path / "r.yaml"
    for bad, shown in (("8.5", "8.5 (float)"), ("true", "True (bool)")):
        path.write_text(RECIPE.replace("hidden_size: big", f"hidden_size: {bad}"))
        with pytest.raises(NlptkError, match=re.escape(f"expected an integer, got {shown}")):
            load_recipe(str(path))


# --------------------------------------------------------------------------
# round trip of the resolved recipe
# --------------------------------------------------------------------------
def test_resolved_recipe_round_trips(tiny_sentiment, monkeypatch):
    monkeypatch.setenv("NLPTK_T_LR", "0.01")
    path = tiny_sentiment.dir / "r.yaml"
    path.write_text(tiny_sentiment.text.replace("  lr: 0.05", "  lr: ${NLPTK_T_LR}"))
    recipe = load_recipe(str(path), ["encoder.cell=gru", "train.epochs=2"])
    saved = recipe.to_yaml()
    assert "${" not in saved  # the saved recipe holds values, not variables
    again = recipe_from_dict(yaml.safe_load(saved), file="recipe.yaml")
    assert again.to_dict() == recipe.to_dict()
    assert again.train.lr == 0.01 and again.encoder.cell == "gru" and again.train.epochs == 2
    assert again.task == "sentiment" and again.task_options == recipe.task_options
    assert again.to_yaml() == saved


def test_recipe_must_be_a_mapping(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(NlptkError, match="a recipe is a mapping of keys"):
        load_recipe(str(path))


def test_validate_sentiment_recipe_from_repo_root(cli):
    code, out, err = cli(["validate", "recipes/sentiment.yaml"], cwd=REPO)
    assert code == 0, err
    assert out.strip() == "recipes/sentiment.yaml: ok (task sentiment)"


def test_validate_all_shipped_recipes(cli):
    recipes = sorted((REPO / "recipes").glob("*.yaml"))
    assert recipes
    for recipe in recipes:
        code, out, err = cli(["validate", str(recipe.relative_to(REPO))], cwd=REPO)
        assert code == 0, f"{recipe}: {err}"
