"""The Task API: what a plugin writes to add a new kind of model to nlptoolkit.

A task turns dataset rows into tensors, builds a model on the shared
:class:`~nlptoolkit.encoder.RNNEncoder`, and says how to compute the loss,
the metrics and predictions. The trainer, the CLI, checkpoints and run
folders are the core's job. ``plugins/sentiment.py`` is the worked example.

The life of a task in ``nlptk run``::

    task = TaskClass(recipe, run_dir)
    task.setup(splits["train"])                 # fit tokenizer, vocab, labels
    train = task.encode(splits["train"], "train")
    model = task.build_model()
    loss = task.training_step(model, batch)     # for batch in task.batches(train, ...)
    metrics = task.evaluate(model, validation)  # {"loss": ..., "accuracy": ...}
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Dict, Iterator, List, Optional, Sequence

import torch
from torch import Tensor, nn

from nlptoolkit.data.batching import BucketSampler
from nlptoolkit.errors import NlptkError


@dataclass
class NoOptions:
    """A task without options of its own."""


class Task:
    """Base class for task plugins; subclass it and decorate with ``@register_task``."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""  # one line, shown by `nlptk list`
    Options: ClassVar[type] = NoOptions  # dataclass describing the recipe's `task:` section
    shuffle_split: ClassVar[bool] = True  # carve validation at random (False: the last part)
    metrics: ClassVar[Sequence[str]] = ("loss",)  # what `evaluate` returns; early stopping picks one
    lower_is_better: ClassVar[frozenset] = frozenset({"loss", "perplexity", "bpc"})

    def __init__(self, recipe: Any, run_dir: Optional[Path] = None) -> None:
        self.recipe = recipe
        self.options = recipe.task_options
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.device = torch.device("cpu")
        self.sources: Dict[str, str] = {}  # split -> how to name it in errors (file and recipe key)

    def data_error(self, split: str, row: int, message: str) -> NlptkError:
        """An error that names the file (or split) and row of bad data."""
        return NlptkError(f"{self.sources.get(split, f'the {split} split')}, row {row + 1}: {message}")

    # -- data -----------------------------------------------------------------
    def setup(self, train: Any) -> None:
        """Fit what is learned from training data (tokenizer, vocabulary, labels)."""

    def state_dict(self) -> Dict[str, Any]:
        """Plain data (lists, strings, numbers) needed to rebuild the task later."""
        return {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict`, for evaluate/predict/resume."""

    def encode(self, dataset: Any, split: str) -> List[Any]:
        """Turn a split's rows into examples (for instance lists of ids)."""
        raise NotImplementedError

    def length(self, example: Any) -> int:
        """Sequence length, used to bucket similar lengths together."""
        return len(example)

    def collate(self, examples: Sequence[Any]) -> Dict[str, Tensor]:
        """Make one batch (a dict of tensors) from examples."""
        raise NotImplementedError

    def batches(self, examples: Sequence[Any], train: bool, epoch: int = 0, rank: int = 0, world_size: int = 1) -> "Batches":
        """Training or evaluation batches; length-bucketed unless the recipe says otherwise."""
        cfg = self.recipe.train
        sampler = BucketSampler(
            [self.length(e) for e in examples],
            cfg.batch_size,
            shuffle=train,
            bucket=cfg.bucket,
            seed=self.recipe.seed,
            num_replicas=world_size if train else 1,
            rank=rank if train else 0,
        )
        sampler.set_epoch(epoch)
        return Batches(sampler, examples, self.collate)

    # -- model ----------------------------------------------------------------
    def build_model(self) -> nn.Module:
        raise NotImplementedError

    def training_step(self, model: nn.Module, batch: Dict[str, Tensor]) -> Tensor:
        """Return the mean loss of one batch."""
        raise NotImplementedError

    def count_tokens(self, batch: Dict[str, Tensor]) -> int:
        """Real (unpadded) tokens in a batch, for throughput."""
        return int(batch["lengths"].sum()) if "lengths" in batch else 0

    @torch.no_grad()
    def evaluate(self, model: nn.Module, examples: Sequence[Any]) -> Dict[str, float]:
        """Metrics on a split; keys are what `nlptk evaluate --json` prints."""
        raise NotImplementedError

    # -- training-time state (truncated BPTT and the like) ---------------------
    def on_epoch_start(self, epoch: int) -> None:
        """Called before each training epoch."""

    def training_state(self) -> Dict[str, Any]:
        """State carried between steps (e.g. an LM's hidden state), saved for exact resume."""
        return {}

    def load_training_state(self, state: Dict[str, Any]) -> None:
        pass

    def after_evaluate(self, model: nn.Module, log: Any) -> None:
        """Called after each evaluation, e.g. to print a sample so a person sees the model learn."""

    # -- use ------------------------------------------------------------------
    def predict(self, model: nn.Module, texts: List[str]) -> List[str]:
        """One printable line per input, for `nlptk predict`."""
        raise NotImplementedError(f"task '{self.name}' does not support `nlptk predict`")

    def generate(self, model: nn.Module, prompt: str, max_tokens: int, temperature: float, top_k: Optional[int]) -> Iterator[str]:
        """Stream text pieces, for `nlptk generate`."""
        raise NotImplementedError(f"task '{self.name}' does not support `nlptk generate`")

    def to_device(self, batch: Dict[str, Any]) -> Dict[str, Any]:
        return {k: v.to(self.device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}


class Batches:
    """An epoch's batches: iterable, sized, and able to report its padding."""

    def __init__(self, sampler: BucketSampler, examples: Sequence[Any], collate: Any) -> None:
        self.sampler, self.examples, self.collate = sampler, examples, collate

    def __iter__(self) -> Iterator[Dict[str, Tensor]]:
        return self.from_position(0)

    def from_position(self, start: int) -> Iterator[Dict[str, Tensor]]:
        """The batches from number ``start`` on: how a resumed run skips what it already saw."""
        for indices in self.sampler.batches()[start:]:
            yield self.collate([self.examples[i] for i in indices])

    def __len__(self) -> int:
        return len(self.sampler)

    def padding_fraction(self) -> float:
        return self.sampler.padding_fraction()
