"""A linear-chain conditional random field: an output layer for tagging.

A softmax tagger picks each position's tag on its own, so it can print
``O I-person`` (an inside tag with nothing to be inside). A CRF scores whole
tag sequences instead: the score of tags ``y`` for emissions ``E`` (the
encoder's per-position tag scores) is

    start[y_1] + sum_t E[t, y_t] + sum_t trans[y_{t-1}, y_t] + end[y_T]

and training maximises ``score(y) - log Z``, where ``log Z`` sums
``exp(score)`` over every tag sequence. The forward algorithm computes
``log Z`` in O(T K^2) instead of enumerating K^T sequences; Viterbi finds the
best sequence the same way with max in place of logsumexp. Both run over the
whole padded batch at once, one time step at a time; a sequence that has
ended keeps its values through the padding (``torch.where`` on the mask).

Plain PyTorch (the pytorch-crf package has been unmaintained since 2020).
Everything runs in float32, also under bf16 autocast: a logsumexp over long
sentences loses too much in bfloat16.
"""
from __future__ import annotations

from typing import List

import torch
from torch import Tensor, nn


def _mask(lengths: Tensor, max_len: int) -> Tensor:
    return torch.arange(max_len, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)


class CRF(nn.Module):
    """Transition scores between ``num_tags`` tags, plus start and end scores.

    ``emissions`` are (B, T, K) scores from the model, ``lengths`` the (B,)
    true lengths (each at least 1); positions past a sequence's length are
    ignored whatever they hold.
    """

    def __init__(self, num_tags: int) -> None:
        super().__init__()
        self.num_tags = num_tags
        self.transitions = nn.Parameter(torch.empty(num_tags, num_tags))  # [from, to]
        self.start = nn.Parameter(torch.empty(num_tags))
        self.end = nn.Parameter(torch.empty(num_tags))
        for p in (self.transitions, self.start, self.end):
            nn.init.uniform_(p, -0.1, 0.1)

    def score(self, emissions: Tensor, tags: Tensor, lengths: Tensor) -> Tensor:
        """(B,) score of the given tag sequences; tags at padded positions are ignored."""
        emissions, lengths = emissions.float(), lengths.to(emissions.device)
        B, T, _ = emissions.shape
        mask = _mask(lengths, T)
        tags = tags.masked_fill(~mask, 0)  # any valid index; masked out below
        emitted = emissions.gather(2, tags.unsqueeze(-1)).squeeze(-1)  # (B, T)
        moved = self.transitions[tags[:, :-1], tags[:, 1:]]  # (B, T-1)
        last = tags.gather(1, (lengths - 1).unsqueeze(1)).squeeze(1)
        return (
            self.start[tags[:, 0]]
            + (emitted * mask).sum(1)
            + (moved * mask[:, 1:]).sum(1)
            + self.end[last]
        )

    def log_partition(self, emissions: Tensor, lengths: Tensor) -> Tensor:
        """(B,) log Z: the log of the summed exp(score) of every tag sequence (forward algorithm)."""
        emissions, lengths = emissions.float(), lengths.to(emissions.device)
        T = emissions.shape[1]
        mask = _mask(lengths, T)
        alpha = self.start + emissions[:, 0]  # (B, K): log-sum over paths ending in each tag
        for t in range(1, T):
            # (B, K_from, 1) + (K_from, K_to) -> sum out K_from
            step = torch.logsumexp(alpha.unsqueeze(2) + self.transitions, dim=1) + emissions[:, t]
            alpha = torch.where(mask[:, t : t + 1], step, alpha)
        return torch.logsumexp(alpha + self.end, dim=1)

    def nll(self, emissions: Tensor, tags: Tensor, lengths: Tensor) -> Tensor:
        """(B,) negative log-likelihood of the gold tag sequences: the training loss."""
        with torch.autocast(emissions.device.type, enabled=False):
            return self.log_partition(emissions, lengths) - self.score(emissions, tags, lengths)

    @torch.no_grad()
    def decode(self, emissions: Tensor, lengths: Tensor) -> Tensor:
        """(B, T) best tag sequence of each input (Viterbi); zeros past each length."""
        with torch.autocast(emissions.device.type, enabled=False):
            emissions, lengths = emissions.float(), lengths.to(emissions.device)
            B, T, K = emissions.shape
            mask = _mask(lengths, T)
            best = self.start + emissions[:, 0]  # (B, K): best score of a path ending in each tag
            pointers = []  # pointers[t-1][b, k]: best previous tag for tag k at step t
            for t in range(1, T):
                scores, previous = (best.unsqueeze(2) + self.transitions).max(dim=1)
                best = torch.where(mask[:, t : t + 1], scores + emissions[:, t], best)
                pointers.append(previous)
            current = (best + self.end).argmax(dim=1)  # (B,) the last real tag
            path = torch.zeros(B, T, dtype=torch.long, device=emissions.device)
            path.scatter_(1, (lengths - 1).unsqueeze(1), current.unsqueeze(1))
            for t in range(T - 1, 0, -1):
                active = t < lengths  # position t is real, so t-1 is too
                previous = pointers[t - 1].gather(1, current.unsqueeze(1)).squeeze(1)
                current = torch.where(active, previous, current)
                path[:, t - 1] = torch.where(active, current, path[:, t - 1])
            return path

    def decode_lists(self, emissions: Tensor, lengths: Tensor) -> List[List[int]]:
        """The Viterbi paths as lists, each cut to its own length."""
        path = self.decode(emissions, lengths).tolist()
        return [p[:n] for p, n in zip(path, lengths.tolist())]
