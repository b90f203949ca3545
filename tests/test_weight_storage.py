"""Smaller weights for generation (fp16, int8): the products against float64 references, and the
rule that a run uses them only after measuring the validation loss they cost."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nlptoolkit import matvec
from nlptoolkit.api import load
from nlptoolkit.cli import main
from nlptoolkit.runs import train

needs_fbgemm = pytest.mark.skipif("fbgemm" not in torch.backends.quantized.supported_engines,
                                  reason="this torch build has no FBGEMM (fp16/int8 weights fall back to fp32)")


def weight_input_bias(out=48, inp=40, batch=1):
    g = torch.Generator().manual_seed(5)
    return torch.randn(out, inp, generator=g) * 0.3, torch.randn(batch, inp, generator=g), torch.randn(out, generator=g)


@needs_fbgemm
@pytest.mark.parametrize("batch", [1, 3])
def test_fp16_product_is_the_product_of_the_fp16_rounded_weights(batch):
    w, x, b = weight_input_bias(batch=batch)
    _, product = matvec.prepare_stored(w, "fp16")
    want = b.double() + x.double() @ w.half().double().t()  # fp16 weights, exact accumulation
    assert torch.allclose(product(x, b).double(), want, atol=1e-4, rtol=0)
    assert not torch.allclose(product(x, b).double(), b.double() + x.double() @ w.double().t(), atol=1e-7, rtol=0)  # it did round


def test_int8_rows_reconstruct_each_weight_within_half_a_step():
    w, _, _ = weight_input_bias()
    q, scale = matvec.int8_rows(w)
    assert q.dtype == torch.int8 and q.abs().max() == 127
    assert ((q.double() * scale.double()[:, None] - w.double()).abs() <= scale.double()[:, None] / 2 + 1e-7).all()


@needs_fbgemm
def test_int8_product_is_the_dequantized_product_up_to_the_inputs_rounding():
    """FBGEMM rounds the input to 127 levels over [min(x, 0), max(x, 0)]: each input moves by at
    most half a level, so an output moves by at most that times the row's sum of |weights|."""
    w, x, b = weight_input_bias()
    q, scale = matvec.int8_rows(w)
    dequantized = q.double() * scale.double()[:, None]
    _, product = matvec.prepare_stored(w, "int8")
    got, want = product(x, b).double(), b.double() + x.double() @ dequantized.t()
    level = (max(float(x.max()), 0.0) - min(float(x.min()), 0.0)) / 127
    bound = dequantized.abs().sum(dim=1) * level / 2 + 1e-4
    assert ((got - want).abs() <= bound).all()
    assert (got - want).abs().max() > 1e-6  # the input was rounded (the bound is not vacuous)


def test_unknown_storage_is_named():
    with pytest.raises(ValueError, match="unknown weight storage 'int4'"):
        matvec.prepare_stored(torch.ones(2, 2), "int4")


# ----------------------------------------------------------------------------
# nlptk generate --weights: measured once, trusted after, fp32 when over the tolerance
# ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("weights")
    text = "the cat sat on the mat.\nthe dog sat on the log.\n" * 6
    for split in ("train", "validation"):
        (folder / f"{split}.txt").write_text(text, encoding="utf-8")
    recipe = folder / "lm.yaml"
    recipe.write_text(
        f"""
name: lm
task: {{name: language_model, bptt: 8, dropout: 0.0, sample_tokens: 0}}
device: cpu
data:
  files: {{train: {folder}/train.txt, validation: {folder}/validation.txt}}
  tokenizer: {{kind: char}}
encoder: {{cell: lstm, embedding_dim: 8, hidden_size: 24, num_layers: 2}}
train: {{batch_size: 2, epochs: 3, lr: 0.02, eval_every: 100000}}
""",
        encoding="utf-8",
    )
    train(str(recipe), output_dir=str(folder / "run"), quiet=True)
    return folder / "run"


@needs_fbgemm
def test_a_storage_is_measured_once_recorded_and_then_trusted(small_run, monkeypatch, capsys):
    record_file = small_run / "best.generation_weights.json"
    record_file.unlink(missing_ok=True)
    run = load(small_run)
    run.task.options.generation_tolerance = 1.0
    assert run.generation_weights("int8") == "int8"
    assert "measuring the validation loss with int8" in capsys.readouterr().err
    record = json.loads(record_file.read_text())
    # The stepped fp32 loss is the loss of the task's ordinary evaluation (the whole model in one call).
    assert record["fp32"]["loss"] == pytest.approx(run.evaluate()["loss"], abs=1e-5)
    assert record["int8"]["loss_change"] == pytest.approx(record["int8"]["loss"] - record["fp32"]["loss"])
    assert record["int8"]["loss"] != record["fp32"]["loss"]

    def no_second_measurement(*args, **kwargs):
        raise AssertionError("measured again")

    again = load(small_run)
    again.task.options.generation_tolerance = 1.0
    monkeypatch.setattr(again.task, "evaluate", no_second_measurement)
    assert again.generation_weights("int8") == "int8"
    assert len(again.generate("the", max_tokens=20, temperature=0, weights="int8")) == 23


@needs_fbgemm
def test_over_the_tolerance_generation_falls_back_to_fp32_with_one_line(small_run, capsys):
    run = load(small_run)
    run.task.options.generation_tolerance = -1.0  # no change can be this small: fake a storage that costs too much
    assert run.generation_weights("fp16") == "fp32"
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("generation weights: fp16 moved the validation loss by") and err[-1].endswith("using fp32")
    assert run.generate("the", max_tokens=10, temperature=0, weights="fp16") == run.generate("the", max_tokens=10, temperature=0)


def test_without_the_kernel_generation_falls_back_to_fp32(small_run, monkeypatch, capsys):
    def missing(weight):
        raise RuntimeError("no FBGEMM here")

    monkeypatch.setitem(matvec.STORAGE, "int8", missing)
    (small_run / "best.generation_weights.json").unlink(missing_ok=True)
    assert load(small_run).generation_weights("int8") == "fp32"
    assert "int8 unavailable here (no FBGEMM here); using fp32" in capsys.readouterr().err


def test_cli_weights_default_comes_from_the_recipe_and_bad_values_are_named(small_run, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", str(small_run), "--max-tokens", "5", "--weights", "int4"])
    assert exit_info.value.code == 2
    assert "int4" in capsys.readouterr().err
    assert load(small_run).generation_weights() == "fp32"  # the recipe sets none


@needs_fbgemm
def test_a_quantized_stepper_is_kept_on_the_model_until_a_weight_changes(small_run):
    from nlptoolkit_plugins.language_model import stepper_for

    model = load(small_run).model
    first = stepper_for(model, "int8")
    assert stepper_for(model, "int8") is first  # quantized and packed once
    assert stepper_for(model, "fp32") is not stepper_for(model, "fp32")  # fp32 is arranged fresh each time
    with torch.no_grad():
        model.encoder.layers[0][0].weight_hh_l0.mul_(0.5)  # as an optimizer step does, in place
    rebuilt = stepper_for(model, "int8")
    assert rebuilt is not first
    token = torch.tensor([3])
    _, state = first(token)  # a non-zero state, which the changed W_hh multiplies
    assert not torch.equal(first(token, state)[0], rebuilt(token, state)[0])
