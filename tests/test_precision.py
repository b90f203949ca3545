"""train.precision: bf16 runs the training forward pass under autocast, and still learns the same thing."""
import json
import math
from pathlib import Path

import pytest
import torch

from nlptoolkit.runs import train
from plugins.language_model import LanguageModelTask

TEXT = "the cat sat on the mat.\nthe dog sat on the log.\n" * 20


def run_lm(tmp_path: Path, name: str, precision: str) -> dict:
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
    train(str(recipe), output_dir=str(tmp_path / name), quiet=True)
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
