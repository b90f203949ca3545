"""The shared RNN decoder: writes a sequence one token at a time, reading a memory.

A decoder is the encoder's mirror. It starts from a state made from what was
read (the *bridge*), takes the previous token, updates a unidirectional RNN
(an :class:`RNNEncoder`, run with ``step`` or, under teacher forcing, over
the whole target at once), optionally *attends* over the encoder's outputs,
and scores the next token. Luong et al. (2015) lay the step out as::

    h_t     = RNN([embed(y_{t-1}); feed_{t-1}], h_{t-1})     feed only with input_feed
    a_t     = softmax(score(h_t, memory))                    padding masked out
    c_t     = sum_s a_t[s] * memory[s]
    feed_t  = tanh(W_c [c_t; h_t])                           the "attentional vector"
    p_t     = softmax(W_out feed_t)

``attention`` chooses ``score``: ``dot`` (h . m), ``general`` (h W m) and
``additive`` (Bahdanau et al. 2015: v . tanh(W h + U m)), all placed after the
RNN as in Luong's framework (OpenNMT-py does the same). ``none`` is the plain
seq2seq of Sutskever et al.: the final encoder state is all the decoder gets,
and ``feed_t = h_t``.

The decoder honours the search contract of :mod:`nlptoolkit.search` through
``init_state``, ``step`` and ``reorder``; a model adds ``encode`` (see that
module). :meth:`RNNDecoder.frozen` swaps the RNN for a :class:`Stepper` while
decoding; it computes the same numbers, faster.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Literal, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from nlptoolkit.encoder import RNNEncoder, State
from nlptoolkit.stepper import Stepper

AttentionKind = Literal["none", "dot", "general", "additive"]


@dataclass
class Memory:
    """What the decoder reads, per example (first dimension: batch).

    state:   the encoder's final state in ``RNNEncoder`` layout ((L*D, B, H),
             a pair for an LSTM), or None to start from zeros; the bridge maps it.
    outputs: (B, S, M) what attention reads (None without attention).
    mask:    (B, S) True at real (unpadded) positions of ``outputs``.
    keys:    ``outputs`` already projected for the score (general, additive),
             computed once per batch rather than once per step.
    first_input: (B, E) a vector the decoder reads at its first step in place
             of ``<bos>``'s embedding (a captioning model's projected image
             features), or None.
    """

    state: Optional[State] = None
    outputs: Optional[Tensor] = None
    mask: Optional[Tensor] = None
    keys: Optional[Tensor] = None
    first_input: Optional[Tensor] = None

    def select(self, order: Tensor) -> "Memory":
        """The memory of examples ``order`` (a LongTensor of rows), e.g. each repeated beam-size times."""
        state = self.state
        if state is not None:
            state = tuple(s.index_select(1, order) for s in state) if isinstance(state, tuple) else state.index_select(1, order)
        pick = lambda t: None if t is None else t.index_select(0, order)  # noqa: E731
        return Memory(state, pick(self.outputs), pick(self.mask), pick(self.keys), pick(self.first_input))


@dataclass
class DecoderState:
    """The decoder's state between steps: the RNN's state and the last attentional vector."""

    rnn: State
    feed: Tensor  # (B, H): feed_t above (zeros before the first step)
    pending: Optional[Tensor] = None  # (B, E): read at the next step instead of the token's embedding (Memory.first_input)

    def select(self, order: Tensor) -> "DecoderState":
        rnn = tuple(s.index_select(1, order) for s in self.rnn) if isinstance(self.rnn, tuple) else self.rnn.index_select(1, order)
        pending = self.pending.index_select(0, order) if self.pending is not None else None
        return DecoderState(rnn, self.feed.index_select(0, order), pending)


class Attention(nn.Module):
    """Scores of a query against every memory position, masked softmax, weighted sum."""

    def __init__(self, kind: AttentionKind, query_size: int, memory_size: int) -> None:
        super().__init__()
        if kind == "dot" and query_size != memory_size:
            raise ValueError(
                f"attention 'dot' needs the decoder's hidden size ({query_size}) to equal the memory size ({memory_size}); "
                "use 'general' or 'additive', or make the sizes equal"
            )
        self.kind = kind
        if kind == "general":
            self.key_proj = nn.Linear(memory_size, query_size, bias=False)
        elif kind == "additive":
            self.key_proj = nn.Linear(memory_size, query_size, bias=False)
            self.query_proj = nn.Linear(query_size, query_size)
            self.v = nn.Linear(query_size, 1, bias=False)

    def keys(self, outputs: Tensor) -> Tensor:
        """The memory as the score reads it (projected once per batch)."""
        return outputs if self.kind == "dot" else self.key_proj(outputs)

    def forward(self, query: Tensor, memory: Memory) -> Tuple[Tensor, Tensor]:
        """query (B, T, H) -> context (B, T, M) and weights (B, T, S), zero at padding."""
        keys = memory.keys if memory.keys is not None else self.keys(memory.outputs)
        if self.kind == "additive":
            # (B, T, 1, H) + (B, 1, S, H): every query against every position
            scores = self.v(torch.tanh(self.query_proj(query).unsqueeze(2) + keys.unsqueeze(1))).squeeze(-1)
        else:
            scores = torch.bmm(query, keys.transpose(1, 2))
        if memory.mask is not None:
            scores = scores.masked_fill(~memory.mask.unsqueeze(1), float("-inf"))
        weights = scores.softmax(-1)
        return torch.bmm(weights, memory.outputs), weights


class Bridge(nn.Module):
    """The encoder's final state -> the decoder's initial state.

    Per layer, the directions are joined ((B, D*H_enc)); decoder layer i reads
    encoder layer ``i + L_enc - L_dec`` (the top layers), or the top encoder
    layer when the decoder has more layers. Where sizes or directions differ a
    learned ``tanh(W s + b)`` maps it (one for h, one for an LSTM's c);
    otherwise it is copied (``project=True`` maps it anyway: a captioning
    model's features, given as a one-layer "encoder state", always are).
    A cell state the encoder lacks (GRU, RNN) starts at zero.
    """

    def __init__(self, enc_cell: str, enc_hidden: int, enc_layers: int, enc_directions: int,
                 dec_cell: str, dec_hidden: int, dec_layers: int, project: Optional[bool] = None) -> None:
        super().__init__()
        self.enc_cell, self.enc_layers, self.enc_directions = enc_cell, enc_layers, enc_directions
        self.dec_cell, self.dec_hidden, self.dec_layers = dec_cell, dec_hidden, dec_layers
        size = enc_hidden * enc_directions
        self.project = (size != dec_hidden or enc_directions != 1) if project is None else project
        if self.project:
            self.h = nn.Linear(size, dec_hidden)
            self.c = nn.Linear(size, dec_hidden) if dec_cell == "lstm" and enc_cell == "lstm" else None

    def forward(self, state: State) -> State:
        h, c = state if isinstance(state, tuple) else (state, None)
        h, c = self._layers(h), (self._layers(c) if c is not None else None)
        if self.project:
            h = torch.tanh(self.h(h))
            c = torch.tanh(self.c(c)) if self.c is not None and c is not None else None
        if self.dec_cell != "lstm":
            return h.contiguous()
        return h.contiguous(), (c.contiguous() if c is not None and self.dec_cell == self.enc_cell else torch.zeros_like(h))

    def _layers(self, s: Tensor) -> Tensor:
        """(L_enc*D, B, H) -> (L_dec, B, D*H): directions joined, the layers the decoder reads."""
        L, D = self.enc_layers, self.enc_directions
        s = s.view(L, D, *s.shape[1:]).permute(0, 2, 1, 3).flatten(2)  # (L, B, D*H)
        pick = [min(L - 1, max(0, i + L - self.dec_layers)) for i in range(self.dec_layers)]
        return s[pick]


class RNNDecoder(nn.Module):
    """Embedding, a unidirectional RNN stack, optional attention, output layer.

    ``memory_size`` is the width of ``Memory.outputs`` (needed for attention).
    Token 0 is padding. See the module docstring for the equations.

    What each step reads: the previous token's embedding, or, with
    ``token_inputs=False``, a zero vector (the one-to-many drawing in which
    only the first step gets an input). A ``Memory.first_input`` replaces the
    first step's input (``<bos>``) with a vector of the embedding's size.
    """

    def __init__(
        self,
        vocab_size: int,
        cell: str = "lstm",
        hidden_size: int = 256,
        num_layers: int = 1,
        embedding_dim: int = 128,
        dropout: float = 0.0,
        attention: AttentionKind = "general",
        memory_size: Optional[int] = None,
        input_feed: bool = False,
        token_inputs: bool = True,
    ) -> None:
        super().__init__()
        if attention not in ("none", "dot", "general", "additive"):
            raise ValueError(f"attention must be none, dot, general or additive, got {attention!r}")
        if attention != "none" and memory_size is None:
            raise ValueError("attention needs memory_size, the width of the encoder outputs it reads")
        self.vocab_size, self.hidden_size, self.attention_kind, self.input_feed = vocab_size, hidden_size, attention, input_feed
        self.token_inputs = token_inputs
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=0)
        rnn_input = embedding_dim + (hidden_size if input_feed else 0)
        self.rnn = RNNEncoder(cell, hidden_size, num_layers, bidirectional=False, dropout=dropout, input_size=rnn_input)
        self.dropout = nn.Dropout(dropout)
        if attention != "none":
            self.attention: Optional[Attention] = Attention(attention, hidden_size, memory_size)
            self.combine = nn.Linear(memory_size + hidden_size, hidden_size, bias=False)
        else:
            self.attention = None
        self.out = nn.Linear(hidden_size, vocab_size)
        self._stepper: Optional[Stepper] = None

    # -- memory and state --------------------------------------------------------
    def memory(self, state: Optional[State], outputs: Optional[Tensor] = None, mask: Optional[Tensor] = None) -> Memory:
        """Wrap what an encoder produced, with the attention keys computed once."""
        keys = self.attention.keys(outputs) if self.attention is not None else None
        return Memory(state=state, outputs=outputs if self.attention is not None else None,
                      mask=mask if self.attention is not None else None, keys=keys)

    def init_state(self, memory: Memory, bridge: Optional[Bridge] = None, batch_size: Optional[int] = None) -> DecoderState:
        """The state before the first step: ``bridge(memory.state)``, or ``memory.state`` as is, or zeros."""
        if memory.state is not None:
            rnn = bridge(memory.state) if bridge is not None else memory.state
            h = rnn[0] if isinstance(rnn, tuple) else rnn
            B, device = h.shape[1], h.device
        else:
            B = batch_size if batch_size is not None else memory.outputs.shape[0]
            device = self.out.weight.device
            rnn = self.rnn.initial_state(B, device)
        feed = torch.zeros(B, self.hidden_size, device=device, dtype=self.out.weight.dtype)
        return DecoderState(rnn, feed, memory.first_input)

    @staticmethod
    def reorder(state: DecoderState, memory: Optional[Memory], order: Tensor) -> Tuple[DecoderState, Optional[Memory]]:
        """Keep rows ``order`` of the state (and of the memory, when given)."""
        return state.select(order), (memory.select(order) if memory is not None else None)

    # -- one step ----------------------------------------------------------------
    def step(self, prev_tokens: Tensor, state: DecoderState, memory: Memory) -> Tuple[Tensor, DecoderState, Optional[Tensor]]:
        """(B,) previous tokens -> (B, V) log-probabilities, the new state, (B, S) attention (or None)."""
        x = self.dropout(self._read(prev_tokens, state.pending))
        if self.input_feed:
            x = torch.cat([x, state.feed], dim=-1)
        if self._stepper is not None:
            h, rnn = self._stepper(x, state.rnn)
        else:
            h, rnn = self.rnn.step(x, state.rnn)
        feed, weights = self._attend(h.unsqueeze(1), memory)
        feed = feed.squeeze(1)
        log_probs = self.out(self.dropout(feed)).float().log_softmax(-1)
        return log_probs, DecoderState(rnn, feed), (weights.squeeze(1) if weights is not None else None)

    def _read(self, tokens: Tensor, first: Optional[Tensor]) -> Tensor:
        """(B,) or (B, T) token ids -> what the RNN reads for them: embeddings (or zeros), with the
        first position replaced by ``first`` ((B, E)) when given."""
        if self.token_inputs:
            x = self.embedding(tokens)
        else:
            x = self.embedding.weight.new_zeros(*tokens.shape, self.embedding.embedding_dim)
        if first is None:
            return x
        if tokens.dim() == 1:
            return first.to(x.dtype)
        return torch.cat([first.to(x.dtype).unsqueeze(1), x[:, 1:]], dim=1)

    def _attend(self, h: Tensor, memory: Memory) -> Tuple[Tensor, Optional[Tensor]]:
        """(B, T, H) RNN outputs -> (B, T, H) attentional vectors and (B, T, S) weights."""
        if self.attention is None:
            return h, None
        context, weights = self.attention(h, memory)
        return torch.tanh(self.combine(torch.cat([context, h], dim=-1))), weights

    # -- training: the whole target at once ------------------------------------------
    def forward(
        self, inputs: Tensor, state: DecoderState, memory: Memory, teacher_forcing: float = 1.0,
        generator: Optional[torch.Generator] = None,
    ) -> Tuple[Tensor, Optional[Tensor]]:
        """(B, T) inputs (``<bos>`` then the target shifted right) -> (B, T, V) logits and (B, T, S) attention.

        With full teacher forcing and no input feeding the RNN reads the whole
        target in one fused call and attention runs over all steps at once.
        Otherwise it goes step by step; with ``teacher_forcing < 1`` each
        input is, with probability ``1 - teacher_forcing``, the model's own
        previous prediction (its argmax) instead of the reference token.
        """
        if teacher_forcing >= 1.0 and not self.input_feed:
            out = self.rnn(self.dropout(self._read(inputs, state.pending)), state=state.rnn).outputs
            feed, weights = self._attend(out, memory)
            return self.out(self.dropout(feed)), weights
        logits, attentions = [], []
        prev = inputs[:, 0]
        for t in range(inputs.shape[1]):
            if t > 0:
                prev = inputs[:, t]
                if teacher_forcing < 1.0:
                    own = logits[-1].argmax(-1)
                    coin = torch.rand(prev.shape, device=prev.device, generator=generator) >= teacher_forcing
                    prev = torch.where(coin & (prev != 0), own, prev)  # padding stays padding
            x = self.dropout(self._read(prev, state.pending if t == 0 else None))
            if self.input_feed:
                x = torch.cat([x, state.feed], dim=-1)
            h, rnn = self.rnn.step(x, state.rnn)
            feed, weights = self._attend(h.unsqueeze(1), memory)
            feed = feed.squeeze(1)
            state = DecoderState(rnn, feed)
            logits.append(self.out(self.dropout(feed)))
            if weights is not None:
                attentions.append(weights.squeeze(1))
        return torch.stack(logits, 1), (torch.stack(attentions, 1) if attentions else None)

    # -- inference ------------------------------------------------------------------
    @contextlib.contextmanager
    def frozen(self) -> Iterator["RNNDecoder"]:
        """Within this block ``step`` runs the RNN through a :class:`Stepper` (weights arranged once).

        Eval mode and no gradients; the mode is restored afterwards. Build it
        per decoding run: the stepper snapshots the weights.
        """
        was_training = self.training
        self.eval()
        self._stepper = Stepper(self.rnn)
        try:
            with torch.no_grad():
                yield self
        finally:
            self._stepper = None
            self.train(was_training)



class EncoderDecoder(nn.Module):
    """An :class:`RNNEncoder`, a :class:`Bridge` and an :class:`RNNDecoder`: a seq2seq model.

    It honours the search contract (``encode``, ``init_state``, ``step``,
    ``reorder``), and ``forward`` gives teacher-forced logits for training.
    """

    def __init__(self, encoder: RNNEncoder, decoder: RNNDecoder, bridge: bool = True) -> None:
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.bridge = Bridge(encoder.cell, encoder.hidden_size, encoder.num_layers, encoder.num_directions,
                             decoder.rnn.cell, decoder.hidden_size, decoder.rnn.num_layers) if bridge else None

    def encode(self, src: Tensor, lengths: Optional[Tensor]) -> Memory:
        encoded = self.encoder(src, lengths)
        mask = None
        if lengths is not None:
            mask = torch.arange(src.shape[1], device=src.device).unsqueeze(0) < lengths.to(src.device).unsqueeze(1)
        state = encoded.state if self.bridge is not None else None
        return self.decoder.memory(state, encoded.outputs, mask)

    def init_state(self, memory: Memory) -> DecoderState:
        return self.decoder.init_state(memory, self.bridge)

    def step(self, prev_tokens: Tensor, state: DecoderState, memory: Memory) -> Tuple[Tensor, DecoderState, Optional[Tensor]]:
        return self.decoder.step(prev_tokens, state, memory)

    def reorder(self, state: DecoderState, memory: Optional[Memory], order: Tensor) -> Tuple[DecoderState, Optional[Memory]]:
        return self.decoder.reorder(state, memory, order)

    def forward(self, src: Tensor, lengths: Tensor, inputs: Tensor, teacher_forcing: float = 1.0) -> Tuple[Tensor, Optional[Tensor]]:
        """(B, S) source, (B,) lengths, (B, T) decoder inputs -> (B, T, V) logits, (B, T, S) attention."""
        memory = self.encode(src, lengths)
        return self.decoder(inputs, self.init_state(memory), memory, teacher_forcing)
