"""The Task API: what a plugin writes to add a new kind of model to nlptoolkit.

A task turns dataset rows into tensors, builds a model on the shared
:class:`~nlptoolkit.encoder.RNNEncoder`, and says how to compute the loss,
the metrics and predictions. The trainer, the CLI, checkpoints and run
folders are the core's job. ``docs/plugins.md`` is the tutorial (it builds a
regression task from nothing), ``plugins/sentiment.py`` the closest built-in
example, and ``nlptk new-plugin NAME`` writes a working skeleton.

A plugin imports only what ``nlptoolkit`` exports (``from nlptoolkit import
Task, RNNEncoder, Vocabulary, ...``; the list is ``nlptoolkit.__all__``) and
never another plugin; ``tests/test_plugin_imports.py`` checks it.

The life of a task in ``nlptk run``::

    TaskClass.check_recipe(recipe)              # when the recipe loads: rules across keys
    task = TaskClass(recipe, run_dir)
    task.setup(splits["train"])                 # fit tokenizer, vocab, labels
    train = task.encode(splits["train"], "train")
    model = task.build_model()
    loss = task.training_step(model, batch)     # for batch in task.batches(train, ...)
    metrics = task.evaluate(model, validation)  # {"loss": ..., "accuracy": ...}
    results = task.predict(model, ["a text"])   # [{"input": "a text", "label": ...}]
    exportable = task.exportable(model)         # optional: what `nlptk export` traces and writes

Evaluation is written once, here. :meth:`Task.evaluate` puts the model in
eval mode under ``no_grad``, moves each batch to the device and asks the
plugin for a batch's *partial statistics*::

    evaluate_batch(model, batch) -> {"loss_sum": 3.2, "tokens": 41, "predictions": [...]}

and combines them over the split by one rule: **numbers add** (Python
numbers or 0-d tensors; tensors stay on the device until the end) and
**lists concatenate**, one item per example of the batch, put back in the
order of the examples given (batches are length-bucketed, so they come in a
different order; each batch carries ``batch["example_ids"]``, the positions
of its examples in the list given). The totals then become the metrics::

    compute_metrics(totals) -> {"loss": ..., "accuracy": ...}

:meth:`Task.collect` is that loop for any per-batch function, so
``predict`` batches and reorders the same way.

``predict`` returns one JSON-able dict per input (a label and its
probabilities, tags, decoded text with an n-best list and scores);
:meth:`Task.format_prediction` turns one into the line ``nlptk predict``
prints, and ``nlptk predict --json`` prints the dicts themselves.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
import json
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from nlptoolkit.data.batching import BucketSampler
from nlptoolkit.data.streaming import StreamedBatches, StreamedExamples
from nlptoolkit.errors import NlptkError

if TYPE_CHECKING:
    from nlptoolkit.export.graph import Exportable


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
    # The metrics that improve by going down (error rates, RMSE): early stopping and the
    # choice of best.pt minimise these and maximise the rest; a name ending in "loss" is
    # always minimised. A task with its own error metrics lists them all here.
    lower_is_better: ClassVar[frozenset] = frozenset({"loss", "perplexity", "bpc"})
    # What `nlptk predict` gives `predict`: "text" (strings) or "features" (fixed-size
    # vectors read by `--features FILE`; such a task sets ``self.feature_size``).
    input_kind: ClassVar[str] = "text"
    # A task that writes sequences takes the decoding settings `--beam` and `--nbest`
    # (``beam_size``, ``nbest``; its Options give the default ``beam_size``).
    decodes: ClassVar[bool] = False
    # A task that can read a streamed split (``data.streaming: true``, an IterableDataset)
    # without holding it in memory: its ``encode`` returns a ``StreamedExamples`` (or its
    # own lazy stream, with ``batches`` to match) for one. Others refuse the recipe key.
    streams: ClassVar[bool] = False

    @classmethod
    def check_recipe(cls, recipe: Any) -> None:
        """Raise :class:`NlptkError` for options that disagree with the rest of the recipe.

        Called when a recipe is loaded (so `nlptk validate` and `nlptk run`
        report it before any data is read), after ``recipe.task_options`` is
        built from ``Options``. Start the message with the dotted key, e.g.
        ``"task.tie_weights: needs encoder.embedding_dim == encoder.hidden_size"``:
        the loader turns that key into the file and line. Types and unknown keys
        are already checked by then; this is for rules across keys.
        """

    @classmethod
    def reported_metrics(cls, recipe: Any) -> Sequence[str]:
        """The metrics `evaluate` returns for this recipe, so `nlptk validate` can check
        ``train.early_stopping.metric`` before training; override when options change them."""
        return cls.metrics

    def __init__(self, recipe: Any, run_dir: Optional[Path] = None) -> None:
        self.recipe = recipe
        self.options = recipe.task_options
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.device = torch.device("cpu")
        self.sources: Dict[str, str] = {}  # split -> how to name it in errors (file and recipe key)
        self.decoding: Dict[str, int] = {}  # --beam / --nbest from the command line (set_decoding)

    def data_error(self, split: str, row: int, message: str) -> NlptkError:
        """An error that names the file (or split) and row of bad data."""
        return NlptkError(f"{self.sources.get(split, f'the {split} split')}, row {row + 1}: {message}")

    # -- data -----------------------------------------------------------------
    def setup(self, train: Any) -> None:
        """Fit what is learned from training data (tokenizer, vocabulary, labels, target statistics).

        ``train`` is a ``datasets.Dataset``; read a field with
        ``column(train, field, "train", "task.<option>")`` (a missing field becomes
        an error naming that recipe key). ``build_tokenizer(recipe.data.tokenizer,
        texts)`` builds the recipe's tokenizer (save it with ``.save(self.run_dir)``
        when ``run_dir`` is set; :meth:`load_state_dict` reads it back with
        ``load_tokenizer``). ``Vocabulary.build`` puts the specials ``<pad>``=0,
        ``<unk>``, ``<bos>``, ``<eos>`` first; ``Vocabulary.labels(values)`` is a
        class list with none, and ``specials=("<pad>",)`` a tag set with padding only.
        Not called when a run is loaded or resumed: :meth:`load_state_dict` is.
        """

    def state_dict(self) -> Dict[str, Any]:
        """Plain data (lists, strings, numbers) needed to rebuild the task later.

        It is saved in every checkpoint, and checkpoints load with
        ``torch.load(weights_only=True)``: no objects of your own classes.
        """
        return {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict`, for evaluate/predict/resume (instead of :meth:`setup`)."""

    def encode(self, dataset: Any, split: str) -> List[Any]:
        """Turn a split's rows into examples (for instance lists of ids and a target).

        Reject a bad row with ``raise self.data_error(split, row, "what is wrong; the fix")``,
        which names the file and row.
        """
        raise NotImplementedError

    def length(self, example: Any) -> int:
        """Sequence length, used to bucket similar lengths together."""
        return len(example)

    def collate(self, examples: Sequence[Any]) -> Dict[str, Tensor]:
        """Make one batch (a dict of tensors) from examples.

        The core adds ``example_ids`` (the examples' positions) to each batch
        made by :meth:`batches`; collate need not know about it.
        """
        raise NotImplementedError

    def batches(self, examples: Sequence[Any], train: bool, epoch: int = 0, rank: int = 0, world_size: int = 1) -> "Batches":
        """Training or evaluation batches; length-bucketed unless the recipe says otherwise.

        ``StreamedExamples`` (a streamed split) get ``StreamedBatches``: the same
        bucketing and seeded order, one window of batches at a time, and no ``len``.

        Override it only when examples are not independent sequences (a language
        model cuts one token stream into BPTT windows). What it returns must
        behave like :class:`Batches`: iterate batch dicts, ``len()`` (batches per
        epoch, where known), ``from_position(start)`` (the batches from number ``start`` on,
        for an exact resume; they must depend only on seed, epoch, rank and
        world_size) and ``padding_fraction()``; evaluation batches carry
        ``example_ids`` when the task returns per-example lists.
        """
        cfg = self.recipe.train
        if isinstance(examples, StreamedExamples):
            return StreamedBatches(  # type: ignore[return-value]
                examples, self.length, self.collate, cfg.batch_size, shuffle=train, bucket=cfg.bucket,
                seed=self.recipe.seed, epoch=epoch, rank=rank if train else 0, world_size=world_size if train else 1,
            )
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
        """The model, usually on ``RNNEncoder.from_config(self.recipe.encoder, vocab_size=...)``.

        Called after :meth:`setup` or :meth:`load_state_dict`, so sizes learned
        from the data (vocabulary, classes, feature size) are known.
        """
        raise NotImplementedError

    def training_step(self, model: nn.Module, batch: Dict[str, Tensor]) -> Tensor:
        """Return the mean loss of one batch (already on the device).

        It runs under ``torch.autocast`` in bfloat16 when the recipe's
        ``train.precision`` picks bf16: compute the loss from float32 values
        (``logits.float()``). With ``nlptk run --nproc N`` ``model`` is a
        DistributedDataParallel wrapper: call it; do not reach into its attributes.
        """
        raise NotImplementedError

    def count_tokens(self, batch: Dict[str, Tensor]) -> int:
        """Real (unpadded) tokens in a batch, for throughput."""
        return int(batch["lengths"].sum()) if "lengths" in batch else 0

    # -- evaluation -----------------------------------------------------------
    def evaluate(self, model: nn.Module, examples: Sequence[Any]) -> Dict[str, float]:
        """Metrics on a split; keys are what `nlptk evaluate --json` prints.

        Plugins write :meth:`evaluate_batch` and :meth:`compute_metrics`,
        not this loop (see the module docstring for how partial statistics
        combine).
        """
        self.on_evaluate_start()
        return self.compute_metrics(self.collect(model, examples, self.evaluate_batch))

    def evaluate_batch(self, model: nn.Module, batch: Dict[str, Any]) -> Dict[str, Any]:
        """Partial statistics of one evaluation batch: numbers (summed) and per-example lists.

        Sums, not means: ``{"loss_sum": ..., "count": ...}`` lets
        :meth:`compute_metrics` divide once for the whole split, which a mean of
        per-batch means gets wrong when batch sizes differ.
        """
        raise NotImplementedError(f"task '{self.name}' defines no evaluate_batch")

    def compute_metrics(self, totals: Dict[str, Any]) -> Dict[str, float]:
        """Metrics from the statistics of the whole split (lists in input order).

        Return every name in :attr:`metrics` (or :meth:`reported_metrics`), as floats.
        """
        raise NotImplementedError(f"task '{self.name}' defines no compute_metrics")

    def on_evaluate_start(self) -> None:
        """Called before each evaluation pass (reset state carried between evaluation batches)."""

    def collect(self, model: nn.Module, examples: Sequence[Any], fn: Callable[[nn.Module, Dict[str, Any]], Dict[str, Any]]) -> Dict[str, Any]:
        """Run ``fn(model, batch)`` over the evaluation batches of ``examples`` and combine the results.

        Eval mode (the model's mode is restored afterwards), no gradients,
        batches on the task's device. Numbers add; lists concatenate and come
        back in the order of ``examples``.
        """
        was_training = model.training
        model.eval()
        totals: Dict[str, Any] = {}
        ids: List[int] = []
        seen = 0
        try:
            with torch.no_grad():
                for batch in self.batches(examples, train=False):
                    batch_ids = batch.get("example_ids")
                    partial = fn(model, self.to_device(batch))
                    seen += 1
                    add_partial(totals, partial, batch_ids, self.name)
                    ids += batch_ids or []
        finally:
            model.train(was_training)
        if not seen:
            raise NlptkError(f"task '{self.name}': no examples to evaluate")
        return finish_totals(totals, ids)

    # -- training-time state (truncated BPTT and the like) ---------------------
    def on_epoch_start(self, epoch: int) -> None:
        """Called before each training epoch."""

    def training_state(self) -> Dict[str, Any]:
        """State carried between steps (e.g. an LM's hidden state), saved for exact resume."""
        return {}

    def load_training_state(self, state: Dict[str, Any]) -> None:
        pass

    def after_evaluate(self, model: nn.Module, log: Any) -> None:
        """Called after each evaluation, e.g. to print a sample so a person sees the model learn.

        ``log(line)`` writes a line to the training log (stderr, rank 0 only).
        """

    # -- use ------------------------------------------------------------------
    def predict(self, model: nn.Module, texts: List[str]) -> List[Dict[str, Any]]:
        """One JSON-able result per input text, in input order, for `nlptk predict`.

        Each result holds the ``input`` and what the model says about it,
        e.g. ``{"input": ..., "label": ..., "probabilities": {...}}``; `nlptk
        predict --json` and ``Run.predict`` give these dicts as they are. Encode
        the texts as examples without targets and run the model with
        :meth:`collect`, which batches them and returns lists in input order.
        With ``input_kind = "features"`` the inputs are lists of numbers instead.
        """
        raise NlptkError(f"task '{self.name}' does not support `nlptk predict`")

    def set_decoding(self, **options: Any) -> None:
        """Decoding settings from the command line (``beam_size``, ``nbest``), applied before evaluate/predict.

        Only the settings a user gave are passed; they are kept in
        ``self.decoding`` for the task's search options. A task that does not
        write sequences (``decodes`` False) refuses every setting.
        """
        if options and not self.decodes:
            flags = ", ".join("--" + k.replace("_size", "") for k in options)
            raise NlptkError(f"{flags}: task '{self.name}' does not decode sequences, so there is nothing to search; leave the option out")
        unknown = set(options) - {"beam_size", "nbest"}
        if unknown:
            raise NlptkError(f"task '{self.name}': unknown decoding setting {', '.join(sorted(unknown))}")
        beam = options.get("beam_size", getattr(self.options, "beam_size", 1))
        nbest = options.get("nbest")
        if nbest is not None and nbest > beam:
            raise NlptkError(f"--nbest {nbest}: at most the beam size ({beam}); add --beam {nbest}")
        self.decoding = dict(options)

    def format_prediction(self, result: Dict[str, Any]) -> str:
        """The line `nlptk predict` prints for one result (default: the result as JSON)."""
        return json.dumps(result, ensure_ascii=False)

    def generate(self, model: nn.Module, prompt: str, max_tokens: int, temperature: float, top_k: Optional[int]) -> Iterator[str]:
        """Stream text pieces, for `nlptk generate`."""
        raise NotImplementedError(f"task '{self.name}' does not support `nlptk generate`")

    def read_text(self, text: str) -> Tuple[List[str], List[int]]:
        """The tokens the model reads for ``text``, and their ids (for `nlptk inspect` and `gradients`).

        The default uses the task's ``tokenizer`` and ``vocab`` attributes, as
        the built-in tasks name them; a task that reads text differently overrides it.
        """
        tokenizer, vocab = getattr(self, "tokenizer", None), getattr(self, "vocab", None)
        if tokenizer is None or vocab is None:
            raise NlptkError(f"task '{self.name}' does not say how it reads text: give it a `read_text` method (see nlptoolkit.Task)")
        tokens = tokenizer.tokenize(text)
        return tokens, vocab.encode(tokens)

    # -- export ---------------------------------------------------------------
    def exportable(self, model: nn.Module) -> Optional["Exportable"]:
        """What `nlptk export` writes for this task, or None (the default): it cannot be exported.

        Return an :class:`nlptoolkit.Exportable`: one or more
        :class:`nlptoolkit.ExportGraph` (a module taking and returning
        tensors only, its input and output names, the sizes that vary, and
        a function making example inputs), the vocabularies and tokenizers
        a consumer needs to turn text into ids and ids into labels, and
        extra manifest fields. ``model`` is a CPU copy in eval mode; the
        graphs may wrap it. Feed the shared encoder padded ids and lengths
        (never packed sequences): traced, it still gives packed results.
        ``plugins/sentiment.py`` is the worked example; a sequence model
        exports its encoder and one decoder step (``plugins/seq2seq.py``).
        """
        return None

    def to_device(self, batch: Dict[str, Any]) -> Dict[str, Any]:
        """The batch with its tensors on the task's device (the core calls it before each step)."""
        return {k: v.to(self.device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}


class Batches:
    """An epoch's batches: iterable, sized, and able to report its padding."""

    def __init__(self, sampler: BucketSampler, examples: Sequence[Any], collate: Any) -> None:
        self.sampler, self.examples, self.collate = sampler, examples, collate

    def __iter__(self) -> Iterator[Dict[str, Tensor]]:
        return self.from_position(0)

    def from_position(self, start: int) -> Iterator[Dict[str, Any]]:
        """The batches from number ``start`` on: how a resumed run skips what it already saw.

        Each batch also holds ``example_ids``: the positions of its examples
        in ``examples`` (a list of ints), so results can be put back in order.
        """
        for indices in self.sampler.batches()[start:]:
            batch = self.collate([self.examples[i] for i in indices])
            batch["example_ids"] = list(indices)
            yield batch

    def __len__(self) -> int:
        return len(self.sampler)

    def padding_fraction(self) -> float:
        return self.sampler.padding_fraction()


def add_partial(totals: Dict[str, Any], partial: Dict[str, Any], ids: Optional[List[int]], task: str) -> None:
    """Fold one batch's statistics into ``totals``: numbers add, lists concatenate."""
    for key, value in partial.items():
        if isinstance(value, list):
            if ids is None:
                raise TypeError(f"task '{task}': '{key}' is a per-example list, but these batches carry no example_ids")
            if len(value) != len(ids):
                raise ValueError(f"task '{task}': '{key}' holds {len(value)} items for a batch of {len(ids)} examples; a list holds one item per example")
            totals.setdefault(key, []).extend(value)
        elif isinstance(value, (int, float, Tensor)):
            totals[key] = totals[key] + value if key in totals else value
        else:
            raise TypeError(f"task '{task}': statistic '{key}' is a {type(value).__name__}; use a number, a 0-d tensor or a per-example list")


def finish_totals(totals: Dict[str, Any], ids: List[int]) -> Dict[str, Any]:
    """Tensors become Python numbers; lists are put in the order of the examples given."""
    order = sorted(range(len(ids)), key=ids.__getitem__)
    done: Dict[str, Any] = {}
    for key, value in totals.items():
        if isinstance(value, list):
            done[key] = [value[i] for i in order]
        elif isinstance(value, Tensor):
            done[key] = value.item()
        else:
            done[key] = value
    return done
