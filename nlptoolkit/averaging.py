"""An exponential moving average (EMA) of the weights, evaluated and saved in place of the last step's.

SGD-style training ends at a point that wobbles around a good region; the
average of the recent weights sits nearer its middle and usually scores better
on held-out data, at no cost in training (Polyak & Juditsky 1992; the same
idea as averaging the last checkpoints in NMT). With ``train.ema_decay: d`` the
average starts as a copy of the weights after the first optimizer step, and
after each later step t = 1, 2, ... becomes

    average <- d_t * average + (1 - d_t) * weights,   d_t = min(d, (1 + t) / (10 + t))

The warm-up in d_t (as in TensorFlow's ``ExponentialMovingAverage(num_updates=...)``)
stops the first, nearly random weights from lingering in a short run. Evaluation, ``best.pt`` and ``nlptk predict``
use the average; the optimizer keeps training the weights themselves.

The averaging is torch's own ``AveragedModel``; this module only chooses the
update rule.
"""
from __future__ import annotations

from typing import Any, Callable, List

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel


def ema_update(decay: float) -> Callable[[List[Tensor], List[Tensor], Any], None]:
    """The ``multi_avg_fn`` for ``AveragedModel``: one EMA step with the warmed-up decay d_t."""

    @torch.no_grad()
    def update(averaged: List[Tensor], current: List[Tensor], num_averaged: Any) -> None:
        t = int(num_averaged)
        d = min(decay, (1 + t) / (10 + t))
        torch._foreach_lerp_(averaged, current, 1.0 - d)

    return update


def weight_average(model: nn.Module, decay: float) -> AveragedModel:
    """A copy of ``model`` that follows its weights as an EMA (``.update_parameters(model)`` after each step)."""
    average = AveragedModel(model, multi_avg_fn=ema_update(decay), use_buffers=True)
    for p in average.parameters():
        p.requires_grad_(False)
    return average.eval()
