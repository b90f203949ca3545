"""A task plugin: predict a number for a whole text (many-to-one regression).

Here the number is the mean human rating of a movie-review snippet, from -4
(very negative) to +4 (very positive). docs/plugins.md builds this file step by step.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nlptoolkit import RNNEncoder, Task, Vocabulary, build_tokenizer, column, load_tokenizer, pad_batch, register_task

Example = Tuple[List[int], Optional[float]]  # (token ids, standardised score; None when predicting)


@dataclass
class ScoreOptions:
    """The recipe's `task:` section for this task."""

    text_field: str = "text"  # the data field that holds the text
    score_field: str = "score"  # the data field that holds the number to predict
    dropout: float = 0.5  # on the text summary, before the output layer


class ScoreModel(nn.Module):
    """Encoder, max over its outputs at the real tokens, dropout, one linear unit."""

    def __init__(self, encoder: RNNEncoder, dropout: float) -> None:
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(encoder.output_size, 1)

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        outputs = self.encoder(tokens, lengths).outputs  # (batch, time, output_size), zero at padding
        real = torch.arange(tokens.shape[1], device=tokens.device) < lengths.to(tokens.device).unsqueeze(1)
        summary = outputs.masked_fill(~real.unsqueeze(-1), float("-inf")).max(dim=1).values
        return self.out(self.dropout(summary)).squeeze(-1)  # (batch,)


@register_task("score")
class ScoreTask(Task):
    """Regression on whole texts: one number per text."""

    description = "Predict a number for each text (many-to-one regression), e.g. a review's rating; metrics rmse, mae."
    Options = ScoreOptions
    metrics = ("rmse", "mae", "baseline_rmse", "loss")
    lower_is_better = frozenset({"rmse", "mae", "baseline_rmse", "loss"})

    # -- data -----------------------------------------------------------------
    def setup(self, train: Any) -> None:
        texts = self._texts(train, "train")
        cfg = self.recipe.data.tokenizer
        self.tokenizer = build_tokenizer(cfg, texts)
        if self.run_dir is not None:
            self.tokenizer.save(self.run_dir)
        self.vocab = Vocabulary.build((self.tokenizer.tokenize(t) for t in texts), cfg.min_freq, cfg.max_size)
        scores = self._scores(train, "train")
        self.mean = sum(scores) / len(scores)
        self.std = math.sqrt(sum((s - self.mean) ** 2 for s in scores) / len(scores)) or 1.0

    def state_dict(self) -> Dict[str, Any]:
        return {"vocab": self.vocab.itos, "mean": self.mean, "std": self.std}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.tokenizer = load_tokenizer(self.recipe.data.tokenizer, self.run_dir)
        self.vocab = Vocabulary(state["vocab"])
        self.mean, self.std = float(state["mean"]), float(state["std"])

    def _texts(self, dataset: Any, split: str) -> List[str]:
        texts = column(dataset, self.options.text_field, split, "task.text_field")
        for row, text in enumerate(texts):
            if not isinstance(text, str):
                raise self.data_error(split, row, f"field '{self.options.text_field}' is {type(text).__name__}, not text; fix or remove the row")
        return texts

    def _scores(self, dataset: Any, split: str) -> List[float]:
        scores = column(dataset, self.options.score_field, split, "task.score_field")
        for row, score in enumerate(scores):
            if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
                raise self.data_error(split, row, f"field '{self.options.score_field}' is {score!r}, not a finite number; fix or remove the row")
        return [float(s) for s in scores]

    def encode(self, dataset: Any, split: str) -> List[Example]:
        examples = []
        for row, (text, score) in enumerate(zip(self._texts(dataset, split), self._scores(dataset, split))):
            ids = self.vocab.encode(self.tokenizer.tokenize(text))
            if not ids:
                raise self.data_error(split, row, "the text has no tokens (empty or only spaces); remove the row")
            examples.append((ids, (score - self.mean) / self.std))
        return examples

    def length(self, example: Example) -> int:
        return len(example[0])

    def collate(self, examples: Sequence[Example]) -> Dict[str, Tensor]:
        tokens, lengths = pad_batch([ids for ids, _ in examples])
        batch = {"tokens": tokens, "lengths": lengths}
        if all(y is not None for _, y in examples):
            batch["targets"] = torch.tensor([y for _, y in examples])
        return batch

    # -- model ----------------------------------------------------------------
    def build_model(self) -> nn.Module:
        encoder = RNNEncoder.from_config(self.recipe.encoder, vocab_size=len(self.vocab))
        return ScoreModel(encoder, self.options.dropout)

    def training_step(self, model: nn.Module, batch: Dict[str, Tensor]) -> Tensor:
        return F.mse_loss(model(batch["tokens"], batch["lengths"]).float(), batch["targets"])

    # -- evaluation -----------------------------------------------------------
    def evaluate_batch(self, model: nn.Module, batch: Dict[str, Tensor]) -> Dict[str, Any]:
        predicted = model(batch["tokens"], batch["lengths"]).float()
        error = (predicted - batch["targets"]) * self.std  # in the data's own units
        return {
            "squared_error": (error ** 2).sum(),
            "absolute_error": error.abs().sum(),
            "baseline_squared_error": ((batch["targets"] * self.std) ** 2).sum(),  # always saying the training mean
            "count": len(error),
        }

    def compute_metrics(self, totals: Dict[str, Any]) -> Dict[str, float]:
        n = totals["count"]
        return {
            "rmse": math.sqrt(totals["squared_error"] / n),
            "mae": totals["absolute_error"] / n,
            "baseline_rmse": math.sqrt(totals["baseline_squared_error"] / n),
            "loss": totals["squared_error"] / n / self.std ** 2,  # what training_step minimises
        }

    # -- use ------------------------------------------------------------------
    def predict(self, model: nn.Module, texts: List[str]) -> List[Dict[str, Any]]:
        """The predicted score of each text."""
        examples = [(self.vocab.encode(self.tokenizer.tokenize(t)) or [self.vocab.unk_id], None) for t in texts]
        out = self.collect(model, examples, lambda m, b: {"z": m(b["tokens"], b["lengths"]).float().tolist()})
        return [{"input": text, "score": self.mean + z * self.std} for text, z in zip(texts, out["z"])]

    def format_prediction(self, result: Dict[str, Any]) -> str:
        return f"{result['score']:+.2f}\t{result['input']}"
