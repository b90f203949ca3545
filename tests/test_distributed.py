"""`nlptk run --nproc 2` (DDP on gloo) takes the same steps as one process with the same global batch."""
from __future__ import annotations

import pytest
import torch

from nlptoolkit.checkpoint import load_checkpoint


@pytest.mark.parametrize("task", [[], ["--set", "task.ensemble=2", "--set", "task.score_field=score"]], ids=["one model", "ensemble with scores"])
def test_two_processes_match_one_process(tmp_path, tiny_sentiment, run_cli, task):
    # 60 rows / global batch 8: 7 batches of 8 and one of 4, all split evenly; no dropout, so the two
    # runs differ only in how each global batch's gradient is computed. The ensemble trains through
    # forward(each=True), which the DistributedDataParallel wrapper must see to sync the gradients.
    common = ["--set", "train.max_steps=10", "--set", "train.epochs=2", "--set", "task.dropout=0.0",
              "--set", "train.batch_size=8", "--set", "train.lr=0.01", "--quiet", *task]
    code, out, err = run_cli(["run", tiny_sentiment.recipe, "--output-dir", tmp_path / "one", *common], cwd=tmp_path)
    assert code == 0, err
    code, out, err = run_cli(["run", tiny_sentiment.recipe, "--output-dir", tmp_path / "two", "--nproc", "2", *common], cwd=tmp_path)
    assert code == 0, err
    one = load_checkpoint(tmp_path / "one" / "last.pt")
    two = load_checkpoint(tmp_path / "two" / "last.pt")
    assert one["train_state"]["step"] == two["train_state"]["step"] == 10
    for name, weight in one["model"].items():
        # Adam divides by sqrt(v): float sums in another order move weights by ~1e-5.
        assert torch.allclose(weight, two["model"][name], atol=1e-4), name
    import json

    assert json.loads((tmp_path / "two" / "summary.json").read_text())["processes"] == 2
    # Only rank 0 wrote: one metrics line per evaluation, not one per process.
    lines_one = (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()
    lines_two = (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()
    assert len(lines_one) == len(lines_two)


# -- every way a multi-process run can end ---------------------------------------------------------
import json  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import pytest  # noqa: E402

from conftest import REPO  # noqa: E402

# The tiny recipe: 60 rows, global batch 8, so 8 steps an epoch; fp32, evaluation every 3 steps.
ENDINGS = {
    # the user's report: evaluation at the epoch's end, then the final-evaluation check
    "completed": ["--set", "train.max_steps=null", "--set", "train.eval_every=null", "--set", "train.epochs=2"],
    "early_stopping": ["--set", "train.max_steps=null", "--set", "train.eval_every=null", "--set", "train.epochs=30",
                       "--set", "train.early_stopping.metric=loss", "--set", "train.early_stopping.patience=1"],
    "max_steps": ["--set", "train.max_steps=5", "--set", "train.epochs=3"],  # mid-epoch, between evaluations
    # the processes' clocks differ: a budget of 0.6 s runs out on one before the other
    "max_minutes": ["--set", "train.max_steps=null", "--set", "train.epochs=1000", "--set", "train.max_minutes=0.01"],
}


def assert_evaluate_reads(run, run_cli, tmp_path):
    code, out, err = run_cli(["evaluate", run, "--json"], cwd=tmp_path)
    assert code == 0, err
    assert set(json.loads(out)) >= {"accuracy", "loss"}


@pytest.mark.parametrize("ending", [
    "completed",
    pytest.param("early_stopping", marks=pytest.mark.slow),
    pytest.param("max_steps", marks=pytest.mark.slow),
    pytest.param("max_minutes", marks=pytest.mark.slow),
])
def test_two_processes_end_cleanly(ending, tmp_path, tiny_sentiment, run_cli):
    run = tmp_path / "run"
    code, out, err = run_cli(["run", tiny_sentiment.recipe, "--output-dir", run, "--nproc", "2", "--quiet", *ENDINGS[ending]], cwd=tmp_path)
    assert code == 0, err
    assert "Traceback" not in err and "Error" not in err, err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stopped"] == ending and summary["processes"] == 2
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == summary["steps"]  # the final evaluation, once, by rank 0
    assert len({r["step"] for r in records}) == len(records)
    assert_evaluate_reads(run, run_cli, tmp_path)


@pytest.mark.parametrize("sig", ["TERM", pytest.param("INT", marks=pytest.mark.slow)])
def test_two_processes_stopped_by_a_signal_save_and_resume(sig, tmp_path, tiny_sentiment, run_cli):
    """SIGTERM (or Ctrl-C's SIGINT) to `nlptk run --nproc 2`: both processes stop at the same step."""
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    args = ["run", str(tiny_sentiment.recipe), "--output-dir", str(run), "--nproc", "2", "--quiet",
            "--set", "train.max_steps=null", "--set", "train.epochs=1000", "--set", "train.eval_every=2"]
    proc = subprocess.Popen([sys.executable, "-m", "nlptoolkit.cli", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "best.pt").exists():
        time.sleep(0.05)
    proc.send_signal(getattr(signal, "SIG" + sig))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == {"TERM": 143, "INT": 130}[sig], err
    assert "Traceback" not in err, err
    resume = [line for line in err.splitlines() if "Resume with:" in line]
    assert len(resume) == 1 and resume[0].endswith(f"nlptk run --resume {run} --nproc 2"), err
    assert not (run / "summary.json").exists()
    assert_evaluate_reads(run, run_cli, tmp_path)
