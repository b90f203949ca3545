"""Files that cannot be half-written, checkpoints and recipes that cannot run code,
and training that stops cleanly when the loss stops being a number."""
from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from conftest import one_line_error
from nlptoolkit import checkpoint as ckpt
from nlptoolkit.checkpoint import FORMAT, load_checkpoint, save_checkpoint

# --------------------------------------------------------------------------
# atomic writes
# --------------------------------------------------------------------------
def files_in(folder: Path):
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("broken", ["replace", "fsync", "write"])
def test_crash_mid_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch, broken):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(3)}, "step": 1})
    before = path.read_bytes()

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    if broken == "write":  # the disk fills up halfway through the data
        real_fdopen = os.fdopen

        def fdopen(fd, mode="r", *args, **kwargs):
            f = real_fdopen(fd, mode, *args, **kwargs)
            real_write = f.write
            f.write = lambda data: (real_write(data[: len(data) // 2]), fail())[1]
            return f

        monkeypatch.setattr(ckpt.os, "fdopen", fdopen)
    else:
        monkeypatch.setattr(ckpt.os, broken, fail)
    with pytest.raises(OSError):
        save_checkpoint(path, {"model": {"w": torch.zeros(1000)}, "step": 2})
    monkeypatch.undo()

    assert files_in(tmp_path) == ["last.pt"]  # no temp file left behind
    assert path.read_bytes() == before
    payload = load_checkpoint(path)
    assert payload["step"] == 1 and torch.equal(payload["model"]["w"], torch.ones(3))


def test_json_and_text_writes_are_atomic_too(tmp_path, monkeypatch):
    path = tmp_path / "summary.json"
    ckpt.write_json(path, {"a": 1})
    monkeypatch.setattr(ckpt.os, "replace", lambda *a: (_ for _ in ()).throw(OSError("crash")))
    with pytest.raises(OSError):
        ckpt.write_json(path, {"a": 2})
    assert files_in(tmp_path) == ["summary.json"] and path.read_text() == '{\n  "a": 1\n}\n'


# --------------------------------------------------------------------------
# checkpoints that would run code
# --------------------------------------------------------------------------
class Evil:
    """Unpickling this writes a file: what a tampered checkpoint could do."""

    def __init__(self, target: Path) -> None:
        self.target = str(target)

    def __reduce__(self):
        return (exec, (f"open({self.target!r}, 'w').write('pwned')",))


def write_evil(path: Path, target: Path, kind: str) -> None:
    payload = {"format": FORMAT, "task": "sentiment", "model": {"w": torch.ones(2)}, "task_state": Evil(target)}
    if kind == "torch-zip":
        torch.save(payload, path)
    else:  # a bare pickle, the legacy format
        with open(path, "wb") as f:
            pickle.dump(payload, f)


def test_the_evil_checkpoint_really_is_evil(tmp_path):
    """Sanity check of the test payload: an unsafe load does run it."""
    target = tmp_path / "pwned.txt"
    write_evil(tmp_path / "x.pt", target, "pickle")
    with open(tmp_path / "x.pt", "rb") as f:
        pickle.load(f)  # what an unsafe loader does with the file
    assert target.read_text() == "pwned"


@pytest.fixture
def run_copy(trained_run, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(trained_run.dir, folder)
    return folder


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("kind", ["torch-zip", "pickle"])
@pytest.mark.parametrize(
    "name, command",
    [
        ("best.pt", ["evaluate", "{run}"]),
        ("best.pt", ["predict", "{run}", "a fine film"]),
        ("last.pt", ["evaluate", "{run}", "--checkpoint", "last"]),
        ("last.pt", ["run", "{recipe}", "--resume", "{run}"]),
    ],
)
def test_malicious_checkpoint_is_refused(run_copy, trained_run, cli, tmp_path, kind, name, command):
    target = tmp_path / "pwned.txt"
    write_evil(run_copy / name, target, kind)
    args = [a.format(run=run_copy, recipe=trained_run.data.recipe) for a in command]
    msg = one_line_error(*cli(args))
    assert f"{run_copy / name}: refused to load" in msg and "tampered" in msg, msg
    assert not target.exists()


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage", "not-a-dict", "no-format", "missing-keys", "wrong-types"])
def test_damaged_checkpoint_is_one_line(run_copy, cli, damage):
    path = run_copy / "best.pt"
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "garbage":
        path.write_bytes(os.urandom(5000))
    elif damage == "not-a-dict":
        torch.save([1, 2, 3], path)
    elif damage == "no-format":
        torch.save({"model": {}}, path)
    elif damage == "missing-keys":
        torch.save({"format": FORMAT}, path)
    else:
        torch.save({"format": FORMAT, "task_state": {"vocab": 3, "labels": None}, "model": [1]}, path)
    msg = one_line_error(*cli(["evaluate", run_copy]))
    assert str(path) in msg, msg


def test_truncated_last_pt_refuses_resume(run_copy, trained_run, cli):
    path = run_copy / "last.pt"
    path.write_bytes(path.read_bytes()[:1000])
    msg = one_line_error(*cli(["run", trained_run.data.recipe, "--resume", run_copy]))
    assert "truncated or corrupt" in msg, msg


# --------------------------------------------------------------------------
# recipes load with yaml.safe_load only
# --------------------------------------------------------------------------
PYTHON_TAGS = [
    "name: !!python/object/apply:os.system ['echo pwned > {target}']",
    "name: !!python/object/new:subprocess.Popen [['touch', '{target}']]",
    "name: !!python/object:argparse.Namespace {{x: 1}}",
    "name: !!python/name:os.system",
]


@pytest.mark.parametrize("line", PYTHON_TAGS)
def test_recipe_python_tags_are_rejected(cli, tiny_sentiment, tmp_path, line):
    target = tmp_path / "pwned.txt"
    recipe = tmp_path / "evil.yaml"
    recipe.write_text(line.format(target=target) + "\n" + tiny_sentiment.text.split("\n", 2)[2])
    for command in (["validate", recipe], ["run", recipe, "--output-dir", tmp_path / "out"]):
        msg = one_line_error(*cli(command))
        assert "invalid YAML: could not determine a constructor for the tag 'tag:yaml.org,2002:python/" in msg, msg
    assert not target.exists() and not (tmp_path / "out").exists()


def test_tampered_recipe_in_run_folder_is_rejected(run_copy, cli, tmp_path):
    target = tmp_path / "pwned.txt"
    recipe = run_copy / "recipe.yaml"
    recipe.write_text(f"seed: !!python/object/apply:os.system ['touch {target}']\n" + recipe.read_text())
    msg = one_line_error(*cli(["evaluate", run_copy]))
    assert f"{recipe}:1: invalid YAML" in msg, msg
    assert not target.exists()


# --------------------------------------------------------------------------
# non-finite loss
# --------------------------------------------------------------------------
def training_error(code: int, out: str, err: str) -> str:
    """Training may log evaluations first; the failure is then one `error:` line, the last."""
    assert code == 2, f"exit code {code}\n{out}\n{err}"
    assert "Traceback" not in err and "Traceback" not in out, err
    lines = err.strip("\n").split("\n")
    assert [line for line in lines if line.startswith("error: ")] == [lines[-1]], err
    return lines[-1]


BAD_LOSS_PLUGIN = '''
import torch
from nlptoolkit import register_task
from nlptoolkit_plugins.sentiment import SentimentTask


@register_task("bad_loss_sentiment")
class BadLossSentiment(SentimentTask):
    """Sentiment whose loss turns {value} at training step {step}."""

    calls = 0

    def training_step(self, model, batch):
        loss = super().training_step(model, batch)
        self.calls += 1
        return loss * float("{value}") if self.calls == {step} else loss
'''


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(cli, tiny_sentiment, tmp_path, value):
    plugin = tmp_path / f"bad_loss_{value}.py"
    plugin.write_text(BAD_LOSS_PLUGIN.format(value=value, step=5))
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(tiny_sentiment.text.replace("name: sentiment", "name: bad_loss_sentiment").replace("name: tiny", f"name: tiny\nplugins: [{plugin}]"))
    run = tmp_path / "run"
    msg = training_error(*cli(["run", recipe, "--output-dir", run, "--quiet"]))
    assert f"training loss became {value} at step 5 (epoch 1)" in msg, msg
    assert "lower train.lr (now 0.05)" in msg and "train.grad_clip" in msg, msg
    assert f"the last good checkpoint {run / 'last.pt'} (step 3) is kept" in msg, msg
    last = load_checkpoint(run / "last.pt")
    assert last["train_state"]["step"] == 3  # from before the bad step (evaluations at 3, 6)
    assert all(torch.isfinite(t).all() for t in last["model"].values())
    assert not (run / "summary.json").exists()


def test_non_finite_loss_before_any_checkpoint(cli, tiny_sentiment, tmp_path):
    plugin = tmp_path / "bad_loss_early.py"
    plugin.write_text(BAD_LOSS_PLUGIN.format(value="nan", step=1))
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(tiny_sentiment.text.replace("name: sentiment", "name: bad_loss_sentiment").replace("name: tiny", f"name: tiny\nplugins: [{plugin}]"))
    msg = one_line_error(*cli(["run", recipe, "--output-dir", tmp_path / "run", "--quiet"]))
    assert "training loss became nan at step 1" in msg and "no checkpoint was written yet" in msg, msg


def test_huge_lr_is_caught_by_the_finite_check(cli, tiny_sentiment, tmp_path):
    """lr 1000 without clipping: training either stops with the non-finite message or finishes with finite weights."""
    run = tmp_path / "run"
    code, out, err = cli(["run", tiny_sentiment.recipe, "--output-dir", run, "--quiet", "--set", "train.lr=1000", "--set", "train.grad_clip=null"])
    if code != 0:
        msg = training_error(code, out, err)
        assert "lower train.lr (now 1000.0)" in msg, msg
    if (run / "last.pt").exists():
        assert all(torch.isfinite(t).all() for t in load_checkpoint(run / "last.pt")["model"].values())
