"""Many-to-one: classify a whole text (sentiment polarity, topic, ...).

The encoder reads the text; its final state (forward at the last token,
backward at the first) summarises it; dropout and one linear layer map that
summary to class scores. This file is also the worked example of the Task API.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Literal, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nlptoolkit import (
    ExportGraph, Exportable, RNNEncoder, StreamedExamples, Task, Vocabulary, build_tokenizer, classification_metrics, column,
    example_tokens, is_streamed, load_tokenizer, pad_batch, register_task,
)

Example = Tuple[List[int], Optional[int]]  # (token ids, label id; None when predicting)
_MISSING = object()  # a streamed row without the label field


@dataclass
class SentimentOptions:
    """The recipe's `task:` section for this task."""

    text_field: str = "text"  # the data field that holds the text
    label_field: str = "label"  # the data field that holds the class (any strings or integers)
    dropout: float = 0.5  # on the text summary, before the classifier
    pooling: Literal["final", "max", "mean"] = "final"  # how the encoder's outputs become one summary


class SentimentModel(nn.Module):
    """Encoder, a summary of the text, dropout, linear.

    The summary is the final state (``final``: forward at the last token,
    backward at the first) or a max / mean over the outputs at every real
    token. Max pooling lets any one phrase ("a gorgeous, witty movie") decide,
    and usually generalises better on short texts.
    """

    def __init__(self, encoder: RNNEncoder, num_labels: int, dropout: float, pooling: str = "final") -> None:
        super().__init__()
        self.encoder = encoder
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.classify = nn.Linear(encoder.output_size, num_labels)

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
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
        return self.classify(self.dropout(summary))


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

    def state_dict(self) -> Dict[str, Any]:
        return {"vocab": self.vocab.itos, "labels": self.labels.itos}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.tokenizer = load_tokenizer(self.recipe.data.tokenizer, self.run_dir)
        self.vocab = Vocabulary(state["vocab"])
        self.labels = Vocabulary(state["labels"], specials=())

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

    def encode(self, dataset: Any, split: str) -> Any:
        """Examples: a list, or for a streamed split (data.streaming) a StreamedExamples made as it is read."""
        text_field, label_field = self.options.text_field, self.options.label_field
        if is_streamed(dataset):
            return StreamedExamples(dataset, lambda row, values: self._example(split, row, values.get(text_field), values.get(label_field, _MISSING)))
        texts = self._texts(dataset, split)
        raw_labels = column(dataset, label_field, split, "task.label_field")
        return [self._example(split, row, text, raw) for row, (text, raw) in enumerate(zip(texts, raw_labels))]

    def _example(self, split: str, row: int, text: Any, raw: Any) -> Example:
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
        return (ids, self.labels.stoi[label])

    def length(self, example: Example) -> int:
        return len(example[0])

    def collate(self, examples: Sequence[Example]) -> Dict[str, Tensor]:
        tokens, lengths = pad_batch([ids for ids, _ in examples])
        batch = {"tokens": tokens, "lengths": lengths}
        if all(y is not None for _, y in examples):
            batch["labels"] = torch.tensor([y for _, y in examples])
        return batch

    # -- model ----------------------------------------------------------------
    def build_model(self) -> nn.Module:
        encoder = RNNEncoder.from_config(self.recipe.encoder, vocab_size=len(self.vocab))
        return SentimentModel(encoder, len(self.labels), self.options.dropout, self.options.pooling)

    def training_step(self, model: nn.Module, batch: Dict[str, Tensor]) -> Tensor:
        return F.cross_entropy(model(batch["tokens"], batch["lengths"]), batch["labels"])

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
        examples = [(self.vocab.encode(self.tokenizer.tokenize(t)) or [self.vocab.unk_id], None) for t in texts]
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
