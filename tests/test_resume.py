"""Exact resume: a run interrupted by a real signal (or killed mid-save) and resumed
with `nlptk run RECIPE --resume RUN_DIR` ends bit-for-bit where a straight run ends.

The interruption step is made deterministic with the trainer's test-only hook
``NLPTK_TEST_SIGNAL_AT_STEP=N[:INT|TERM]``: after step N the trainer sends itself
the signal with ``os.kill``, so the real handler, last.pt and exit code are used.
"""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import REPO, make_tiny_sentiment, one_line_error
from nlptoolkit.checkpoint import load_checkpoint

# Wall-clock numbers legitimately differ between a straight and a resumed run.
WALL_CLOCK = {"elapsed_seconds", "tokens_per_second", "train_seconds"}
EPOCHS, BATCH, EVAL_EVERY = 3, 8, 3


def resume_recipe(folder: Path):
    """3 shuffled epochs, evaluation every 3 steps, dropout 0.5, cosine schedule with warmup."""
    tiny = make_tiny_sentiment(folder)
    rows = len(tiny.train.read_text().splitlines())
    tiny.steps_per_epoch = -(-rows // BATCH)  # the last batch may be smaller
    tiny.total_steps = EPOCHS * tiny.steps_per_epoch
    tiny.eval_steps = list(range(EVAL_EVERY, tiny.total_steps + 1, EVAL_EVERY))
    text = tiny.text.replace("epochs: 1", "epochs: 3").replace("max_steps: 6", "max_steps: null")
    text += "  scheduler: cosine\n  warmup_steps: 2\n"
    tiny.recipe.write_text(text, encoding="utf-8")
    return tiny


def metric_records(run_dir: Path):
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in WALL_CLOCK} for line in lines]


def weights(path: Path):
    return load_checkpoint(path)["model"]


def max_abs_diff(a, b) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def summary(run_dir: Path):
    return {k: v for k, v in json.loads((run_dir / "summary.json").read_text()).items() if k not in WALL_CLOCK}


def assert_same_run(resumed: Path, straight: Path, tiny) -> None:
    a, b = metric_records(resumed), metric_records(straight)
    expected = tiny.eval_steps + ([] if tiny.eval_steps[-1] == tiny.total_steps else [tiny.total_steps])
    assert [r["step"] for r in b] == expected  # no duplicate evaluation at the end
    assert a == b  # train_loss, lr, epoch, validation metrics: all identical
    for name in ("last.pt", "best.pt"):
        assert max_abs_diff(weights(resumed / name), weights(straight / name)) == 0.0, name
    assert summary(resumed) == summary(straight)


@pytest.fixture
def setup(tmp_path, cli):
    tiny = resume_recipe(tmp_path / "data")
    code, _, err = cli(["run", tiny.recipe, "--output-dir", tmp_path / "straight", "--quiet"])
    assert code == 0, err
    return tiny, tmp_path / "straight"


@pytest.mark.parametrize("sig, step", [("TERM", 10), ("INT", 5)])
def test_signal_then_resume_is_exact(setup, sig, step, run_cli, cli, tmp_path):
    tiny, straight = setup
    run = tmp_path / "run"
    code, out, err = run_cli(
        ["run", tiny.recipe, "--output-dir", run, "--quiet"], cwd=tmp_path, env={"NLPTK_TEST_SIGNAL_AT_STEP": f"{step}:{sig}"}
    )
    signum = getattr(signal, "SIG" + sig)
    assert code == 128 + signum == {"TERM": 143, "INT": 130}[sig], err
    assert "Traceback" not in err
    # how to resume: exactly one line, the last one on stderr
    resume_lines = [line for line in err.splitlines() if "--resume" in line]
    assert resume_lines == [err.strip().splitlines()[-1]], err
    assert f"interrupted at step {step}; saved {run / 'last.pt'}" in resume_lines[0]
    command = resume_lines[0].split("Resume with: ", 1)[1]
    assert command == f"nlptk run --resume {run}"

    saved = load_checkpoint(run / "last.pt")
    assert saved["train_state"]["step"] == step and saved["train_state"]["batch_in_epoch"] == step % tiny.steps_per_epoch
    assert not saved["train_state"]["finished"] and not (run / "summary.json").exists()
    before = (run / "metrics.jsonl").read_text()
    assert [r["step"] for r in metric_records(run)] == [s for s in (3, 6, 9) if s <= step]

    # run the printed command (in-process) to resume
    code, out, err = cli(shlex.split(command)[1:] + ["--quiet"])
    assert code == 0, err
    assert out.startswith("finished (completed)") and f"{tiny.total_steps} steps" in out
    assert (run / "metrics.jsonl").read_text().startswith(before)  # appended; earlier lines kept verbatim
    assert_same_run(run, straight, tiny)


def test_printed_resume_command_works_as_printed_after_set_overrides(tmp_path, run_cli, cli):
    """The user's report: a run started with --set, interrupted with Ctrl-C; the printed command
    must resume it (the overrides live in the run folder's recipe.yaml) and end where a straight run ends."""
    tiny = resume_recipe(tmp_path / "data")
    overrides = ["--set", "train.lr=0.02", "--set", "seed=11", "--set", "train.warmup_steps=3"]
    code, _, err = cli(["run", tiny.recipe, *overrides, "--output-dir", tmp_path / "straight", "--quiet"])
    assert code == 0, err
    run = tmp_path / "my run"  # a space: the printed command must quote it
    code, out, err = run_cli(["run", tiny.recipe, *overrides, "--output-dir", run], cwd=tmp_path, env={"NLPTK_TEST_SIGNAL_AT_STEP": "7:INT"})
    assert code == 130 and "Traceback" not in err, err
    command = err.strip().splitlines()[-1].split("Resume with: ", 1)[1]
    args = shlex.split(command)
    assert args == ["nlptk", "run", "--resume", str(run)], command

    code, out, err = run_cli(args[1:], cwd=tmp_path)  # literally what was printed
    assert code == 0, err
    assert out.startswith("finished (completed)") and f"{tiny.total_steps} steps" in out
    assert_same_run(run, tmp_path / "straight", tiny)
    saved = (run / "recipe.yaml").read_text()
    assert "seed: 11" in saved and "lr: 0.02" in saved


def test_resume_from_the_run_folder_checks_set_changes_and_names_the_problem(tmp_path, cli, monkeypatch):
    tiny, run = interrupted_run(tmp_path, cli, monkeypatch, 4)
    msg = one_line_error(*cli(["run", "--resume", run, "--set", "train.lr=0.5"]))
    assert "recipe differs" in msg and "train.lr: 0.05 -> 0.5" in msg and "--override train.lr" in msg, msg
    code, out, err = cli(["run", "--resume", run, "--set", "train.lr=0.5", "--override", "train.lr", "--quiet"])
    assert code == 0, err
    assert "lr: 0.5" in (run / "recipe.yaml").read_text()

    msg = one_line_error(*cli(["run"]))
    assert "give a RECIPE" in msg and "--resume RUN_DIR" in msg, msg
    (tmp_path / "not_a_run").mkdir()
    msg = one_line_error(*cli(["run", "--resume", tmp_path / "not_a_run"]))
    assert "no recipe.yaml" in msg, msg
    msg = one_line_error(*cli(["run", "--resume", tmp_path / "nowhere"]))
    assert "no such run folder" in msg, msg


def test_kill_during_checkpoint_save_then_resume_is_exact(setup, cli, tmp_path):
    """SIGKILL while last.pt is being replaced (3rd save, at step 9): the old last.pt
    (step 6) survives, the stray temp file is ignored and removed, the metrics line
    written after last.pt is dropped, and resuming still gives the straight run."""
    tiny, straight = setup
    run = tmp_path / "run"
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        real_replace, saves = os.replace, []
        def replace(src, dst):
            if str(dst).endswith("last.pt"):
                saves.append(dst)
                if len(saves) == 3:
                    os.kill(os.getpid(), signal.SIGKILL)  # after the temp file is written, before the rename
            return real_replace(src, dst)
        os.replace = replace
        from nlptoolkit.cli import main
        main(["run", {str(tiny.recipe)!r}, "--output-dir", {str(run)!r}, "--quiet"])
        """
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    leftovers = list(run.glob(".last.pt.*.tmp"))
    assert len(leftovers) == 1  # the half-done save, never renamed
    assert load_checkpoint(run / "last.pt")["train_state"]["step"] == 6  # the previous checkpoint is whole
    assert [r["step"] for r in metric_records(run)] == [3, 6, 9]

    code, _, err = cli(["run", tiny.recipe, "--resume", run, "--quiet"])
    assert code == 0, err
    assert not list(run.glob(".*.tmp"))
    assert_same_run(run, straight, tiny)


def test_torn_metrics_line_is_dropped_on_resume(setup, cli, tmp_path, monkeypatch):
    """A crash can leave a half-written metrics line, or one written after last.pt was saved."""
    tiny, straight = setup
    run = tmp_path / "run"
    monkeypatch.setenv("NLPTK_TEST_SIGNAL_AT_STEP", "8:TERM")  # in this process: the trainer's handler catches it
    code, _, err = cli(["run", tiny.recipe, "--output-dir", run, "--quiet"])
    assert code == 143, err
    monkeypatch.delenv("NLPTK_TEST_SIGNAL_AT_STEP")
    with open(run / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"step": 9, "train_loss": 1.0, "validation": {}}) + "\n" + '{"epoch": 1.4, "step": 1')
    code, _, err = cli(["run", tiny.recipe, "--resume", run, "--quiet"])
    assert code == 0, err
    assert_same_run(run, straight, tiny)



def interrupted_run(tmp_path, cli, monkeypatch, step: int):
    """A tiny run stopped by SIGTERM after ``step`` steps: (recipe, run folder)."""
    tiny = resume_recipe(tmp_path / "data")
    run = tmp_path / "run"
    monkeypatch.setenv("NLPTK_TEST_SIGNAL_AT_STEP", str(step))
    assert cli(["run", tiny.recipe, "--output-dir", run, "--quiet"])[0] == 143
    monkeypatch.delenv("NLPTK_TEST_SIGNAL_AT_STEP")
    return tiny, run

def test_changed_recipe_is_refused_unless_overridden(tmp_path, cli, monkeypatch):
    tiny, run = interrupted_run(tmp_path, cli, monkeypatch, 4)

    changed = ["--set", "train.lr=0.01", "--set", "encoder.dropout=0.1"]
    msg = one_line_error(*cli(["run", tiny.recipe, "--resume", run, "--quiet", *changed]))
    assert "recipe differs" in msg and "train.lr: 0.05 -> 0.01" in msg and "encoder.dropout: 0.0 -> 0.1" in msg, msg
    assert "--override encoder.dropout --override train.lr" in msg, msg
    msg = one_line_error(*cli(["run", tiny.recipe, "--resume", run, "--quiet", *changed, "--override", "train.lr"]))
    assert "encoder.dropout" in msg and "train.lr" not in msg, msg
    assert load_checkpoint(run / "last.pt")["train_state"]["step"] == 4  # nothing was touched

    code, out, err = cli(["run", tiny.recipe, "--resume", run, "--quiet", *changed, "--override", "train.lr", "--override", "encoder"])
    assert code == 0, err
    assert f"{tiny.total_steps} steps" in out
    saved = (run / "recipe.yaml").read_text()
    assert "lr: 0.01" in saved and "dropout: 0.1" in saved  # the run folder describes what was trained
    records = metric_records(run)
    assert records[0]["lr"] != records[-1]["lr"]  # and training went on with the new lr schedule


def test_resume_errors(tmp_path, cli, tiny_sentiment):
    empty = tmp_path / "empty"
    empty.mkdir()
    msg = one_line_error(*cli(["run", tiny_sentiment.recipe, "--resume", empty]))
    assert f"--resume {empty}: there is no last.pt" in msg, msg
    msg = one_line_error(*cli(["run", tiny_sentiment.recipe, "--resume", tmp_path / "nowhere"]))
    assert "no such run folder" in msg, msg
    msg = one_line_error(*cli(["run", tiny_sentiment.recipe, "--override", "train.lr"]))
    assert "only makes sense with --resume" in msg, msg

    done = tmp_path / "done"
    assert cli(["run", tiny_sentiment.recipe, "--output-dir", done, "--quiet"])[0] == 0
    before = (done / "metrics.jsonl").read_text()
    msg = one_line_error(*cli(["run", tiny_sentiment.recipe, "--resume", done]))
    assert "already finished (step 6)" in msg, msg
    assert (done / "metrics.jsonl").read_text() == before


@pytest.mark.slow
def test_external_sigterm_mid_training(tmp_path, cli):
    """A signal from outside at an unplanned moment: still a clean stop, and an exact resume."""
    tiny = resume_recipe(tmp_path / "data")
    text = tiny.recipe.read_text().replace("epochs: 3", "epochs: 60")
    tiny.recipe.write_text(text)
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "nlptoolkit.cli", "run", str(tiny.recipe), "--output-dir", str(run), "--quiet"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    import time

    deadline = time.time() + 120
    while time.time() < deadline and not (run / "metrics.jsonl").exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "Resume with:" in err.strip().splitlines()[-1]
    step = load_checkpoint(run / "last.pt")["train_state"]["step"]
    code, _, err = cli(["run", tiny.recipe, "--resume", run, "--quiet"])
    assert code == 0, err
    code, _, err = cli(["run", tiny.recipe, "--output-dir", tmp_path / "straight", "--quiet"])
    assert code == 0, err
    assert metric_records(run) == metric_records(tmp_path / "straight"), f"interrupted at step {step}"
    assert max_abs_diff(weights(run / "last.pt"), weights(tmp_path / "straight" / "last.pt")) == 0.0


def test_override_that_changes_the_model_shape_is_one_line(tmp_path, cli, monkeypatch):
    tiny, run = interrupted_run(tmp_path, cli, monkeypatch, 2)
    msg = one_line_error(*cli(["run", tiny.recipe, "--resume", run, "--set", "encoder.hidden_size=8", "--override", "encoder.hidden_size"]))
    assert "last.pt does not fit the model" in msg, msg
