"""Many-to-one: classify a whole text (sentiment polarity, topic, ...).

The encoder reads the text; its final state (forward at the last token,
backward at the first) summarises it; dropout and one linear layer map that
summary to class scores. This file is also the worked example of the Task API.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any, Dict, List, Literal, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nlptoolkit import (
    ExportGraph, Exportable, RNNEncoder, StreamedExamples, Task, Vocabulary, at_least, build_tokenizer, classification_metrics,
    column, example_tokens, is_streamed, load_tokenizer, pad_batch, register_task,
)

Example = Tuple[List[int], Optional[int], Optional[float]]  # (token ids, label id, score; None when predicting or not used)
_MISSING = object()  # a streamed row without the label field


@dataclass
class SentimentOptions:
    """The recipe's `task:` section for this task."""

    text_field: str = "text"  # the data field that holds the text
    label_field: str = "label"  # the data field that holds the class (any strings or integers)
    dropout: float = 0.5  # on the text summary, before the classifier
    pooling: Literal["final", "max", "mean"] = "final"  # how the encoder's outputs become one summary
    ensemble: int = at_least(1, 1)  # classifiers trained side by side from different initial weights; their probabilities are averaged
    score_field: Optional[str] = None  # a number per text that grades its label (a mean rating): a second output learns it too
    score_weight: float = at_least(0.0, 1.0)  # the weight of that second loss (a squared error on the standardised score)


class SentimentModel(nn.Module):
    """Encoder, a summary of the text, dropout, linear.

    The summary is the final state (``final``: forward at the last token,
    backward at the first) or a max / mean over the outputs at every real
    token. Max pooling lets any one phrase ("a gorgeous, witty movie") decide,
    and usually generalises better on short texts. With ``score_head`` a
    second linear layer reads the same summary and predicts a graded score
    (how positive, not only whether): a richer signal for the shared encoder
    during training; the classifier's output does not depend on it.
    """

    def __init__(self, encoder: RNNEncoder, num_labels: int, dropout: float, pooling: str = "final", score_head: bool = False) -> None:
        super().__init__()
        self.encoder = encoder
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.classify = nn.Linear(encoder.output_size, num_labels)
        self.score = nn.Linear(encoder.output_size, 1) if score_head else None

    def summarise(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        encoded = self.encoder(tokens, lengths)
        if self.pooling == "final":
            summary = encoded.final
        else:
            real = (torch.arange(tokens.shape[1], device=tokens.device) < lengths.to(tokens.device).unsqueeze(1)).unsqueeze(-1)
            if self.pooling == "max":
                # -inf added at padded steps, then amax: the values of masked_fill(...).max(dim=1), about
                # 9x faster on CPU for a batch of 16 sentences (max also builds an index tensor, and a
                # broadcast boolean mask is slow where a broadcast add is not); it matters when serving.
                padding = torch.zeros(real.shape, dtype=encoded.outputs.dtype, device=real.device).masked_fill_(~real, float("-inf"))
                summary = (encoded.outputs + padding).amax(dim=1)
            else:
                summary = encoded.outputs.sum(dim=1) / real.sum(dim=1)
        return self.dropout(summary)

    def forward(self, tokens: Tensor, lengths: Tensor, each: bool = False) -> Any:
        """Class scores; with ``each``, what training needs: ``[(class scores, predicted score or None)]``.

        Training asks through ``forward`` rather than another method, so that
        a DistributedDataParallel wrapper sees the call and syncs gradients.
        """
        summary = self.summarise(tokens, lengths)
        logits = self.classify(summary)
        if not each:
            return logits
        return [(logits, self.score(summary).squeeze(-1) if self.score is not None else None)]


class SentimentEnsemble(nn.Module):
    """Several classifiers, trained side by side on the same batches, voting with their probabilities.

    Each member starts from its own random weights and sees its own dropout,
    so their mistakes differ; the average of their probabilities is more
    often right than any one of them (the variance of a model trained on a
    few thousand sentences is large). The output is the log of that
    average: scores whose softmax is the averaged probability, so the
    ensemble is a drop-in classifier for evaluation, predict and export.
    """

    def __init__(self, members: List[SentimentModel]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, tokens: Tensor, lengths: Tensor, each: bool = False) -> Any:
        """The averaged probabilities' log; with ``each``, every member's training outputs, to be trained one by one."""
        if each:
            return [outputs for member in self.members for outputs in member(tokens, lengths, each=True)]
        log_probs = torch.stack([member(tokens, lengths).float().log_softmax(-1) for member in self.members])
        return log_probs.logsumexp(dim=0) - math.log(len(self.members))


@register_task("sentiment")
class SentimentTask(Task):
    """Text classification (many-to-one): a label for each text."""

    description = "Classify whole texts (many-to-one), e.g. sentence polarity; metrics accuracy and macro_f1."
    Options = SentimentOptions
    metrics = ("accuracy", "macro_f1", "loss")
    streams = True  # data.streaming: a streamed split is encoded row by row as batches need it

    # -- data -----------------------------------------------------------------
    def setup(self, train: Any) -> None:
        texts = self._texts(train, "train")
        cfg = self.recipe.data.tokenizer
        self.tokenizer = build_tokenizer(cfg, texts)
        if self.run_dir is not None:
            self.tokenizer.save(self.run_dir)
        self.vocab = Vocabulary.build((self.tokenizer.tokenize(t) for t in texts), cfg.min_freq, cfg.max_size)
        raw_labels = column(train, self.options.label_field, "train", "task.label_field")
        self.labels = Vocabulary.labels(self._label_text(v, i, "train") for i, v in enumerate(raw_labels))
        self.score_scale = (0.0, 1.0)
        if self.options.score_field is not None:  # the score is learned standardised: mean 0, standard deviation 1
            scores = [self._score(v, i, "train") for i, v in enumerate(column(train, self.options.score_field, "train", "task.score_field"))]
            self.score_scale = (statistics.fmean(scores), statistics.pstdev(scores) or 1.0)

    def state_dict(self) -> Dict[str, Any]:
        return {"vocab": self.vocab.itos, "labels": self.labels.itos, "score_scale": list(self.score_scale)}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.tokenizer = load_tokenizer(self.recipe.data.tokenizer, self.run_dir)
        self.vocab = Vocabulary(state["vocab"])
        self.labels = Vocabulary(state["labels"], specials=())
        self.score_scale = tuple(state.get("score_scale", (0.0, 1.0)))

    def _texts(self, dataset: Any, split: str) -> List[str]:
        texts = column(dataset, self.options.text_field, split, "task.text_field")
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise self.data_error(split, i, f"field '{self.options.text_field}' is {type(text).__name__}, not text; fix or remove the row")
        return texts

    def _label_text(self, value: Any, row: int, split: str) -> str:
        if value is None or isinstance(value, (dict, list)):
            raise self.data_error(split, row, f"field '{self.options.label_field}' is {value!r}; every row needs a label")
        return str(value)

    def _score(self, value: Any, row: int, split: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.data_error(split, row, f"field '{self.options.score_field}' is {value!r}, not a number; fix the row (or unset task.score_field)")
        return float(value)

    def encode(self, dataset: Any, split: str) -> Any:
        """Examples: a list, or for a streamed split (data.streaming) a StreamedExamples made as it is read."""
        text_field, label_field, score_field = self.options.text_field, self.options.label_field, self.options.score_field
        if is_streamed(dataset):
            return StreamedExamples(dataset, lambda row, values: self._example(
                split, row, values.get(text_field), values.get(label_field, _MISSING), values.get(score_field, _MISSING) if score_field else None))
        texts = self._texts(dataset, split)
        raw_labels = column(dataset, label_field, split, "task.label_field")
        raw_scores = column(dataset, score_field, split, "task.score_field") if score_field else [None] * len(texts)
        return [self._example(split, row, text, raw, score) for row, (text, raw, score) in enumerate(zip(texts, raw_labels, raw_scores))]

    def _example(self, split: str, row: int, text: Any, raw: Any, score: Any = None) -> Example:
        if raw is _MISSING:
            raise self.data_error(split, row, f"no field '{self.options.label_field}'; set task.label_field to the field that holds the label")
        if not isinstance(text, str):
            raise self.data_error(split, row, f"field '{self.options.text_field}' is {type(text).__name__}, not text; fix or remove the row (or set task.text_field)")
        ids = self.vocab.encode(self.tokenizer.tokenize(text))
        if not ids:
            raise self.data_error(split, row, "the text has no tokens (empty or only spaces); remove the row")
        label = self._label_text(raw, row, split)
        if label not in self.labels.stoi:
            sampled = " (labels come from the first data.vocab_sample rows of a streamed train split)" if self.recipe.data.streaming else ""
            raise self.data_error(split, row, f"unknown label '{label}'; the model knows {', '.join(self.labels.itos)}{sampled}")
        if score is _MISSING:
            raise self.data_error(split, row, f"no field '{self.options.score_field}'; set task.score_field to the field that holds the score, or unset it")
        if score is not None:
            mean, std = self.score_scale
            score = (self._score(score, row, split) - mean) / std
        return (ids, self.labels.stoi[label], score)

    def length(self, example: Example) -> int:
        return len(example[0])

    def collate(self, examples: Sequence[Example]) -> Dict[str, Tensor]:
        tokens, lengths = pad_batch([ids for ids, _, _ in examples])
        batch = {"tokens": tokens, "lengths": lengths}
        if all(y is not None for _, y, _ in examples):
            batch["labels"] = torch.tensor([y for _, y, _ in examples])
        if all(z is not None for _, _, z in examples):
            batch["scores"] = torch.tensor([z for _, _, z in examples])
        return batch

    # -- model ----------------------------------------------------------------
    def build_model(self) -> nn.Module:
        options = self.options

        def member() -> SentimentModel:
            encoder = RNNEncoder.from_config(self.recipe.encoder, vocab_size=len(self.vocab))
            return SentimentModel(encoder, len(self.labels), options.dropout, options.pooling, score_head=options.score_field is not None)

        return member() if options.ensemble == 1 else SentimentEnsemble([member() for _ in range(options.ensemble)])

    def training_step(self, model: nn.Module, batch: Dict[str, Tensor]) -> Tensor:
        """Cross-entropy on the labels (plus the weighted squared error on the scores), added over the members:
        each member's gradient is exactly what it would get trained alone."""
        loss = torch.zeros((), device=batch["tokens"].device)
        for logits, score in model(batch["tokens"], batch["lengths"], each=True):
            loss = loss + F.cross_entropy(logits, batch["labels"])
            if score is not None and "scores" in batch:
                loss = loss + self.options.score_weight * F.mse_loss(score.float(), batch["scores"])
        return loss

    def evaluate_batch(self, model: nn.Module, batch: Dict[str, Tensor]) -> Dict[str, Any]:
        logits = model(batch["tokens"], batch["lengths"])
        return {
            "loss_sum": F.cross_entropy(logits.float(), batch["labels"], reduction="sum"),
            "predictions": logits.argmax(-1).tolist(),
            "targets": batch["labels"].tolist(),
        }

    def compute_metrics(self, totals: Dict[str, Any]) -> Dict[str, float]:
        return classification_metrics(totals["loss_sum"], totals["predictions"], totals["targets"])

    # -- use ------------------------------------------------------------------
    def predict(self, model: nn.Module, texts: List[str]) -> List[Dict[str, Any]]:
        """The most likely label, its probability, and every label's probability."""
        examples = [(self.vocab.encode(self.tokenizer.tokenize(t)) or [self.vocab.unk_id], None, None) for t in texts]
        probs = self.collect(model, examples, lambda m, b: {"probs": m(b["tokens"], b["lengths"]).float().softmax(-1).tolist()})["probs"]
        results = []
        for text, p in zip(texts, probs):
            best = max(range(len(p)), key=p.__getitem__)
            results.append({
                "input": text, "label": self.labels.itos[best], "probability": p[best],
                "probabilities": dict(zip(self.labels.itos, p)),
            })
        return results

    def format_prediction(self, result: Dict[str, Any]) -> str:
        return f"{result['label']}\t{result['probability']:.4f}\t{result['input']}"

    # -- export ---------------------------------------------------------------
    def exportable(self, model: nn.Module) -> Exportable:
        """The classifier as one graph: padded ids and lengths in, a score per label out."""
        vocab_size = len(self.vocab)
        graph = ExportGraph(
            name="model", module=model, inputs=("tokens", "lengths"), outputs=("logits",),
            dynamic={"tokens": {0: "batch", 1: "time"}, "lengths": {0: "batch"}, "logits": {0: "batch"}},
            example=lambda batch, time: example_tokens(batch, time, vocab_size),
            doc="tokens: vocab ids padded with pad_id, lengths: real tokens per row (at least 1); softmax(logits) gives each label's probability",
        )
        return Exportable(
            graphs=[graph],
            vocabularies={"vocab": self.vocab.itos, "labels": self.labels.itos},
            tokenizers={"text": self.tokenizer},
            info={
                "labels": self.labels.itos, "pad_id": self.vocab.pad_id, "unk_id": self.vocab.unk_id,
                "empty_text": "a text without tokens is read as [unk_id]",
            },
        )
