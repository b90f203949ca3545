"""`nlptk new-plugin NAME`: the skeleton it writes works as written, and it never overwrites."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, one_line_error


def test_the_skeleton_passes_its_own_test_and_validates(cli, tmp_path: Path) -> None:
    code, out, err = cli(["new-plugin", "review_topic", "--dir", "plug"])
    assert code == 0, err
    folder = tmp_path / "plug"
    assert sorted(p.name for p in folder.iterdir()) == ["review_topic.py", "review_topic.yaml", "test_review_topic.py"]
    assert "next: cd plug && python -m pytest -q test_review_topic.py && nlptk run review_topic.yaml" in out
    assert "CHANGE" in (folder / "review_topic.py").read_text(encoding="utf-8")

    code, out, err = cli(["validate", "review_topic.yaml"], cwd=folder)  # the recipe loads the plugin file
    assert code == 0 and "ok (task review_topic)" in out, err
    code, out, err = cli(["--plugin", "review_topic.py", "list"], cwd=folder)
    assert re.search(r"^review_topic +Review topic: a class for each text", out, re.M), out

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_review_topic.py"],
                          cwd=str(folder), env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 passed" in proc.stdout, proc.stdout


def test_existing_files_are_never_overwritten(cli, tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "rating.yaml").write_text("mine\n", encoding="utf-8")
    message = one_line_error(*cli(["new-plugin", "rating", "--dir", "d"]))
    assert "d/rating.yaml already exists; nothing was written" in message
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["rating.yaml"]
    assert (tmp_path / "d" / "rating.yaml").read_text(encoding="utf-8") == "mine\n"


@pytest.mark.parametrize("name", ["2fast", "my-task", "class", "a b", "ünï"])
def test_a_name_that_is_not_a_python_identifier_is_a_one_line_error(cli, tmp_path: Path, name: str) -> None:
    message = one_line_error(*cli(["new-plugin", name]))
    assert "must be a Python identifier" in message
    assert list(tmp_path.iterdir()) == []


def test_the_name_of_an_existing_task_is_refused(cli, tmp_path: Path) -> None:
    message = one_line_error(*cli(["new-plugin", "sentiment"]))
    assert "a task of that name already exists" in message and "pick another name" in message
