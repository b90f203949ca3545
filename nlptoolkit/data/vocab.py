"""A vocabulary: the map between tokens and the integer ids a model sees."""
from __future__ import annotations

from collections import Counter
from typing import Iterable, List, Optional, Sequence


class Vocabulary:
    """Tokens to ids, with ``<pad>``=0, ``<unk>``=1, ``<bos>``=2, ``<eos>``=3.

    Tokens are ordered by frequency, ties broken alphabetically, so the same
    data always gives the same ids.
    """

    PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
    SPECIALS = (PAD, UNK, BOS, EOS)
    pad_id, unk_id, bos_id, eos_id = 0, 1, 2, 3

    def __init__(self, tokens: Sequence[str]) -> None:
        if tuple(tokens[: len(self.SPECIALS)]) != self.SPECIALS:
            raise ValueError(f"a vocabulary starts with {self.SPECIALS}")
        self.itos: List[str] = list(tokens)
        self.stoi = {t: i for i, t in enumerate(self.itos)}

    @classmethod
    def build(cls, sequences: Iterable[Iterable[str]], min_freq: int = 1, max_size: Optional[int] = None) -> "Vocabulary":
        counts: Counter = Counter()
        for seq in sequences:
            counts.update(seq)
        for special in cls.SPECIALS:
            counts.pop(special, None)
        ranked = sorted((t for t, c in counts.items() if c >= min_freq), key=lambda t: (-counts[t], t))
        if max_size is not None:
            ranked = ranked[: max(0, max_size - len(cls.SPECIALS))]
        return cls(list(cls.SPECIALS) + ranked)

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: str) -> bool:
        return token in self.stoi

    def encode(self, tokens: Iterable[str]) -> List[int]:
        get, unk = self.stoi.get, self.unk_id
        return [get(t, unk) for t in tokens]

    def decode(self, ids: Iterable[int]) -> List[str]:
        return [self.itos[i] for i in ids]
