"""Every unit's value at every position: the per-layer states the fused kernel keeps to itself.

``nn.LSTM`` returns the top layer's outputs and the *last* state of each layer;
to look inside we need each layer's hidden state ``h`` (and an LSTM's cell
state ``c``) at every step. :func:`unroll` recomputes them one step at a time
with the encoder's own weights and the same cell equations
(:func:`~nlptoolkit.encoder.cell_update`), so the top layer's ``h`` equals the
encoder's outputs (a test checks this). The steps stay in the autograd graph
unless the caller turns gradients off: :mod:`nlptoolkit.gradients` uses them to
measure how far back a gradient reaches.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from nlptoolkit.encoder import RNNEncoder, cell_update
from nlptoolkit.errors import NlptkError


@dataclass
class Unrolled:
    """States of every layer at every step.

    ``h[k][t]`` is layer k's (0-based) hidden state after step t, shape (B, D*H)
    with the forward direction first; ``c`` likewise for an LSTM (empty lists
    otherwise). Each entry is its own tensor, so a caller may ``retain_grad()`` it.
    """

    h: List[List[Tensor]]
    c: List[List[Tensor]]

    def stacked(self, state: str, layer: int) -> Tensor:
        """(B, T, D*H): one layer's ``h`` or ``c`` at every step."""
        steps = (self.h if state == "h" else self.c)[layer]
        return torch.stack(steps, dim=1)


def find_encoder(model: nn.Module) -> RNNEncoder:
    """The shared encoder inside any task's model (the first one, if a model has several)."""
    for module in model.modules():
        if isinstance(module, RNNEncoder):
            return module
    raise NlptkError(
        f"the model ({type(model).__name__}) has no nlptoolkit.RNNEncoder inside; "
        "inspect and gradients work on models built on the shared encoder"
    )


def unroll(encoder: RNNEncoder, inputs: Tensor) -> Unrolled:
    """Run ``encoder`` over a batch one step at a time, keeping every layer's states.

    inputs: (B, T) token ids or (B, T, F) vectors, all of length T (no padding).
    Dropout follows the encoder's mode; call ``encoder.eval()`` to look at a
    trained model as it predicts.
    """
    x = encoder.embedding(inputs) if encoder.embedding is not None else inputs
    B, T = x.shape[:2]
    lstm = encoder.cell == "lstm"
    hs: List[List[Tensor]] = []
    cs: List[List[Tensor]] = []
    steps = list(x.unbind(1))  # T tensors (B, F): the current layer's inputs
    for k, directions in enumerate(encoder.layers):
        steps = [encoder.dropout(s) for s in steps]
        outs: List[List[Tensor]] = []
        cells: List[List[Tensor]] = []
        for d, rnn in enumerate(directions):
            order = range(T - 1, -1, -1) if d == 1 else range(T)
            w_ih, w_hh = encoder.input_weight(k, d), rnn.weight_hh_l0
            h = x.new_zeros(B, encoder.hidden_size)
            c: Optional[Tensor] = x.new_zeros(B, encoder.hidden_size) if lstm else None
            h_at: List[Optional[Tensor]] = [None] * T
            c_at: List[Optional[Tensor]] = [None] * T
            for t in order:
                from_input = F.linear(steps[t], w_ih, rnn.bias_ih_l0)
                from_state = F.linear(h, w_hh, rnn.bias_hh_l0)
                h, c = cell_update(encoder.cell, from_input, from_state, h, c)
                h_at[t], c_at[t] = h, c
            outs.append(h_at)  # type: ignore[arg-type]
            if lstm:
                cells.append(c_at)  # type: ignore[arg-type]
        join = (lambda parts: torch.cat(parts, dim=-1)) if len(outs) > 1 else (lambda parts: parts[0])
        steps = [join([o[t] for o in outs]) for t in range(T)]
        hs.append(steps)
        cs.append([join([c_[t] for c_ in cells]) for t in range(T)] if lstm else [])
    return Unrolled(hs, cs)


def trace(encoder: RNNEncoder, ids: List[int]) -> Dict[Tuple[int, str], Tensor]:
    """One text's states for inspection: ``(layer, state) -> (T, D*H)`` float tensor on the CPU.

    Layers are numbered from 1 (the bottom one); ``state`` is ``"h"`` or, for an
    LSTM, ``"c"``. Evaluated without dropout and without gradients.
    """
    was_training = encoder.training
    encoder.eval()
    try:
        device = next(encoder.parameters()).device
        with torch.no_grad():
            run = unroll(encoder, torch.tensor([ids], device=device))
    finally:
        encoder.train(was_training)
    out: Dict[Tuple[int, str], Tensor] = {}
    for k in range(encoder.num_layers):
        out[(k + 1, "h")] = run.stacked("h", k)[0].float().cpu()
        if encoder.cell == "lstm":
            out[(k + 1, "c")] = run.stacked("c", k)[0].float().cpu()
    return out
