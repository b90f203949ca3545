"""Streamed data (``data.streaming: true``): corpora read as training asks for rows.

A streamed split is a ``datasets.IterableDataset``. Nothing here turns it into a
list: a task's examples are made row by row as they are iterated
(:class:`StreamedExamples`), and batches come from a window of
``chunk_batches`` batches at a time (:class:`StreamedBatches`): each window is
ordered by :class:`BucketSampler` (shuffled, seeded by seed, epoch and window;
sorted by length; cut into batches, which are shuffled again), as it orders a
whole in-memory epoch. So memory holds one window, whatever the corpus size,
and the order depends only on (seed, epoch): a resumed run reads the stream
again and skips the batches it already trained on.

What a model learns from the data before training (tokenizer, vocabulary,
labels) is fitted on the first ``data.vocab_sample`` training rows
(:func:`fit_sample`).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from nlptoolkit.data.batching import BucketSampler
from nlptoolkit.errors import NlptkError


class StreamedExamples:
    """A task's examples over a streamed split, made one row at a time as they are iterated.

    ``encode_row(index, row)`` returns the example of one row; ``keep``, if
    given, drops examples (``data.min_length`` / ``data.max_length``). It has
    no ``len``: a stream's length is known only at its end.
    """

    def __init__(self, rows: Any, encode_row: Callable[[int, Dict[str, Any]], Any], keep: Optional[Callable[[Any], bool]] = None) -> None:
        self.rows, self.encode_row, self.keep = rows, encode_row, keep

    def __iter__(self) -> Iterator[Any]:
        for index, row in enumerate(self.rows):
            example = self.encode_row(index, row)
            if self.keep is None or self.keep(example):
                yield example

    def filtered(self, keep: Callable[[Any], bool]) -> "StreamedExamples":
        """The same stream, keeping only the examples that pass ``keep`` as well."""
        before = self.keep
        return StreamedExamples(self.rows, self.encode_row, keep if before is None else (lambda e: before(e) and keep(e)))


class StreamedBatches:
    """Batches over :class:`StreamedExamples`, a window of ``chunk_batches`` batches at a time.

    Like :class:`~nlptoolkit.task.Batches` but without ``len``. Each batch holds
    ``example_ids``: the positions of its examples in the stream. With
    ``world_size > 1`` every process reads the whole stream and takes its
    share of each global batch, as :class:`BucketSampler` does.
    """

    streamed = True  # the trainer reads the padding fraction after the epoch, not before

    def __init__(
        self, examples: StreamedExamples, length: Callable[[Any], int], collate: Callable[[List[Any]], Dict[str, Any]],
        batch_size: int, shuffle: bool, bucket: bool = True, seed: int = 0, epoch: int = 0,
        rank: int = 0, world_size: int = 1, chunk_batches: int = 50,
    ) -> None:
        self.examples, self.length, self.collate = examples, length, collate
        self.batch_size, self.shuffle, self.bucket = batch_size, shuffle, bucket
        self.seed, self.epoch, self.rank, self.world_size = seed, epoch, rank, world_size
        self.chunk_batches, self.chunk = chunk_batches, batch_size * chunk_batches
        self.real = self.padded = 0

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        return self.from_position(0)

    def from_position(self, start: int) -> Iterator[Dict[str, Any]]:
        """The batches from number ``start`` on; earlier ones are read and skipped, not collated."""
        number = 0
        for window, (offset, examples) in enumerate(windows(self.examples, self.chunk)):
            lengths = [self.length(e) for e in examples]
            for indices in self._window_batches(window, lengths):
                sizes = [lengths[i] for i in indices]  # skipped batches count too: a resumed epoch reports the same padding
                self.real, self.padded = self.real + sum(sizes), self.padded + max(sizes) * len(sizes)
                if number >= start:
                    batch = self.collate([examples[i] for i in indices])
                    batch["example_ids"] = [offset + i for i in indices]
                    yield batch
                number += 1

    def _window_batches(self, window: int, lengths: List[int]) -> List[List[int]]:
        """One window's batches: BucketSampler's order over the window, its seed moved on per window."""
        sampler = BucketSampler(
            lengths, self.batch_size, shuffle=self.shuffle, bucket=self.bucket, seed=self.seed,
            chunk_batches=self.chunk_batches, num_replicas=self.world_size, rank=self.rank,
        )
        sampler.set_epoch(self.epoch * 1_000_033 + window)
        return sampler.batches()

    def padding_fraction(self) -> float:
        """Share of padded tokens in the epoch's batches so far (including any skipped on resume)."""
        return 1.0 - self.real / self.padded if self.padded else 0.0


def windows(examples: Any, size: int) -> Iterator[Tuple[int, List[Any]]]:
    """``(offset, next size examples)`` pairs: the stream cut into lists of ``size``."""
    window: List[Any] = []
    offset = 0
    for example in examples:
        window.append(example)
        if len(window) == size:
            yield offset, window
            offset, window = offset + size, []
    if window:
        yield offset, window


def fit_sample(train: Any, rows: int) -> Any:
    """The first ``rows`` rows of a streamed split as an in-memory ``Dataset``: what
    ``Task.setup`` fits the tokenizer, vocabulary and labels on."""
    import datasets

    taken = list(train.take(rows))
    if not taken:
        raise NlptkError("data.streaming: the streamed train split holds no rows; check the data source")
    features = train.features
    try:
        return datasets.Dataset.from_list(taken, features=features) if features is not None else datasets.Dataset.from_list(taken)
    except (TypeError, ValueError):  # rows that do not fit the declared features: let the task name the bad row
        return datasets.Dataset.from_list(taken)
