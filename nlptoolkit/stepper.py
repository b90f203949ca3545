"""One token at a time, fast: the encoder frozen for generation and decoding.

Generating text at batch 1 is a loop of single steps, and each step is a few
matrix-vector products. On a CPU their cost is reading the weights (12-14 MB
a step for a 2x512 LSTM), plus a fixed cost per PyTorch call that is not small
next to them. ``RNNEncoder.step`` pays both in full, because it must stay
differentiable while the weights change under training. At inference the
weights are fixed, so two things can be done once, before the loop:

1. **One product per layer.** ``W_ih x + W_hh h`` is ``[W_ih | W_hh] [x; h]``:
   the two weight matrices are joined side by side and the biases added, so
   an LSTM or RNN layer makes one call instead of two calls and an add. (A
   GRU keeps the two products: its reset gate multiplies the state's part
   alone.)
2. **A table for the first layer.** With token inputs, the first layer's
   input product depends only on the token id, so ``W_ih embedding(t) + b``
   is computed for every token once (a vocabulary-by-gates table) and a step
   reads one row of it instead of the whole ``W_ih``.

Each product is made the way that is fastest on this machine, chosen by a
short measurement the first time a shape is seen (``nlptoolkit/matvec.py``):
which library streams weights fastest at batch 1 differs from CPU to CPU.
Asked for, the weights can be stored in fp16 or int8 instead (2x and 4x fewer
bytes a step), which changes the outputs slightly; ``nlptk generate`` uses
that only after measuring the validation loss it costs. The
arithmetic is the encoder's (``cell_update``), in eval mode: no dropout, no
gradients. ``benchmarks/bench_generate.py`` measures it against
``RNNEncoder.step`` and one ``nn.LSTM`` call per token, and prints the
machine's CPU and bandwidth beside the speeds.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import Tensor
from torch.nn import functional as F

from nlptoolkit.encoder import RNNEncoder, State, step_layers
from nlptoolkit.matvec import prepare_stored

# The first layer's token table is built when it is at most this big: a
# 10,000-word vocabulary with 256 LSTM units needs 41 MB.
MAX_TABLE_BYTES = 64 * 2**20


class _FrozenLayer:
    """One layer's weights, each product prepared the fastest way here (see ``pick_product``)."""

    def __init__(self, cell: str, w_ih: Tensor, b_ih: Tensor, w_hh: Tensor, b_hh: Tensor, table: Optional[Tensor], weights: str) -> None:
        self.weights = weights
        self.table = table  # (vocab, gates): W_ih x + b_ih (+ b_hh when fused) for every token x
        self.fused = cell != "gru"
        self.ways: List[str] = []  # the way each product is made, for the curious and the benchmark
        if self.fused and table is None:
            self.both = self._prepare(torch.cat([w_ih, w_hh], dim=1))  # [W_ih | W_hh]
            self.bias = b_ih + b_hh
        else:  # the state's product alone (with a table, the input's is a lookup)
            self.from_state, self.b_hh = self._prepare(w_hh), b_hh
            if table is None:
                self.from_input, self.b_ih = self._prepare(w_ih), b_ih

    def _prepare(self, weight: Tensor):
        way, product = prepare_stored(weight, self.weights)
        self.ways.append(way)
        return product

    def gates(self, x: Tensor, h: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
        """(from_input, from_state) for ``cell_update``; from_state is None when fused into the first."""
        if self.fused:
            if self.table is not None:  # index_select: a row for each id, ~5x cheaper a call than table[x]
                return self.from_state(h, self.table.index_select(0, x)), None
            return self.both(torch.cat([x, h], dim=1), self.bias), None
        from_input = self.table.index_select(0, x) if self.table is not None else self.from_input(x, self.b_ih)
        return from_input, self.from_state(h, self.b_hh)


class Stepper:
    """An :class:`RNNEncoder` frozen for fast single steps.

    Build it once per generation or decoding run (``Stepper(encoder)``) and
    call it like ``encoder.step``: ``output, state = stepper(inputs, state)``.
    It snapshots the weights, so build a new one after the weights change.

    ``weights``: how the products' weights are stored, "fp32" (exact) or a
    smaller form from ``nlptoolkit.matvec.STORAGE`` ("fp16", "int8"), which
    streams faster but changes the outputs a little; the first layer's token
    table stays fp32. RuntimeError where the kernel is missing here.
    """

    def __init__(self, encoder: RNNEncoder, weights: str = "fp32") -> None:
        if encoder.num_directions != 1:
            raise ValueError("a stepper needs a unidirectional encoder; a backward direction reads the future")
        self.cell = encoder.cell
        self.embedding: Optional[Tensor] = None
        self.layers: List[_FrozenLayer] = []
        with torch.no_grad():
            for k, (rnn,) in enumerate(encoder.layers):
                w_ih, b_ih = encoder.input_weight(k).detach(), rnn.bias_ih_l0.detach()
                w_hh, b_hh = rnn.weight_hh_l0.detach(), rnn.bias_hh_l0.detach()
                table = None
                if k == 0 and encoder.embedding is not None:
                    vocab = encoder.embedding.weight
                    if vocab.shape[0] * w_ih.shape[0] * vocab.element_size() <= MAX_TABLE_BYTES:
                        table_bias = b_ih + b_hh if self.cell != "gru" else b_ih
                        table = F.linear(vocab.detach(), w_ih, table_bias)
                    else:
                        self.embedding = vocab.detach()
                self.layers.append(_FrozenLayer(self.cell, w_ih, b_ih, w_hh, b_hh, table, weights))
        self._initial_state = encoder.initial_state

    def __call__(self, inputs: Tensor, state: Optional[State] = None) -> Tuple[Tensor, State]:
        """inputs: (B,) token ids or (B, F) vectors. Returns the (B, H) output and the new state.

        The weights are detached, so no graph is built unless the inputs or
        state ask for gradients (a decorator's grad-mode switch costs time).
        """
        x = F.embedding(inputs, self.embedding) if self.embedding is not None else inputs
        if state is None:
            state = self._initial_state(inputs.shape[0], inputs.device)
        return step_layers(self.cell, len(self.layers), lambda k, x, h: self.layers[k].gates(x, h), x, state)
