"""Character features for words: how a word-level model reads words it never saw.

A second :class:`~nlptoolkit.encoder.RNNEncoder` reads each word's characters,
and its final state (forward at the last character, backward at the first) is
a vector for the word that knows its spelling: capitals, suffixes such as
``-ing`` or ``-ly``, digits, ``@`` and ``#``. A word-level model joins it to
the word's embedding (Lample et al. 2016; Ma and Hovy 2016).

All the words of a batch go through the character encoder in one call:
:func:`char_batch` collects the distinct words of the batch, pads their
characters into one (U, C) tensor, and gives each position of the (B, T) word
batch the row of its word. The encoder runs once over the U distinct words
(packed-exact, so padding characters change nothing), and an index lookup puts
the vectors back in place. A frequent word is encoded once per batch, not once
per occurrence.
"""
from __future__ import annotations

from typing import Dict, Sequence, Tuple

import torch
from torch import Tensor, nn

from nlptoolkit.data.vocab import Vocabulary
from nlptoolkit.encoder import RNNEncoder


def char_batch(sentences: Sequence[Sequence[str]], vocab: Vocabulary, max_chars: int = 0) -> Tuple[Tensor, Tensor, Tensor]:
    """Characters of the distinct words of a batch of sentences.

    Returns ``chars`` (U, C) character ids, ``lengths`` (U,) and ``index``
    (B, T): for each word position the row of its word plus one, 0 at padding.
    ``max_chars`` > 0 keeps only the first and last ``max_chars // 2``
    characters of longer words (URLs), which is what tells words apart.
    """
    rows: Dict[str, int] = {}
    T = max((len(s) for s in sentences), default=0)
    index = torch.zeros(len(sentences), T, dtype=torch.long)
    for b, sentence in enumerate(sentences):
        ids = [rows.setdefault(word, len(rows)) + 1 for word in sentence]
        index[b, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    words = list(rows)
    if max_chars > 0:
        half = max_chars // 2
        words = [w if len(w) <= max_chars else w[:half] + w[-half:] for w in words]
    encoded = [vocab.encode(w) or [vocab.unk_id] for w in words]  # an empty string still gets a vector
    C = max((len(e) for e in encoded), default=1)
    chars = torch.zeros(len(encoded), C, dtype=torch.long)
    for u, e in enumerate(encoded):
        chars[u, : len(e)] = torch.tensor(e, dtype=torch.long)
    lengths = torch.tensor([len(e) for e in encoded], dtype=torch.long)
    return chars, lengths, index


class CharEncoder(nn.Module):
    """Characters of each word to one vector per word position (see the module docstring)."""

    def __init__(self, encoder: RNNEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    @property
    def output_size(self) -> int:
        return self.encoder.output_size

    def forward(self, chars: Tensor, lengths: Tensor, index: Tensor) -> Tensor:
        """(B, T, output_size) word vectors from ``char_batch``'s tensors; zeros at padding."""
        if chars.shape[0] == 0:
            return torch.zeros(*index.shape, self.output_size, device=index.device)
        final = self.encoder(chars, lengths).final  # (U, D): one packed call for every word
        table = torch.cat([final.new_zeros(1, final.shape[1]), final])
        return table[index]
