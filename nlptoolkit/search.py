"""Greedy and beam search for any model that honours a small decoder contract.

The search never looks inside a model. It needs four methods, the contract
(after fairseq's ``SequenceGenerator`` and OpenNMT-py's ``DecodeStrategy``)::

    memory = model.encode(src, lengths)              what was read; rows are examples
    state  = model.init_state(memory)                the decoder's state before the first token
    log_probs, state, attention = model.step(prev_tokens, state, memory)
        prev_tokens (R,) ids -> log_probs (R, V) normalised log-probabilities of the next token,
        the new state, and attention (R, S) over the memory or None
    state, memory = model.reorder(state, memory, order)
        keep rows ``order`` (a LongTensor, rows may repeat); ``memory`` None: reorder the state only

``src`` is anything whose first dimension is the batch (token ids, feature
vectors); ``lengths`` may be None. Memory and state are the model's own
objects. A seq2seq model's memory is the encoder's outputs and final state
(see :class:`nlptoolkit.RNNDecoder`); a captioning model's can be one feature
vector per example. Beam search expands each example to ``beam_size`` rows
once (``reorder`` with the memory), then reorders only the state as beams are
pruned, since the beams of one example share its memory.

Options (:class:`SearchOptions`): ``max_length`` new tokens at most (the
last allowed step may only end the sequence), ``min_length`` tokens before
``<eos>`` is allowed, ``length_penalty`` alpha (a finished hypothesis scores
``log P / len ** alpha``, len counting ``<eos>``; 0 ranks by log-probability),
``no_repeat_ngram`` n (no n-gram twice in a hypothesis), ``banned`` ids never
produced (``<pad>``, ``<bos>``).

Beam search keeps finished hypotheses apart: at each step the best
``2 * beam_size`` extensions are ranked; those among the first
``beam_size`` that end with ``<eos>`` are finished (a hypothesis ending
there is as good as any live beam), the best ``beam_size`` that do not
end continue. An example is done when it has ``beam_size`` finished
hypotheses; the live beams left at ``max_length`` are ended there. With
``beam_size`` 1 this is greedy search, token for token (a test checks it).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import Tensor

from nlptoolkit.config_schema import at_least
from nlptoolkit.errors import NlptkError

NEG_INF = float("-inf")


@dataclass
class SearchOptions:
    """How to decode; see the module docstring."""

    bos_id: int
    eos_id: int
    beam_size: int = 1
    nbest: int = 1
    max_length: int = 100
    min_length: int = 0
    length_penalty: float = 0.0
    no_repeat_ngram: int = 0
    banned: Sequence[int] = ()
    keep_attention: bool = False

    def __post_init__(self) -> None:
        if self.beam_size < 1 or self.nbest < 1 or self.nbest > self.beam_size:
            raise ValueError(f"need 1 <= nbest <= beam_size, got nbest {self.nbest}, beam_size {self.beam_size}")
        if self.max_length < 1 or not 0 <= self.min_length < self.max_length:
            raise ValueError(f"need 0 <= min_length < max_length and max_length >= 1, got {self.min_length}, {self.max_length}")


@dataclass
class DecodingOptions:
    """The decoding keys of a recipe's ``task:`` section, shared by every task that writes sequences.

    A task's ``Options`` dataclass inherits them (``class MyOptions(DecodingOptions)``),
    so seq2seq, captioning and a plugin's own decoder read, check and document
    them the same way; :meth:`search_options` turns them into the search's
    :class:`SearchOptions`, with what ``--beam``/``--nbest`` changed.
    """

    beam_size: int = at_least(1, 1)  # 1 is greedy search; `--beam` overrides at evaluate/predict
    nbest: int = at_least(1, 1)  # hypotheses returned per input (at most beam_size); `--nbest` overrides
    length_penalty: float = at_least(0.0, 0.0)  # alpha: a finished beam scores log P / length ** alpha
    min_length: int = at_least(0, 0)  # tokens before <eos> is allowed
    max_length: int = at_least(1, 200)  # tokens at most, <eos> included
    no_repeat_ngram: int = at_least(0, 0)  # n > 0: no n-gram twice in an output

    def __post_init__(self) -> None:
        if self.nbest > self.beam_size:
            raise NlptkError(f"task.nbest: at most task.beam_size ({self.beam_size}), got {self.nbest}; raise beam_size or lower nbest")
        if self.min_length >= self.max_length:
            raise NlptkError(f"task.min_length: must be below task.max_length ({self.max_length}), got {self.min_length}")

    def search_options(
        self, bos_id: int, eos_id: int, banned: Sequence[int] = (), overrides: Optional[Dict[str, int]] = None,
        max_length: Optional[int] = None,
    ) -> SearchOptions:
        """These settings as the search's options; ``overrides`` is ``Task.decoding`` (``--beam``, ``--nbest``),
        ``max_length`` a tighter cap for this batch (e.g. a multiple of its longest source)."""
        overrides = overrides or {}
        beam = overrides.get("beam_size", self.beam_size)
        nbest = min(overrides.get("nbest", self.nbest), beam)
        cap = self.max_length if max_length is None else max(self.min_length + 1, min(self.max_length, max_length))
        return SearchOptions(
            bos_id=bos_id, eos_id=eos_id, beam_size=beam, nbest=nbest, max_length=cap, min_length=self.min_length,
            length_penalty=self.length_penalty, no_repeat_ngram=self.no_repeat_ngram, banned=tuple(banned),
        )


@dataclass
class Hypothesis:
    """One output: ``tokens`` without ``<bos>``/``<eos>``; ``score`` = log_prob / len ** alpha."""

    tokens: List[int]
    score: float
    log_prob: float
    attention: Optional[Tensor] = field(default=None, repr=False)  # (len(tokens) + 1, S), the <eos> step last


def decode(model: Any, src: Tensor, lengths: Optional[Tensor], options: SearchOptions) -> List[List[Hypothesis]]:
    """Greedy search for beam size 1, beam search otherwise; ``options.nbest`` hypotheses per example, best first."""
    if options.beam_size == 1:
        return greedy_search(model, src, lengths, options)
    return beam_search(model, src, lengths, options)


def _constrain(log_probs: Tensor, history: Tensor, t: int, options: SearchOptions) -> Tensor:
    """Apply banned ids, min/max length and n-gram blocking to step ``t``'s (R, V) log-probabilities."""
    if options.banned:
        log_probs[:, list(options.banned)] = NEG_INF
    if t < options.min_length:
        log_probs[:, options.eos_id] = NEG_INF
    if t == options.max_length - 1:  # the last step may only end the sequence
        eos = log_probs[:, options.eos_id].clone()
        log_probs.fill_(NEG_INF)
        log_probs[:, options.eos_id] = eos
    n = options.no_repeat_ngram
    if n and history.shape[1] >= n:  # history: (R, t) generated tokens so far
        if n == 1:
            log_probs.scatter_(1, history, NEG_INF)
        else:
            grams = history.unfold(1, n, 1)  # (R, G, n): every n-gram so far
            seen = (grams[:, :, :-1] == history[:, None, -(n - 1):]).all(-1)  # its first n-1 match the current tail
            hits = torch.zeros_like(log_probs).scatter_add_(1, grams[:, :, -1], seen.to(log_probs.dtype))
            log_probs.masked_fill_(hits > 0, NEG_INF)
    return log_probs


def _penalised(log_prob: float, length: int, alpha: float) -> float:
    return log_prob / (length ** alpha) if alpha else log_prob


@torch.no_grad()
def greedy_search(model: Any, src: Tensor, lengths: Optional[Tensor], options: SearchOptions) -> List[List[Hypothesis]]:
    """The most likely next token at every step, for the whole batch at once.

    An example leaves the batch when it writes ``<eos>`` (its rows are dropped
    from the state and the memory), exactly as in :func:`beam_search`.
    """
    memory = model.encode(src, lengths)
    state = model.init_state(memory)
    B, device = src.shape[0], src.device
    alive = torch.arange(B, device=device)  # the example of each row
    prev = torch.full((B,), options.bos_id, dtype=torch.long, device=device)
    history = torch.zeros(B, 0, dtype=torch.long, device=device)  # the live rows' tokens so far
    written = torch.full((B, options.max_length), options.eos_id, dtype=torch.long, device=device)
    total = torch.zeros(B, device=device)
    length = torch.zeros(B, dtype=torch.long, device=device)
    attentions: Optional[Tensor] = None  # (B, max_length, S) when kept
    for t in range(options.max_length):
        log_probs, state, attention = model.step(prev, state, memory)
        log_probs = _constrain(log_probs.float(), history, t, options)
        best, token = log_probs.max(-1)
        total[alive] += best
        length[alive] = t + 1
        written[alive, t] = token
        if options.keep_attention and attention is not None:
            if attentions is None:
                attentions = attention.new_zeros(B, options.max_length, attention.shape[-1], dtype=torch.float)
            attentions[alive, t] = attention.float()
        going = token != options.eos_id
        if not bool(going.any()):
            break
        if not bool(going.all()):
            keep = going.nonzero().squeeze(1)
            alive, token, history = alive[keep], token[keep], history[keep]
            state, memory = model.reorder(state, memory, keep)
        history = torch.cat([history, token.unsqueeze(1)], 1)
        prev = token
    results = []
    for b in range(B):
        n = int(length[b])
        tokens = written[b, : n - 1].tolist()  # the last step may only end the sequence, so every row ends with <eos>
        attn = attentions[b, :n] if attentions is not None else None
        results.append([Hypothesis(tokens, _penalised(float(total[b]), n, options.length_penalty), float(total[b]), attn)])
    return results


@torch.no_grad()
def beam_search(model: Any, src: Tensor, lengths: Optional[Tensor], options: SearchOptions) -> List[List[Hypothesis]]:
    """Batched beam search: every example's ``beam_size`` beams advance together, one step per call.

    An example that has its ``beam_size`` finished hypotheses leaves the
    batch (its rows are dropped from the state and the memory), so a batch
    costs what its live examples cost, not what its longest one does.
    """
    k, B, device = options.beam_size, src.shape[0], src.device
    memory = model.encode(src, lengths)
    state = model.init_state(memory)
    state, memory = model.reorder(state, memory, torch.arange(B, device=device).repeat_interleave(k))
    alive = list(range(B))  # the example each block of k rows belongs to
    scores = torch.full((B, k), NEG_INF, device=device)
    scores[:, 0] = 0.0  # all beams start as the same empty hypothesis: keep one of them
    history = torch.zeros(B * k, 0, dtype=torch.long, device=device)
    attention_history: Optional[Tensor] = None
    prev = torch.full((B * k,), options.bos_id, dtype=torch.long, device=device)
    finished: List[List[Hypothesis]] = [[] for _ in range(B)]
    for t in range(options.max_length):
        log_probs, state, attention = model.step(prev, state, memory)
        log_probs = _constrain(log_probs.float(), history, t, options)
        A, V = len(alive), log_probs.shape[-1]
        if options.keep_attention and attention is not None:
            step_attention = attention.float().unsqueeze(1)
            attention_history = step_attention if attention_history is None else torch.cat([attention_history, step_attention], 1)
        candidates = (scores.view(-1, 1) + log_probs).view(A, k * V)
        top_scores, top_index = candidates.topk(min(2 * k, k * V), dim=1)
        top_beam, top_token = top_index // V, top_index % V
        top_row = (torch.arange(A, device=device) * k).unsqueeze(1) + top_beam  # (A, 2k) the row each candidate extends
        ends = (top_token == options.eos_id) & (top_scores > NEG_INF)

        # finished hypotheses: <eos> among the best k candidates
        if bool(ends[:, :k].any()):
            for a, j in ends[:, :k].nonzero().tolist():
                b = alive[a]
                if len(finished[b]) >= k:
                    continue
                row = int(top_row[a, j])
                log_prob = float(top_scores[a, j])
                attn = attention_history[row] if attention_history is not None else None
                finished[b].append(Hypothesis(history[row].tolist(), _penalised(log_prob, t + 1, options.length_penalty), log_prob, attn))
        keep = [a for a in range(A) if len(finished[alive[a]]) < k]
        if not keep or t == options.max_length - 1:
            break

        # the best k candidates that do not end continue as the beams, for the examples still searching
        live_scores, pick = top_scores.masked_fill(ends, NEG_INF).topk(k, dim=1)
        order, prev = top_row.gather(1, pick), top_token.gather(1, pick)
        leaving = len(keep) < A
        if leaving:
            kept = torch.tensor(keep, device=device)
            order, prev, live_scores = order[kept], prev[kept], live_scores[kept]
            alive = [alive[a] for a in keep]
        order, prev, scores = order.view(-1), prev.view(-1), live_scores
        history = torch.cat([history.index_select(0, order), prev.unsqueeze(1)], 1)
        if attention_history is not None:
            attention_history = attention_history.index_select(0, order)
        # an example's beams share its memory, so the memory follows the rows only when examples leave
        if leaving:
            state, memory = model.reorder(state, memory, order)
        else:
            state, _ = model.reorder(state, None, order)

    return [sorted(hyps, key=lambda h: -h.score)[: options.nbest] for hyps in finished]
