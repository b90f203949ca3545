"""examples/nlptk-plugin-example installs with pip, and nlptk finds its task through the entry point.

The package goes into a child virtual environment (conftest.child_venv: it
sees this environment's packages, and the install is gone with the folder).
Then `nlptk list` shows the task and where it comes from, `nlptk run` trains
the package's own recipe (a few steps), and the package's own tests pass
(they train on a toy set with a known answer, and predict).
"""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from conftest import REPO, child_venv

EXAMPLE = REPO / "examples" / "nlptk-plugin-example"


def test_pip_install_then_nlptk_list_run_and_the_packages_own_tests(tmp_path: Path) -> None:
    env = child_venv(tmp_path / "venv")

    def sh(*args: str, cwd: Path = tmp_path) -> str:
        proc = subprocess.run(list(args), cwd=str(cwd), env=env.env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc.stdout

    before = sh("nlptk", "list")
    assert not re.search(r"^score ", before, re.M)  # not there until the package is installed
    sh("pip", "install", "-q", "-e", str(EXAMPLE))
    listed = sh("nlptk", "list")
    assert re.search(r"^score +Predict a number for each text .*\[entry point 'score' "
                     r"\(nlptk_plugin_example.score_task:ScoreTask, package nlptk-plugin-example\)\]$", listed, re.M), listed
    assert re.search(r"^sentiment ", listed, re.M)  # the built-in tasks are still there

    # the package's recipe as shipped, a few steps of a smaller model (the package's own tests check what it learns)
    out = sh("nlptk", "run", str(EXAMPLE / "score.yaml"), "--set", "train.max_steps=3", "--set", "device=cpu",
             "--set", "encoder.hidden_size=16", "--set", "encoder.embedding_dim=16", "--output-dir", "runs/score", "--quiet")
    assert re.search(r"best validation rmse=[\d.]+ at step 3", out), out
    summary = json.loads((tmp_path / "runs" / "score" / "summary.json").read_text(encoding="utf-8"))
    assert summary["task"] == "score" and summary["steps"] == 3
    assert summary["final"]["baseline_rmse"] > 1.9  # the bundled validation split's spread: the recipe read the real data

    tests = sh(str(env.python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests", cwd=EXAMPLE)
    assert "2 passed" in tests, tests
