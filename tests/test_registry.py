"""The task registry: entry points, plugin files, duplicates, broken plugins."""
from __future__ import annotations

import ast
import importlib.metadata
import json
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import REPO, one_line_error
from nlptoolkit.errors import NlptkError
from nlptoolkit.registry import ENTRY_POINT_GROUP, Registry

TOY_PLUGIN = '''
"""A toy many-to-one task: is a text longer than {threshold} words?"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nlptoolkit import RNNEncoder, Task, Vocabulary, pad_batch, register_task


@dataclass
class ToyOptions:
    threshold: int = {threshold}


class ToyModel(nn.Module):
    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder
        self.out = nn.Linear(encoder.output_size, 2)

    def forward(self, tokens, lengths):
        return self.out(self.encoder(tokens, lengths).final)


@register_task("{name}")
class ToyTask(Task):
    """Toy: is the text long?"""

    description = "Toy task from a user plugin file."
    Options = ToyOptions
    metrics = ("accuracy", "loss")

    def setup(self, train):
        self.vocab = Vocabulary.build(t.lower().split() for t in train["text"])

    def state_dict(self):
        return {{"vocab": self.vocab.itos}}

    def load_state_dict(self, state):
        self.vocab = Vocabulary(state["vocab"])

    def encode(self, dataset, split):
        return [
            (self.vocab.encode(t.lower().split()) or [self.vocab.unk_id], int(len(t.split()) > self.options.threshold))
            for t in dataset["text"]
        ]

    def length(self, example):
        return len(example[0])

    def collate(self, examples):
        tokens, lengths = pad_batch([e[0] for e in examples])
        return {{"tokens": tokens, "lengths": lengths, "labels": torch.tensor([e[1] for e in examples])}}

    def build_model(self):
        return ToyModel(RNNEncoder.from_config(self.recipe.encoder, vocab_size=len(self.vocab)))

    def training_step(self, model, batch):
        return F.cross_entropy(model(batch["tokens"], batch["lengths"]), batch["labels"])

    def evaluate_batch(self, model, batch):
        logits = model(batch["tokens"], batch["lengths"])
        return {{
            "loss": float(F.cross_entropy(logits, batch["labels"], reduction="sum")),
            "right": int((logits.argmax(-1) == batch["labels"]).sum()),
            "n": len(batch["labels"]),
        }}

    def compute_metrics(self, totals):
        return {{"accuracy": totals["right"] / totals["n"], "loss": totals["loss"] / totals["n"]}}
'''


def write_plugin(folder: Path, filename: str, name: str = "toy_length", threshold: int = 10) -> Path:
    path = folder / filename
    path.write_text(TOY_PLUGIN.format(name=name, threshold=threshold))
    return path


def test_user_plugin_is_listed_with_its_source(cli, tmp_path):
    plugin = write_plugin(tmp_path, "toy_plugin.py")
    code, out, err = cli(["--plugin", plugin, "list"])
    assert code == 0, err
    lines = {line.split()[0]: line for line in out.splitlines()}
    assert "toy_length" in lines and "sentiment" in lines, out
    assert "Toy task from a user plugin file." in lines["toy_length"]
    assert lines["toy_length"].endswith(f"[plugin file {plugin}]"), lines["toy_length"]
    assert "entry point 'sentiment' (nlptoolkit_plugins.sentiment:SentimentTask" in lines["sentiment"]


def test_user_plugin_trains_evaluates_through_recipe(cli, tiny_sentiment, tmp_path):
    plugin = write_plugin(tmp_path, "toy_plugin.py", threshold=12)
    text = tiny_sentiment.text.replace(
        "task:\n  name: sentiment\n  text_field: text\n  label_field: label\n",
        f"plugins:\n  - {plugin}\ntask:\n  name: toy_length\n  threshold: 12\n",
    ).replace("    metric: accuracy\n", "    metric: loss\n")
    recipe = tmp_path / "toy.yaml"
    recipe.write_text(text)
    code, out, err = cli(["run", recipe, "--output-dir", "toy_run", "--quiet"])
    assert code == 0, err
    summary = json.loads((tmp_path / "toy_run" / "summary.json").read_text())
    assert summary["task"] == "toy_length" and summary["steps"] == 6
    # a later process knows the task from the plugins: list saved in the run's recipe
    code, out, err = cli(["evaluate", "toy_run", "--json"])
    assert code == 0, err
    metrics = json.loads(out)
    assert set(metrics) == {"accuracy", "loss"}
    # independent expectation: accuracy is a fraction of the 20 validation rows
    assert round(metrics["accuracy"] * 20, 6) == int(round(metrics["accuracy"] * 20))


def test_task_option_of_plugin_is_checked(cli, tiny_sentiment, tmp_path):
    plugin = write_plugin(tmp_path, "toy_plugin.py")
    text = tiny_sentiment.text.replace(
        "task:\n  name: sentiment\n  text_field: text\n  label_field: label\n",
        f"plugins: [{plugin}]\ntask:\n  name: toy_length\n  treshold: 3\n",
    )
    recipe = tmp_path / "toy.yaml"
    recipe.write_text(text)
    msg = one_line_error(*cli(["validate", recipe]))
    assert "task.treshold" in msg and "did you mean 'threshold'" in msg, msg


def test_duplicate_task_names_both_sources(cli, tmp_path):
    first = write_plugin(tmp_path, "first_plugin.py", name="dup_task")
    second = write_plugin(tmp_path, "second_plugin.py", name="dup_task")
    msg = one_line_error(*cli(["--plugin", first, "--plugin", second, "list"]))
    assert "task 'dup_task' is registered twice" in msg, msg
    assert f"plugin file {first}" in msg and f"plugin file {second}" in msg, msg


def test_plugin_cannot_take_a_builtin_name(cli, tmp_path):
    plugin = write_plugin(tmp_path, "impostor.py", name="sentiment")
    code, out, err = cli(["--plugin", plugin, "list"])
    msg = one_line_error(code, out, err)
    assert "task 'sentiment' is registered twice" in msg and f"plugin file {plugin}" in msg, msg
    assert "entry point 'sentiment'" in msg, msg


def test_same_plugin_twice_is_fine(cli, tmp_path):
    plugin = write_plugin(tmp_path, "toy_plugin.py")
    code, out, err = cli(["--plugin", plugin, "--plugin", plugin, "list"])
    assert code == 0, err
    assert sum(line.startswith("toy_length ") for line in out.splitlines()) == 1


# --------------------------------------------------------------------------
# entry points
# --------------------------------------------------------------------------
def test_builtin_sentiment_comes_from_entry_point():
    declared = {ep.name: ep.value for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    assert declared.get("sentiment") == "nlptoolkit_plugins.sentiment:SentimentTask"
    reg = Registry()
    entries = {e.name: e for e in reg.entries()}
    assert entries["sentiment"].source.startswith("entry point 'sentiment' (nlptoolkit_plugins.sentiment:SentimentTask")
    assert entries["sentiment"].cls.__module__ == "nlptoolkit_plugins.sentiment"
    assert reg.failures == {}


def _broken_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    name = "nlptk_test_broken_plugin_mod"
    (tmp_path / f"{name}.py").write_text("raise RuntimeError('missing CUDA toolkit')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return name


def _fake_entry_points(monkeypatch: pytest.MonkeyPatch, extra: list) -> None:
    real = list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))

    def fake(group: str):
        assert group == ENTRY_POINT_GROUP
        return extra + real

    monkeypatch.setattr("nlptoolkit.registry.entry_points", fake)


def test_broken_entry_point_is_reported_others_still_load(tmp_path, monkeypatch):
    module = _broken_module(tmp_path, monkeypatch)
    broken = importlib.metadata.EntryPoint(name="broken", value=f"{module}:Task", group=ENTRY_POINT_GROUP)
    missing = importlib.metadata.EntryPoint(name="ghost", value="nlptk_no_such_module_xyz:Task", group=ENTRY_POINT_GROUP)
    _fake_entry_points(monkeypatch, [broken, missing])
    reg = Registry()
    reg.load_entry_points()
    assert "sentiment" in reg.tasks  # loaded after the broken ones
    assert set(reg.tasks).isdisjoint({"broken", "ghost"})
    reasons = {source.split("'")[1]: reason for source, reason in reg.failures.items()}
    assert reasons["broken"] == "RuntimeError: missing CUDA toolkit"
    assert reasons["ghost"].startswith("ModuleNotFoundError")
    # and unknown-task errors mention what failed to load
    with pytest.raises(NlptkError, match="plugins that failed to load: entry point 'broken'"):
        reg.get("broken")


def test_list_shows_failed_entry_points(cli, tmp_path, monkeypatch):
    module = _broken_module(tmp_path, monkeypatch)
    broken = importlib.metadata.EntryPoint(name="broken", value=f"{module}:Task", group=ENTRY_POINT_GROUP)
    _fake_entry_points(monkeypatch, [broken])
    code, out, err = cli(["list"])
    assert code == 0, err
    assert any(line.startswith("sentiment ") for line in out.splitlines())
    failed = [line for line in out.splitlines() if line.startswith("(failed)")]
    assert len(failed) == 1 and "RuntimeError: missing CUDA toolkit" in failed[0] and f"{module}:Task" in failed[0]


def test_entry_points_load_once():
    calls = []
    reg = Registry()
    import nlptoolkit.registry as registry_module

    original = registry_module.entry_points
    try:
        registry_module.entry_points = lambda group: calls.append(group) or original(group=group)
        reg.entries()
        reg.get("sentiment")
        reg.entries()
    finally:
        registry_module.entry_points = original
    assert calls == [ENTRY_POINT_GROUP]


# --------------------------------------------------------------------------
# the core does not know its plugins
# --------------------------------------------------------------------------
PLUGIN_PACKAGES = ("plugins.", "nlptoolkit_plugins.")  # the folder in a checkout, the installed package


def is_plugin_module(name: str) -> bool:
    return name.split(".")[0] in ("plugins", "nlptoolkit_plugins")


def test_core_never_imports_plugins():
    offenders = []
    for path in sorted((REPO / "nlptoolkit").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""] if node.level == 0 else []
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                # importlib.import_module("nlptoolkit_plugins.x") and the like
                names = [node.value] if node.value.startswith(PLUGIN_PACKAGES) else []
            else:
                continue
            offenders += [f"{path.relative_to(REPO)}:{node.lineno}: {n}" for n in names if is_plugin_module(n)]
    assert offenders == []


def test_importing_core_loads_no_plugin(run_cli, tmp_path):
    import subprocess

    code = textwrap.dedent(
        """
        import sys
        import nlptoolkit, nlptoolkit.cli, nlptoolkit.runs, nlptoolkit.recipe, nlptoolkit.trainer
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("plugins", "nlptoolkit_plugins")))
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
