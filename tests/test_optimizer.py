"""The trainer's Adam: the fused kernel where torch has one, the same update as the default."""
from __future__ import annotations

import pytest
import torch

import nlptoolkit
from nlptoolkit.checkpoint import load_checkpoint
from nlptoolkit.trainer import fused_adam


def trajectory(make, steps: int = 25):
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(40, 7)), torch.nn.Parameter(torch.randn(7))]
    optimizer = make(params)
    grads = torch.Generator().manual_seed(1)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=grads)
        optimizer.step()
    return optimizer, params


@pytest.mark.parametrize("kind", [torch.optim.Adam, torch.optim.AdamW])
def test_fused_adam_makes_the_default_update(kind):
    fused, a = trajectory(lambda ps: fused_adam(kind, ps, lr=0.01, weight_decay=0.1))
    default, b = trajectory(lambda ps: kind(ps, lr=0.01, weight_decay=0.1))
    assert fused.defaults["fused"] is True and not default.defaults["fused"]  # torch 2.4+ has the CPU kernel
    for x, y in zip(a, b):
        assert torch.allclose(x, y, atol=1e-6)


def test_fused_adam_falls_back_where_torch_has_no_fused_kernel():
    class OldAdam(torch.optim.Adam):  # torch < 2.4 on a CPU
        def __init__(self, params, fused=None, **options):
            if fused:
                raise RuntimeError("`fused=True` requires all the params to be floating point Tensors of supported devices: ['cuda']")
            super().__init__(params, **options)

    fallback, a = trajectory(lambda ps: fused_adam(OldAdam, ps, lr=0.01))
    default, b = trajectory(lambda ps: torch.optim.Adam(ps, lr=0.01))
    assert not fallback.defaults["fused"]
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_the_trainer_steps_with_the_fused_kernel(tiny_sentiment, tmp_path):
    nlptoolkit.train(tiny_sentiment.recipe, overrides={"train.max_steps": 2}, output_dir=tmp_path / "run", quiet=True)
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["optimizer"]["param_groups"][0]["fused"] is True
