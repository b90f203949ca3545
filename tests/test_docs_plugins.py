"""docs/plugins.md is executed, block by block, so the tutorial cannot rot.

Every fenced block of the tutorial is one of:

* ```LANG file=PATH  -- written to PATH (several blocks with one PATH make one file, in order);
* ```bash            -- run with bash -e, in the tutorial's folder;
* ```python          -- run with python, in the tutorial's folder.

Anything else fails the test, so no block can escape being run. The blocks
run in a fresh folder inside a child virtual environment (conftest.child_venv)
so that the tutorial's `pip install -e` installs there and nowhere else.

The default suite trains the tutorial's recipe for a few steps (each
`nlptk run` gets `--set train.max_steps=...`); the slow test runs it as
written and checks the tutorial's promise: validation RMSE at least 30% below
always predicting the training mean, with the baseline computed here from
the data files themselves.
"""
from __future__ import annotations

import gzip
import json
import math
import re
import resource
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from conftest import REPO, child_venv

DOC = REPO / "docs" / "plugins.md"
EXAMPLE = REPO / "examples" / "nlptk-plugin-example"
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```[ \t]*$", re.M | re.S)


@dataclass
class Block:
    kind: str  # "file", "bash" or "python"
    text: str
    line: int
    path: Optional[str] = None


def doc_blocks(text: str) -> List[Block]:
    blocks = []
    for match in FENCE.finditer(text):
        info, body = match.group(1).strip(), match.group(2)
        line = text.count("\n", 0, match.start()) + 1
        file = re.fullmatch(r"\w+\s+file=(\S+)", info)
        if file:
            blocks.append(Block("file", body, line, file.group(1)))
        elif info in ("bash", "python"):
            blocks.append(Block(info, body, line))
        else:
            raise AssertionError(f"docs/plugins.md:{line}: block '```{info}' is neither a file, bash nor python, so no test runs it")
    return blocks


def files_of(blocks: List[Block]) -> Dict[str, str]:
    files: Dict[str, str] = {}
    for b in blocks:
        if b.kind == "file":
            files[b.path] = files.get(b.path, "") + ("\n" if b.path in files else "") + b.text
    return files


def non_blank(text: str) -> List[str]:
    return [line for line in text.splitlines() if line.strip()]


def run_tutorial(folder: Path, max_steps: Optional[int]) -> List[str]:
    """Do what the tutorial says, in ``folder``; return each bash/python block's output."""
    env = child_venv(folder / ".venv")
    work = folder / "tutorial"
    work.mkdir()
    outputs = []
    written: Dict[str, int] = {}
    for block in doc_blocks(DOC.read_text(encoding="utf-8")):
        if block.kind == "file":
            path = work / block.path
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a" if block.path in written else "w", encoding="utf-8") as f:
                f.write(("\n" if block.path in written else "") + block.text)
            written[block.path] = block.line
            continue
        if block.kind == "bash":
            script = block.text
            if max_steps is not None:
                script = re.sub(r"^(nlptk run .*)$", rf"\1 --set train.max_steps={max_steps}", script, flags=re.M)
            command = ["bash", "-e", "-o", "pipefail", "-c", script]
        else:
            command = [str(env.python), "-c", block.text]
        start, cpu = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime
        proc = subprocess.run(command, cwd=str(work), env=env.env, capture_output=True, text=True, timeout=900)
        cpu = resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime - cpu
        print(f"docs/plugins.md:{block.line}: {block.kind} block, {time.perf_counter() - start:.1f} s wall, {cpu:.1f} s CPU")
        assert proc.returncode == 0, f"docs/plugins.md:{block.line}: the {block.kind} block failed ({proc.returncode}):\n{block.text}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
        assert "Traceback" not in proc.stderr, proc.stderr
        outputs.append(proc.stdout)
    return outputs


def scores(split: str) -> List[float]:
    path = REPO / "nlptoolkit" / "bundled_data" / "sentiment" / "movie_snippets" / f"{split}.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line)["score"] for line in f]


def test_every_block_is_a_file_or_a_script_and_the_example_package_is_the_tutorials() -> None:
    blocks = doc_blocks(DOC.read_text(encoding="utf-8"))
    assert sum(b.kind == "bash" for b in blocks) >= 4 and sum(b.kind == "python" for b in blocks) >= 1
    files = files_of(blocks)
    # the package in examples/ is what the tutorial builds, so the two cannot drift apart
    package = EXAMPLE / "src" / "nlptk_plugin_example"
    assert non_blank(files["score_task.py"]) == non_blank((package / "score_task.py").read_text(encoding="utf-8"))
    for name in ("pyproject.toml", "src/nlptk_plugin_example/__init__.py"):
        assert files[f"nlptk-plugin-example/{name}"] == (EXAMPLE / name).read_text(encoding="utf-8"), name
    recipe = [line for line in files["score.yaml"].splitlines(keepends=True) if not line.startswith("plugins:")]
    assert "".join(recipe) == (EXAMPLE / "score.yaml").read_text(encoding="utf-8")
    assert "docs/plugins.md" in (REPO / "README.md").read_text(encoding="utf-8")


def test_the_tutorial_runs_as_written_with_short_training(tmp_path: Path) -> None:
    outputs = run_tutorial(tmp_path, max_steps=4)
    work = tmp_path / "tutorial"
    text = "\n".join(outputs)
    assert re.search(r"^score\s+Predict a number for each text", text, re.M), text  # nlptk list, by file and by package
    # nlptk init: the starter recipe comes from the Options, with their comments
    assert re.search(r"^  score_field: score +# string; the data field that holds the number to predict$", text, re.M), text
    lines = [line for line in outputs[0].splitlines() if line.strip()]
    assert re.search(r"validation rmse [\d.]+, mae [\d.]+; predicting the training mean: rmse 1\.917; -?\d+% lower", text), text
    assert json.loads((work / "runs" / "score-package" / "summary.json").read_text())["task"] == "score"
    assert (work / "review_topic" / "review_topic.py").is_file()
    assert lines  # nlptk validate printed its line


@pytest.mark.slow
def test_the_tutorial_reaches_30_percent_below_the_mean_baseline(tmp_path: Path) -> None:
    outputs = run_tutorial(tmp_path, max_steps=None)
    train, validation = scores("train"), scores("validation")
    mean = sum(train) / len(train)
    baseline = math.sqrt(sum((s - mean) ** 2 for s in validation) / len(validation))
    summary = json.loads((tmp_path / "tutorial" / "runs" / "score" / "summary.json").read_text())
    rmse = summary["best"]["value"]
    print(f"validation rmse {rmse:.4f} vs baseline {baseline:.4f}: {1 - rmse / baseline:.1%} lower")
    assert summary["best"]["metric"] == "rmse"
    assert summary["final"]["baseline_rmse"] == pytest.approx(baseline, rel=1e-5)  # the task's own baseline agrees
    assert rmse <= 0.7 * baseline, (rmse, baseline)
    assert re.search(r"predicting the training mean: rmse 1\.917; (3\d|[4-9]\d)% lower", "\n".join(outputs))
