"""A vocabulary: the map between tokens (or labels) and the integer ids a model sees."""
from __future__ import annotations

from collections import Counter
from typing import Iterable, List, Optional, Sequence


class Vocabulary:
    """Tokens to ids. By default ``<pad>``=0, ``<unk>``=1, ``<bos>``=2, ``<eos>``=3 come first.

    Tokens are ordered by frequency, ties broken alphabetically, so the same
    data always gives the same ids. ``specials`` chooses which special
    tokens lead the list: a tag set may want only ``(PAD,)`` and a class
    list none at all (:meth:`labels`), so that id k is the k-th class and no
    output unit is wasted on a token the model must never predict. An id for
    a special that is not there is ``None``; without ``<unk>``, encoding an
    unknown token raises ``KeyError`` (the task turns it into an error that
    names the row).
    """

    PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
    SPECIALS = (PAD, UNK, BOS, EOS)

    def __init__(self, tokens: Sequence[str], specials: Sequence[str] = SPECIALS) -> None:
        specials = tuple(specials)
        if tuple(tokens[: len(specials)]) != specials:
            raise ValueError(f"a vocabulary starts with {specials}")
        self.specials = specials
        self.itos: List[str] = list(tokens)
        self.stoi = {t: i for i, t in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ValueError("a vocabulary lists each token once")
        found = {s: self.stoi[s] for s in specials}
        self.pad_id: Optional[int] = found.get(self.PAD)
        self.unk_id: Optional[int] = found.get(self.UNK)
        self.bos_id: Optional[int] = found.get(self.BOS)
        self.eos_id: Optional[int] = found.get(self.EOS)

    @classmethod
    def build(
        cls, sequences: Iterable[Iterable[str]], min_freq: int = 1, max_size: Optional[int] = None,
        specials: Sequence[str] = SPECIALS,
    ) -> "Vocabulary":
        """Count tokens; keep those seen ``min_freq`` times, at most ``max_size`` entries in all."""
        counts: Counter = Counter()
        for seq in sequences:
            counts.update(seq)
        for special in specials:
            counts.pop(special, None)
        ranked = sorted((t for t, c in counts.items() if c >= min_freq), key=lambda t: (-counts[t], t))
        if max_size is not None:
            ranked = ranked[: max(0, max_size - len(specials))]
        return cls(list(specials) + ranked, specials)

    @classmethod
    def labels(cls, values: Iterable[str]) -> "Vocabulary":
        """A class list: the distinct values sorted, no specials, ids 0..K-1."""
        return cls(sorted(set(values)), specials=())

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: str) -> bool:
        return token in self.stoi

    def encode(self, tokens: Iterable[str]) -> List[int]:
        stoi, unk = self.stoi, self.unk_id
        if unk is None:
            return [stoi[t] for t in tokens]
        get = stoi.get
        return [get(t, unk) for t in tokens]

    def decode(self, ids: Iterable[int]) -> List[str]:
        return [self.itos[i] for i in ids]
