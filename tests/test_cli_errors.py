"""Every user mistake gets one line on stderr ("error: ..."), exit code 2, no traceback.

Most cases call the CLI in-process (fast); the ones that matter most for a real
process (malformed YAML, plugin syntax error, --debug, a hub dataset offline)
run `python -m nlptoolkit.cli` in a subprocess.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import one_line_error, real_rows, write_jsonl


def line_of(text: str, fragment: str) -> int:
    """1-based line number of the first line containing fragment."""
    for i, line in enumerate(text.splitlines(), start=1):
        if fragment in line:
            return i
    raise AssertionError(f"{fragment!r} not in recipe")


def variant(tiny, name: str, old: str, new: str) -> Path:
    assert old in tiny.text, old
    path = tiny.dir / name
    path.write_text(tiny.text.replace(old, new, 1), encoding="utf-8")
    return path


# --------------------------------------------------------------------------
# recipe mistakes
# --------------------------------------------------------------------------
def test_malformed_yaml_names_file_and_line(tiny_sentiment, run_cli, tmp_path):
    # a mapping key after a sequence item at the same level: line 5 of the file
    text = "name: bad\ntask:\n  name: sentiment\nplugins:\n- a.py\n  oops: 1\n"
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    code, out, err = run_cli(["validate", path], cwd=tmp_path)
    msg = one_line_error(code, out, err)
    m = re.search(re.escape(str(path)) + r":(\d+): invalid YAML", msg)
    assert m, msg
    assert int(m.group(1)) in (5, 6), msg  # the parser points at the offending line (or the one before)
    assert out == ""


def test_unclosed_quote_is_one_line(cli, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text('name: "bad\ntask: {name: sentiment}\n', encoding="utf-8")
    msg = one_line_error(*cli(["validate", path]))
    assert f"{path}:" in msg and "invalid YAML" in msg


def test_unknown_key_has_line_and_did_you_mean(cli, tiny_sentiment):
    path = variant(tiny_sentiment, "r.yaml", "  epochs: 1\n", "  epoch: 1\n")
    line = line_of(path.read_text(), "epoch: 1")
    msg = one_line_error(*cli(["validate", path]))
    assert f"{path}:{line}: train.epoch:" in msg, msg
    assert "unknown key 'epoch'" in msg and "did you mean 'epochs'" in msg, msg


def test_unknown_key_inside_nested_section(cli, tiny_sentiment):
    path = variant(tiny_sentiment, "r.yaml", "    metric: accuracy\n", "    metric: accuracy\n    patiense: 2\n")
    line = line_of(path.read_text(), "patiense")
    msg = one_line_error(*cli(["run", path, "--output-dir", "out"]))
    assert f"{path}:{line}: train.early_stopping.patiense:" in msg and "did you mean 'patience'" in msg, msg
    assert not Path("out").exists() or not any(Path("out").iterdir())


def test_wrong_type(cli, tiny_sentiment):
    path = variant(tiny_sentiment, "r.yaml", "  epochs: 1\n", "  epochs: three\n")
    line = line_of(path.read_text(), "epochs: three")
    msg = one_line_error(*cli(["run", path, "--output-dir", "out"]))
    assert f"{path}:{line}: train.epochs:" in msg and "expected an integer" in msg and "'three'" in msg, msg


def test_wrong_choice_suggests(cli, tiny_sentiment):
    path = variant(tiny_sentiment, "r.yaml", "  cell: lstm\n", "  cell: lstn\n")
    msg = one_line_error(*cli(["validate", path]))
    assert "encoder.cell" in msg and "did you mean 'lstm'" in msg, msg


def test_out_of_range(cli, tiny_sentiment):
    path = variant(tiny_sentiment, "r.yaml", "  batch_size: 8\n", "  batch_size: 0\n")
    msg = one_line_error(*cli(["validate", path]))
    assert "train.batch_size" in msg and "at least 1" in msg, msg


def test_missing_task(cli, tiny_sentiment):
    text = tiny_sentiment.text
    text = re.sub(r"task:\n  name: sentiment\n  text_field: text\n  label_field: label\n", "", text)
    assert "task" not in text.split("train:")[0]
    path = tiny_sentiment.dir / "r.yaml"
    path.write_text(text)
    msg = one_line_error(*cli(["validate", path]))
    assert "missing required key 'task'" in msg and str(path) in msg, msg


def test_missing_name(cli, tiny_sentiment):
    path = variant(tiny_sentiment, "r.yaml", "name: tiny\n", "")
    msg = one_line_error(*cli(["validate", path]))
    assert "missing required key 'name'" in msg, msg


def test_recipe_file_missing(cli, tmp_path):
    msg = one_line_error(*cli(["run", tmp_path / "nope.yaml"]))
    assert "nope.yaml does not exist" in msg


def test_unknown_task_lists_available(cli, tiny_sentiment):
    path = variant(tiny_sentiment, "r.yaml", "  name: sentiment\n", "  name: sentimnet\n")
    line = line_of(path.read_text(), "sentimnet")
    msg = one_line_error(*cli(["validate", path]))
    assert f"{path}:{line}: task.name:" in msg, msg
    assert "unknown task 'sentimnet'" in msg and "did you mean 'sentiment'" in msg, msg
    listed = re.search(r"Available tasks: ([^.;]*)", msg)
    assert listed, msg
    from nlptoolkit.registry import Registry

    assert listed.group(1).split(", ") == [e.name for e in Registry().entries()], msg
    assert "sentiment" in listed.group(1).split(", ")


def test_unknown_task_option(cli, tiny_sentiment):
    path = variant(tiny_sentiment, "r.yaml", "  text_field: text\n", "  text_feild: text\n")
    msg = one_line_error(*cli(["validate", path]))
    assert "task.text_feild" in msg and "did you mean 'text_field'" in msg, msg


# --------------------------------------------------------------------------
# --set and ${VAR}
# --------------------------------------------------------------------------
def test_set_unknown_key(cli, tiny_sentiment):
    msg = one_line_error(*cli(["validate", tiny_sentiment.recipe, "--set", "train.epoch=3"]))
    assert msg.startswith("error: --set train.epoch:"), msg
    assert "did you mean 'epochs'" in msg, msg


def test_set_type_error(cli, tiny_sentiment):
    msg = one_line_error(*cli(["validate", tiny_sentiment.recipe, "--set", "train.batch_size=lots"]))
    assert msg.startswith("error: --set train.batch_size:") and "expected an integer" in msg, msg


def test_set_without_equals(cli, tiny_sentiment):
    msg = one_line_error(*cli(["validate", tiny_sentiment.recipe, "--set", "train.epochs"]))
    assert "expected KEY=VALUE" in msg


def test_env_var_unset_without_default(cli, tiny_sentiment, monkeypatch):
    monkeypatch.delenv("NLPTK_TEST_UNSET_VAR", raising=False)
    path = variant(tiny_sentiment, "r.yaml", "  epochs: 1\n", "  epochs: ${NLPTK_TEST_UNSET_VAR}\n")
    line = line_of(path.read_text(), "NLPTK_TEST_UNSET_VAR")
    msg = one_line_error(*cli(["validate", path]))
    assert f"{path}:{line}: train.epochs:" in msg and "NLPTK_TEST_UNSET_VAR is not set" in msg, msg


# --------------------------------------------------------------------------
# data mistakes
# --------------------------------------------------------------------------
def test_missing_data_file(cli, tiny_sentiment):
    path = variant(tiny_sentiment, "r.yaml", str(tiny_sentiment.train), str(tiny_sentiment.dir / "nope.jsonl"))
    for args in (["validate", path], ["run", path, "--output-dir", "out"]):
        msg = one_line_error(*cli(args))
        assert "data.files.train" in msg and "nope.jsonl does not exist" in msg, msg


def test_empty_train_file(cli, tiny_sentiment):
    empty = tiny_sentiment.dir / "empty.jsonl"
    empty.write_text("")
    path = variant(tiny_sentiment, "r.yaml", str(tiny_sentiment.train), str(empty))
    msg = one_line_error(*cli(["run", path, "--output-dir", "out"]))
    assert msg.startswith("error: data.files.train:") and f"{empty} is empty (no examples)" in msg, msg


def test_csv_with_header_only(cli, tiny_sentiment):
    header_only = tiny_sentiment.dir / "header.csv"
    header_only.write_text("text,label\n")
    valid = tiny_sentiment.dir / "valid.csv"
    valid.write_text('text,label\n"a good, fun film",positive\n')
    path = variant(tiny_sentiment, "r.yaml", str(tiny_sentiment.train), str(header_only))
    path.write_text(path.read_text().replace(str(tiny_sentiment.validation), str(valid)))
    msg = one_line_error(*cli(["run", path, "--output-dir", "out"]))
    # datasets cannot even build a table from a header-only csv; the error still names the file
    assert "data.files" in msg and str(header_only) in msg, msg


def test_missing_field(cli, tiny_sentiment):
    path = variant(tiny_sentiment, "r.yaml", "  text_field: text\n", "  text_field: body\n")
    msg = one_line_error(*cli(["run", path, "--output-dir", "out"]))
    assert "task.text_field" in msg and "no field 'body'" in msg, msg
    assert "text" in msg.split("fields:")[1], msg  # lists the fields that exist


def test_non_text_field(cli, tiny_sentiment):
    path = variant(tiny_sentiment, "r.yaml", "  text_field: text\n", "  text_field: score\n")
    msg = one_line_error(*cli(["run", path, "--output-dir", "out"]))
    assert "row 1" in msg and "'score'" in msg and "not text" in msg, msg


def test_label_pyarrow_cannot_read_is_one_line(cli, tmp_path):
    """A label object whose keys pyarrow sees as duplicates ("" and "\\u0000"; found by test_fuzz) fails
    when the column is read: a one-line error naming the key, not pyarrow's traceback."""
    (tmp_path / "bad.jsonl").write_text('{"text": "", "label": {"": null, "\\u0000": null}}\n')
    msg = one_line_error(*cli(["run", "sentiment", "--output-dir", tmp_path / "run", "--set", f"data.files.train={tmp_path / 'bad.jsonl'}",
                               "--set", f"data.files.validation={tmp_path / 'bad.jsonl'}", "--set", "train.epochs=1"]))
    assert "task.label_field" in msg and "'label'" in msg and "duplicate field names" in msg, msg


def test_unknown_label_at_evaluation(cli, trained_run, tmp_path):
    rows = real_rows("validation", 20, 25)
    rows[3] = {**rows[3], "label": "neutral"}
    test_file = write_jsonl(tmp_path / "odd.jsonl", rows)
    msg = one_line_error(*cli(["evaluate", trained_run.dir, "--files", f"test={test_file}"]))
    assert str(test_file) in msg and "row 4" in msg, msg
    assert "unknown label 'neutral'" in msg and "negative, positive" in msg, msg


def test_evaluate_files_without_equals(cli, trained_run):
    msg = one_line_error(*cli(["evaluate", trained_run.dir, "--files", "test.jsonl"]))
    assert "expected SPLIT=FILE" in msg


# --------------------------------------------------------------------------
# plugins
# --------------------------------------------------------------------------
BROKEN_PLUGIN = "from nlptoolkit import Task\n\ndef oops(:\n    pass\n"


def test_plugin_syntax_error_in_recipe(cli, tiny_sentiment):
    plugin = tiny_sentiment.dir / "broken_plugin.py"
    plugin.write_text(BROKEN_PLUGIN)
    path = variant(tiny_sentiment, "r.yaml", "seed: 7\n", f"seed: 7\nplugins:\n  - {plugin}\n")
    line = line_of(path.read_text(), str(plugin))
    msg = one_line_error(*cli(["validate", path]))
    assert f"{path}:{line}: plugins[0]:" in msg, msg
    assert f"{plugin}:3: syntax error" in msg, msg


def test_plugin_syntax_error_on_command_line(run_cli, tmp_path):
    plugin = tmp_path / "broken_plugin.py"
    plugin.write_text(BROKEN_PLUGIN)
    msg = one_line_error(*run_cli(["--plugin", plugin, "list"], cwd=tmp_path))
    assert f"{plugin}:3: syntax error in plugin file" in msg, msg


def test_plugin_file_missing(cli, tmp_path):
    msg = one_line_error(*cli(["--plugin", tmp_path / "nope.py", "list"]))
    assert "nope.py does not exist" in msg


def test_plugin_raising_at_import(cli, tmp_path):
    plugin = tmp_path / "raises.py"
    plugin.write_text("raise RuntimeError('no GPU here')\n")
    msg = one_line_error(*cli(["--plugin", plugin, "list"]))
    assert "failed to import" in msg and "RuntimeError: no GPU here" in msg, msg


# --------------------------------------------------------------------------
# run folders
# --------------------------------------------------------------------------
def test_existing_run_folder_then_force(cli, tiny_sentiment, tmp_path):
    out = tmp_path / "existing"
    out.mkdir()
    (out / "old.txt").write_text("from an earlier run")
    msg = one_line_error(*cli(["run", tiny_sentiment.recipe, "--output-dir", out, "--quiet"]))
    assert f"run folder {out} already exists" in msg and "--force" in msg, msg
    assert (out / "old.txt").exists()  # nothing was touched

    code, stdout, stderr = cli(["run", tiny_sentiment.recipe, "--output-dir", out, "--quiet", "--force"])
    assert code == 0, stderr
    assert not (out / "old.txt").exists()
    assert (out / "best.pt").is_file() and (out / "summary.json").is_file()
    assert json.loads((out / "summary.json").read_text())["steps"] == 6


def test_default_run_folder_is_runs_name(cli, tiny_sentiment, tmp_path):
    (tmp_path / "runs" / "tiny").mkdir(parents=True)
    (tmp_path / "runs" / "tiny" / "x").write_text("x")
    msg = one_line_error(*cli(["run", tiny_sentiment.recipe], cwd=tmp_path))
    assert f"run folder {Path('runs') / 'tiny'} already exists" in msg, msg


@pytest.mark.parametrize("command", ["evaluate", "predict", "generate"])
def test_nonexistent_run_folder(cli, tmp_path, command):
    args = [command, tmp_path / "no_such_run"] + (["a fine film"] if command == "predict" else [])
    msg = one_line_error(*cli(args))
    assert f"run folder {tmp_path / 'no_such_run'} does not exist" in msg, msg


def test_folder_that_is_not_a_run(cli, tmp_path):
    (tmp_path / "plain").mkdir()
    msg = one_line_error(*cli(["evaluate", tmp_path / "plain"]))
    assert "recipe.yaml is missing" in msg


def test_generate_negative_temperature(cli, trained_run):
    msg = one_line_error(*cli(["generate", trained_run.dir, "--temperature", "-1"]))
    assert "--temperature" in msg and "must be 0 (greedy) or positive" in msg, msg


def test_generate_on_classifier(cli, trained_run):
    msg = one_line_error(*cli(["generate", trained_run.dir, "--prompt", "hi"]))
    assert "'sentiment' run" in msg and "cannot generate" in msg, msg


def test_predict_without_input(cli, trained_run):
    msg = one_line_error(*cli(["predict", trained_run.dir], stdin=""))
    assert "no input text" in msg


# --------------------------------------------------------------------------
# --debug
# --------------------------------------------------------------------------
def test_debug_shows_traceback(run_cli, tiny_sentiment, tmp_path):
    path = variant(tiny_sentiment, "r.yaml", "  epochs: 1\n", "  epoch: 1\n")
    code, out, err = run_cli(["--debug", "validate", path], cwd=tmp_path)
    assert code != 0
    assert "Traceback (most recent call last)" in err, err
    assert "NlptkError" in err and "did you mean 'epochs'" in err
