"""train.precision: bf16 runs the training forward pass under autocast, and still learns the same thing;
auto picks bf16 only where it is native; an impossible bf16 is a one-line error.

The bf16 training tests need a CPU with native bf16 (avx512_bf16 / amx_bf16); elsewhere (an AVX2 CPU,
or `ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2` on a bf16 one) they are skipped with the reason.
The choice itself is tested everywhere, by faking what the machine reports.
"""
import json
import math
import platform
from pathlib import Path

import pytest
import torch

from conftest import one_line_error
from nlptoolkit import precision
from nlptoolkit.checkpoint import load_checkpoint
from nlptoolkit.precision import choose_precision
from nlptoolkit.runs import train
from nlptoolkit_plugins.language_model import LanguageModelTask

NATIVE, WHY = precision.native_cpu_bf16()
needs_native_bf16 = pytest.mark.skipif(not NATIVE, reason=f"bf16 is not native on this machine: {WHY}")

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


@needs_native_bf16
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


@needs_native_bf16
def test_bf16_runs_are_reproducible(tmp_path):
    assert run_lm(tmp_path, "first", "bf16") == run_lm(tmp_path, "second", "bf16")


@needs_native_bf16
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


# -- the choice, with the machine faked -----------------------------------------------------------
ONEDNN_ERROR = "could not create a primitive descriptor for the LSTM forward propagation primitive"


def fake_cpu(monkeypatch, flags, capability="AVX512", lstm_runs=True, onednn_isa=None):
    """Make the machine look like a CPU with ``flags``; the bf16 LSTM probe answers ``lstm_runs``."""
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(flags))
    monkeypatch.setattr(precision, "aten_capability", lambda: capability)
    monkeypatch.setattr(precision, "bf16_lstm_runs", lambda: (True, "a bf16 LSTM runs") if lstm_runs else (False, ONEDNN_ERROR))
    if onednn_isa is None:
        monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    else:
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", onednn_isa)


CPU = torch.device("cpu")
AVX2 = {"sse4_2", "avx", "avx2", "fma"}
SAPPHIRE_RAPIDS = AVX2 | {"avx512f", "avx512bw", "avx512_bf16", "amx_tile", "amx_bf16"}
SKYLAKE_X = AVX2 | {"avx512f", "avx512bw"}  # AVX-512, but no bf16 instructions


def test_auto_picks_bf16_on_a_native_cpu(monkeypatch):
    fake_cpu(monkeypatch, SAPPHIRE_RAPIDS)
    choice = choose_precision("auto", CPU)
    assert (choice.requested, choice.used) == ("auto", "bf16")
    assert "avx512_bf16" in choice.reason and "amx_bf16" in choice.reason
    assert choice.autocast_dtype == torch.bfloat16


@pytest.mark.parametrize("flags, capability, isa, lstm_runs, why", [
    (AVX2, "AVX2", None, False, "no native bf16"),  # an AMD EPYC Zen 3 / most laptops
    (SKYLAKE_X, "AVX512", None, True, "no native bf16"),  # bf16 would run, emulated
    (SAPPHIRE_RAPIDS, "AVX2", "AVX2", False, "ATEN_CPU_CAPABILITY"),  # the AVX2 emulation env vars
    (SAPPHIRE_RAPIDS, "AVX512", "AVX512_CORE", True, "ONEDNN_MAX_CPU_ISA=AVX512_CORE"),
    (SAPPHIRE_RAPIDS, "AVX512", None, False, ONEDNN_ERROR),  # flags say yes, but the kernel is missing
])
def test_auto_picks_fp32_where_bf16_is_not_native(monkeypatch, flags, capability, isa, lstm_runs, why):
    fake_cpu(monkeypatch, flags, capability, lstm_runs, isa)
    choice = choose_precision("auto", CPU)
    assert choice.used == "fp32" and choice.autocast_dtype is None
    assert why in choice.reason, choice.reason


def test_fp32_is_fp32_everywhere(monkeypatch):
    fake_cpu(monkeypatch, SAPPHIRE_RAPIDS)
    assert choose_precision("fp32", CPU).used == "fp32"


def test_explicit_bf16_where_it_only_emulates_runs_with_the_reason(monkeypatch):
    fake_cpu(monkeypatch, SKYLAKE_X, lstm_runs=True)
    choice = choose_precision("bf16", CPU)
    assert choice.used == "bf16" and "emulated" in choice.reason and "slower than fp32" in choice.reason


def test_explicit_bf16_where_it_cannot_run_is_a_one_line_error(tmp_path, cli, monkeypatch):
    fake_cpu(monkeypatch, AVX2, capability="AVX2", lstm_runs=False)
    recipe = lm_recipe(tmp_path, "bf16", "bf16")
    msg = one_line_error(*cli(["run", recipe, "--output-dir", tmp_path / "run", "--quiet"]))
    assert msg.startswith(f"error: {recipe}: train.precision: bf16 cannot run on this CPU"), msg
    assert ONEDNN_ERROR in msg and "train.precision: auto" in msg and "fp32" in msg, msg
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_auto_records_the_choice_in_the_log_and_summary(tmp_path, cli, monkeypatch):
    fake_cpu(monkeypatch, AVX2, capability="AVX2", lstm_runs=False)
    seen = []
    real_step = LanguageModelTask.training_step

    def spy(self, model, batch):
        seen.append(torch.is_autocast_enabled("cpu"))
        return real_step(self, model, batch)

    monkeypatch.setattr(LanguageModelTask, "training_step", spy)
    recipe = lm_recipe(tmp_path, "auto", "auto")
    code, out, err = cli(["run", recipe, "--output-dir", tmp_path / "run", "--quiet", "--set", "train.epochs=1"])
    assert code == 0, err
    assert seen and not any(seen)  # the forward pass ran in fp32
    assert "precision: fp32 (train.precision: auto; this CPU has no native bf16 (no avx512_bf16 or amx_bf16 flag))" in err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["precision"] == {
        "requested": "auto", "used": "fp32", "reason": "this CPU has no native bf16 (no avx512_bf16 or amx_bf16 flag)",
    }


def test_precision_defaults_to_auto(tmp_path):
    from nlptoolkit.recipe import TrainConfig

    assert TrainConfig().precision == "auto"
    # no bundled recipe may depend on one kind of CPU: bf16 only through auto
    for recipe in sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml")):
        assert "precision: bf16" not in recipe.read_text(), recipe
    assert "  precision: auto" in (Path(__file__).resolve().parents[1] / "recipes" / "char_lm.yaml").read_text()


# -- the real machine under the AVX2 emulation switches --------------------------------------------
@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="the emulation switches are x86 oneDNN/ATen ones")
def test_avx2_machine_auto_trains_in_fp32_and_bf16_is_refused(tmp_path, run_cli):
    """Not faked: oneDNN and ATen really limited to AVX2, as on an AMD EPYC Zen 3 or most laptops."""
    avx2 = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
    recipe = lm_recipe(tmp_path, "bf16", "bf16")
    msg = one_line_error(*run_cli(["run", recipe, "--output-dir", tmp_path / "bf16", "--quiet"], cwd=tmp_path, env=avx2))
    assert "train.precision: bf16 cannot run on this CPU" in msg and "auto" in msg, msg
    recipe = lm_recipe(tmp_path, "auto", "auto")
    code, out, err = run_cli(["run", recipe, "--output-dir", tmp_path / "auto", "--quiet", "--set", "train.epochs=1"], cwd=tmp_path, env=avx2)
    assert code == 0 and "Traceback" not in err, err
    assert json.loads((tmp_path / "auto" / "summary.json").read_text())["precision"]["used"] == "fp32"
