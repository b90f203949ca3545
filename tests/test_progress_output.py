"""What `nlptk run` writes to stderr: a progress bar on a terminal, plain lines in a log file.

With stderr redirected (`> run.log 2>&1`) a bar's carriage-return redraws would fill the file, so
there the trainer writes one plain line per evaluation and one every PROGRESS_LINE_SECONDS.
"""
from __future__ import annotations

import json
import re

import nlptoolkit.trainer as trainer


def evaluation_lines(err: str):
    return [line for line in err.splitlines() if re.match(r"step \d+ epoch \d+: .*validation", line)]


def progress_lines(err: str):
    return [line for line in err.splitlines() if re.match(r"step \d+ epoch \d+/\d+ batch \d+/\d+: ", line)]


def test_a_log_file_gets_plain_lines_and_no_redraws(tiny_sentiment, cli, tmp_path, monkeypatch):
    monkeypatch.setattr(trainer, "PROGRESS_LINE_SECONDS", 0.0)  # a line after every step
    run = tmp_path / "run"
    code, _, err = cli(["run", tiny_sentiment.recipe, "--output-dir", run])  # stderr is not a terminal here
    assert code == 0, err
    assert "\r" not in err and "\x1b" not in err, repr(err[:300])
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [3, 6]
    assert len(evaluation_lines(err)) == 2
    lines = progress_lines(err)
    assert [int(line.split()[1]) for line in lines] == [1, 2, 3, 4, 5, 6]
    assert all(f"batch {i}/8" in line for i, line in zip(range(1, 7), lines))  # 60 rows, batch 8: 8 batches
    # each line's loss is that step's; three of them average to the train_loss evaluated at step 3
    losses = [float(re.search(r"train_loss=([0-9.]+)", line).group(1)) for line in lines]
    assert sum(losses[:3]) / 3 == __import__("pytest").approx(records[0]["train_loss"], abs=2e-4)


def test_a_log_file_gets_a_line_every_interval_not_every_step(tiny_sentiment, cli, tmp_path):
    code, _, err = cli(["run", tiny_sentiment.recipe, "--output-dir", tmp_path / "run"])
    assert code == 0, err
    assert progress_lines(err) == []  # the run takes far less than PROGRESS_LINE_SECONDS
    assert len(evaluation_lines(err)) == 2 and "\r" not in err


def test_quiet_writes_evaluations_only(tiny_sentiment, cli, tmp_path, monkeypatch):
    monkeypatch.setattr(trainer, "PROGRESS_LINE_SECONDS", 0.0)
    code, _, err = cli(["run", tiny_sentiment.recipe, "--output-dir", tmp_path / "run", "--quiet"])
    assert code == 0, err
    assert progress_lines(err) == [] and len(evaluation_lines(err)) == 2 and "\r" not in err


def test_a_terminal_keeps_the_progress_bar(tiny_sentiment, cli, tmp_path, monkeypatch):
    monkeypatch.setattr(trainer, "stderr_is_terminal", lambda: True)
    monkeypatch.setattr(trainer, "PROGRESS_LINE_SECONDS", 0.0)
    code, _, err = cli(["run", tiny_sentiment.recipe, "--output-dir", tmp_path / "run"])
    assert code == 0, err
    assert "\r" in err and "epoch 1/1" in err  # tqdm's redraws
    assert progress_lines(err) == [] and len(evaluation_lines(err)) == 2
