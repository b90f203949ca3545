"""Batching: pad sequences, and group similar lengths so there is little to pad."""
from __future__ import annotations

from typing import Iterator, List, Sequence, Tuple

import torch
from torch import Tensor


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int = 0) -> Tuple[Tensor, Tensor]:
    """Right-pad id lists into a (B, T) LongTensor; also return the (B,) lengths.

    The rows are padded as Python lists and become a tensor in one call: a
    copy into the tensor per row cost about three times as much for a batch
    of 26 sentences (it is paid per batch in training and per request batch
    when serving).
    """
    lengths = [len(s) for s in sequences]
    longest = max(lengths, default=0)
    rows = [list(s) + [pad_id] * (longest - n) for s, n in zip(sequences, lengths)]
    return torch.tensor(rows, dtype=torch.long).view(len(rows), longest), torch.tensor(lengths, dtype=torch.long)


class BucketSampler(torch.utils.data.Sampler):
    """Yields lists of indices: batches of similar length, in random order.

    Each epoch the examples are shuffled, cut into chunks of ``chunk_batches``
    batches, sorted by length within each chunk, batched, and the batches are
    shuffled again. Randomness is kept; padding nearly vanishes. With
    ``bucket=False`` it is a plain shuffled sampler (the lecture's recipe).
    The order depends only on (seed, epoch), so a resumed run can skip ahead.
    With ``num_replicas > 1`` (distributed training) ``batch_size`` is the
    global batch and each process takes its share of every batch.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        shuffle: bool = True,
        bucket: bool = True,
        seed: int = 0,
        chunk_batches: int = 50,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.bucket = bucket
        self.seed = seed
        self.chunk = batch_size * chunk_batches
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> List[List[int]]:
        n = len(self.lengths)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(n, generator=generator).tolist() if self.shuffle else list(range(n))
        if self.bucket:
            chunk = self.chunk if self.shuffle else max(n, 1)  # evaluation: one sort over everything
            order = [i for s in range(0, n, chunk) for i in sorted(order[s : s + chunk], key=self.lengths.__getitem__)]
        batches = [order[s : s + self.batch_size] for s in range(0, n, self.batch_size)]
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
        if self.num_replicas > 1:
            # Each process takes an equal share of every global batch, so N processes
            # with DDP's averaged gradients take the same steps as one process would.
            batches = [b[self.rank :: self.num_replicas] for b in batches if len(b) % self.num_replicas == 0]
        return batches

    def __iter__(self) -> Iterator[List[int]]:
        return iter(self.batches())

    def __len__(self) -> int:
        if self.num_replicas > 1:
            return len(self.batches())
        return -(-len(self.lengths) // self.batch_size)

    def padding_fraction(self) -> float:
        """Share of padded tokens in this epoch's batches."""
        real = padded = 0
        for batch in self.batches():
            sizes = [self.lengths[i] for i in batch]
            real += sum(sizes)
            padded += max(sizes) * len(sizes)
        return 1.0 - real / padded if padded else 0.0
