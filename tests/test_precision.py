"""train.precision: bf16 runs the training forward pass under autocast, and still learns the same thing."""
import json
import math
from pathlib import Path

import pytest
import torch

from nlptoolkit.checkpoint import load_checkpoint
from nlptoolkit.runs import train
from nlptoolkit_plugins.language_model import LanguageModelTask

TEXT = "the cat sat on the mat.\nthe dog sat on the log.\n" * 20


def lm_recipe(tmp_path: Path, name: str, precision: str) -> Path:
    (tmp_path / "train.txt").write_text(TEXT, encoding="utf-8")
    (tmp_path / "validation.txt").write_text(TEXT[:200], encoding="utf-8")
    recipe = tmp_path / f"{name}.yaml"
    recipe.write_text(
        f"""
name: {name}
task: {{name: language_model, bptt: 16, dropout: 0.0, sample_tokens: 0}}
seed: 3
device: cpu
data:
  files: {{train: {tmp_path}/train.txt, validation: {tmp_path}/validation.txt}}
  tokenizer: {{kind: char}}
encoder: {{cell: lstm, embedding_dim: 16, hidden_size: 32, num_layers: 2}}
train: {{batch_size: 4, epochs: 8, lr: 0.01, precision: {precision}}}
""",
        encoding="utf-8",
    )
    return recipe


def run_lm(tmp_path: Path, name: str, precision: str) -> dict:
    train(str(lm_recipe(tmp_path, name, precision)), output_dir=str(tmp_path / name), quiet=True)
    return json.loads((tmp_path / name / "summary.json").read_text())["best"]["metrics"]


def test_bf16_autocasts_the_training_forward_and_learns_like_fp32(tmp_path, monkeypatch):
    seen = []
    real_step = LanguageModelTask.training_step

    def spy(self, model, batch):
        loss = real_step(self, model, batch)
        seen.append((torch.is_autocast_enabled("cpu"), self.carried[0].dtype))
        return loss

    monkeypatch.setattr(LanguageModelTask, "training_step", spy)
    fp32 = run_lm(tmp_path, "fp32", "fp32")
    assert seen and all(state == (False, torch.float32) for state in seen)
    seen.clear()
    bf16 = run_lm(tmp_path, "bf16", "bf16")
    assert seen and all(state == (True, torch.bfloat16) for state in seen)  # the LSTM really ran in bf16

    # Characters of the text, uniform: what a model that learnt nothing would score.
    uniform = math.log(len(set(TEXT)))
    loss32, loss16 = fp32["loss"], bf16["loss"]
    assert loss32 < 0.5 * uniform and loss16 < 0.5 * uniform
    assert loss16 == pytest.approx(loss32, abs=0.1)  # bf16 rounding, not a different model


def test_bf16_runs_are_reproducible(tmp_path):
    assert run_lm(tmp_path, "first", "bf16") == run_lm(tmp_path, "second", "bf16")


def test_bf16_run_interrupted_and_resumed_equals_one_straight_run(tmp_path, cli, monkeypatch):
    """The carried LM state is bf16 under autocast; it goes into last.pt and comes back exactly."""
    recipe = lm_recipe(tmp_path, "bf16", "bf16")
    assert cli(["run", recipe, "--output-dir", tmp_path / "straight", "--quiet"])[0] == 0
    monkeypatch.setenv("NLPTK_TEST_SIGNAL_AT_STEP", "50")  # mid-epoch (15 steps an epoch)
    assert cli(["run", recipe, "--output-dir", tmp_path / "resumed", "--quiet"])[0] == 143
    monkeypatch.delenv("NLPTK_TEST_SIGNAL_AT_STEP")
    saved = load_checkpoint(tmp_path / "resumed" / "last.pt")
    assert saved["train_state"]["step"] == 50
    assert cli(["run", recipe, "--resume", tmp_path / "resumed", "--quiet"])[0] == 0
    for name in ("last.pt", "best.pt"):
        a = load_checkpoint(tmp_path / "resumed" / name)["model"]
        b = load_checkpoint(tmp_path / "straight" / name)["model"]
        assert all(torch.equal(a[k], b[k]) for k in b), name
    summaries = [json.loads((tmp_path / d / "summary.json").read_text()) for d in ("resumed", "straight")]
    assert summaries[0]["best"] == summaries[1]["best"]
