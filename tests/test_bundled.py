"""What ships inside the package: bundled data, recipes by name, `nlptk recipes`, `nlptk init`."""
from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pytest
import yaml

from conftest import REPO, one_line_error
from nlptoolkit.bundled import data_dir, data_sets, describe_recipe, recipe_files
from nlptoolkit.recipe import recipe_from_dict
from nlptoolkit.starter import PLACEHOLDER_FILES, starter_recipe


# --------------------------------------------------------------------------
# bundled data
# --------------------------------------------------------------------------
def test_bundled_files_are_the_shared_files_compressed(shared_data):
    bundled = sorted(data_dir().glob("**/*.gz"))
    assert len(bundled) >= 2
    for gz in bundled:
        original = shared_data / gz.relative_to(data_dir()).with_suffix("")
        assert gzip.decompress(gz.read_bytes()) == original.read_bytes(), gz


def test_every_bundled_set_records_origin_and_licence():
    sets = data_sets()
    assert "sentiment/movie_snippets" in sets and "lm/tiny_shakespeare" in sets
    for name in sets:
        source = (data_dir() / name / "SOURCE.md").read_text(encoding="utf-8")
        assert "Origin:" in source and "Licence:" in source, name
        for gz in (data_dir() / name).glob("*.gz"):
            assert f"`{gz.name}`" in source, f"{gz} is not described in its SOURCE.md"
    # never the sets whose licence forbids redistribution
    assert not any(s.startswith(("lm/ptb", "tagging/pos_wsj", "tagging/pos_oanc")) for s in sets)


def test_bundled_paths_in_recipes_exist():
    for path in recipe_files().values():
        for ref in re.findall(r"bundled:(\S+)", path.read_text(encoding="utf-8")):
            assert (data_dir() / ref).is_file(), f"{path.name}: bundled:{ref} is not in the package"


def test_unknown_bundled_file_is_one_line_error(cli, tiny_sentiment):
    path = tiny_sentiment.dir / "r.yaml"
    path.write_text(tiny_sentiment.text.replace(str(tiny_sentiment.train), "bundled:sentiment/nope.jsonl.gz"))
    msg = one_line_error(*cli(["run", path]))
    assert "data.files.train: bundled:sentiment/nope.jsonl.gz is not a bundled data file" in msg
    assert "sentiment/movie_snippets/train.jsonl.gz" in msg  # says what there is


def test_bad_line_in_gz_file_is_named(cli, tiny_sentiment):
    rows = [json.dumps(r) for r in json.loads("[" + ",".join(tiny_sentiment.train.read_text().splitlines()) + "]")]
    rows[4] = '{"text": "broken", "label": '
    gz = tiny_sentiment.dir / "train.jsonl.gz"
    gz.write_bytes(gzip.compress(("\n".join(rows) + "\n").encode()))
    path = tiny_sentiment.dir / "r.yaml"
    path.write_text(tiny_sentiment.text.replace(str(tiny_sentiment.train), str(gz)))
    msg = one_line_error(*cli(["run", path]))
    assert f"{gz}, line 5: not valid JSON" in msg


# --------------------------------------------------------------------------
# recipes by name
# --------------------------------------------------------------------------
def test_recipes_lists_every_bundled_recipe_with_its_first_comment(cli):
    code, out, err = cli(["recipes"])
    assert code == 0, err
    shown = dict(line.split(None, 1) for line in out.strip().splitlines())
    files = sorted((REPO / "recipes").glob("*.yaml"))
    assert sorted(shown) == [p.stem for p in files]
    for p in files:
        text = p.read_text(encoding="utf-8")
        first = next(line for line in text.splitlines() if line.startswith("#"))
        note = "  [data not bundled: set NLPTK_DATA]" if "${NLPTK_DATA" in text else ""
        assert shown[p.stem].strip() == first.lstrip("# ").strip() + note == describe_recipe(p) + note
    assert "[data not bundled" not in shown["sentiment"] and "[data not bundled" in shown["word_lm"]


def test_run_bundled_recipe_by_name_from_an_empty_folder(cli, tmp_path):
    """No data folder, no recipe file: the name and the data inside the package are enough."""
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    sets = ["--set", "train.max_steps=2", "--set", "train.eval_every=2", "--set", "encoder.hidden_size=8",
            "--set", "encoder.embedding_dim=8", "--set", "device=cpu"]
    code, out, err = cli(["validate", "sentiment"], cwd=empty)
    assert code == 0 and "ok (task sentiment)" in out, err
    code, out, err = cli(["run", "sentiment", *sets], cwd=empty)
    assert code == 0, err
    summary = json.loads((empty / "runs" / "sentiment" / "summary.json").read_text())
    assert summary["steps"] == 2
    saved = yaml.safe_load((empty / "runs" / "sentiment" / "recipe.yaml").read_text())
    assert saved["data"]["files"]["train"] == "bundled:sentiment/movie_snippets/train.jsonl.gz"  # portable, not a site-packages path


def test_unknown_recipe_name_lists_the_bundled_ones(cli, tmp_path):
    msg = one_line_error(*cli(["run", "sentimant"], cwd=tmp_path))
    assert "recipe sentimant does not exist" in msg and "sentiment" in msg and "nlptk recipes" in msg


def test_a_file_beats_a_bundled_name(cli, tiny_sentiment):
    """`nlptk run sentiment` in a folder with a file called `sentiment` runs that file."""
    (tiny_sentiment.dir / "sentiment").write_text(tiny_sentiment.text.replace("name: tiny", "name: mine"))
    code, out, err = cli(["validate", "sentiment"], cwd=tiny_sentiment.dir)
    assert code == 0, err
    assert out.startswith("sentiment: ok")


# --------------------------------------------------------------------------
# nlptk init
# --------------------------------------------------------------------------
def leaves(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v and k != "files":
            out.update(leaves(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


@pytest.mark.parametrize("task", ["sentiment", "language_model"])
def test_init_writes_every_key_with_its_default(cli, task):
    code, out, err = cli(["init", task])
    assert code == 0, err
    written = yaml.safe_load(out)
    # the schema's own defaults, computed without the starter: a recipe that gives only what is required
    minimal = recipe_from_dict({"name": task, "task": {"name": task}, "data": {"files": dict(PLACEHOLDER_FILES)}}).to_dict()
    assert leaves(written) == leaves(minimal)
    assert recipe_from_dict(written).to_dict() == minimal
    # every key line says what the key takes and does
    for line in out.splitlines():
        if re.match(r"\s*\w+: \S", line) and not re.match(r"\s*(name|train|validation): ", line):
            assert "  # " in line, f"no comment: {line}"


def test_init_picks_up_a_new_option_and_its_comment(cli, tmp_path):
    plugin = tmp_path / "toy.py"
    plugin.write_text(
        "from dataclasses import dataclass\n"
        "import nlptoolkit\n\n"
        "@dataclass\n"
        "class ToyOptions:\n"
        "    threshold: int = 7  # how long a text must be to count as long\n"
        "    # a comment above a field\n"
        "    # on two lines\n"
        "    mode: str = 'fast'\n\n"
        "@nlptoolkit.register_task('toy_init')\n"
        "class Toy(nlptoolkit.Task):\n"
        "    Options = ToyOptions\n"
    )
    code, out, err = cli(["--plugin", plugin, "init", "toy_init"])
    assert code == 0, err
    assert re.search(r"^  threshold: 7 +# integer; how long a text must be to count as long$", out, re.M), out
    assert re.search(r"^  mode: fast +# string; a comment above a field on two lines$", out, re.M), out


def test_init_unknown_task_is_one_line_error(cli):
    msg = one_line_error(*cli(["init", "sentimnet"]))
    assert "unknown task 'sentimnet'" in msg and "did you mean" in msg.lower()


def test_data_that_does_not_ship_says_what_to_do(cli, tmp_path, monkeypatch):
    """The Penn Treebank may not be redistributed: without NLPTK_DATA the error says how to supply it."""
    monkeypatch.delenv("NLPTK_DATA", raising=False)
    msg = one_line_error(*cli(["run", "word_lm"], cwd=tmp_path))
    assert "data.files.train: file ../shared/data/lm/ptb/train.txt does not exist" in msg
    assert "NLPTK_DATA is not set: set it to the folder that holds the data sets" in msg
    assert "--set data.files.train=PATH" in msg
    assert not (tmp_path / "runs" / "word_lm").exists() or not any((tmp_path / "runs" / "word_lm").iterdir())
