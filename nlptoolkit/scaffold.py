"""`nlptk new-plugin NAME`: write a task plugin that works, to be changed into the one you want.

Three files: ``NAME.py`` (a text classifier on the shared encoder, every
hook of the Task API in place), ``NAME.yaml`` (a recipe that trains it on the
bundled movie snippets) and ``test_NAME.py`` (pytest: it learns a toy data
set, predicts, and rejects bad rows). The skeleton passes its own test as
written; comments marked ``CHANGE`` say what to edit for another task.
docs/plugins.md is the tutorial that explains each hook.
"""
from __future__ import annotations

import keyword
import os
import tempfile
from pathlib import Path
from typing import Dict, List

from nlptoolkit.errors import NlptkError

TASK_FILE = '''\
"""{title}: a task plugin for nlptk, made by `nlptk new-plugin {name}`.

As written it classifies whole texts (many-to-one): the encoder reads the
text, the maximum over its outputs summarises it, and a linear layer scores
each class. Lines marked CHANGE are where another task differs; docs/plugins.md
in the nlptk repository explains every hook.

Plugins import only what `nlptoolkit` itself exports (``from nlptoolkit import ...``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nlptoolkit import (
    RNNEncoder, Task, Vocabulary, build_tokenizer, classification_metrics, column, load_tokenizer, pad_batch,
    register_task,
)

Example = Tuple[List[int], Optional[int]]  # CHANGE: what one encoded example holds (here: token ids, class id)


@dataclass
class {cls}Options:
    """The recipe's `task:` section. Each field is a key; the comment beside it is what `nlptk init {name}` prints."""

    text_field: str = "text"  # the data field that holds the text
    label_field: str = "label"  # CHANGE: the data field that holds what to predict
    dropout: float = 0.3  # on the text summary, before the output layer


class {cls}Model(nn.Module):
    """Encoder, max over the outputs at real tokens, dropout, linear."""

    def __init__(self, encoder: RNNEncoder, num_outputs: int, dropout: float) -> None:
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(encoder.output_size, num_outputs)  # CHANGE: the output layer

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        outputs = self.encoder(tokens, lengths).outputs  # (batch, time, output_size); .final is the last state
        real = torch.arange(tokens.shape[1], device=tokens.device) < lengths.to(tokens.device).unsqueeze(1)
        summary = outputs.masked_fill(~real.unsqueeze(-1), float("-inf")).max(dim=1).values
        return self.out(self.dropout(summary))


@register_task("{name}")
class {cls}Task(Task):
    """{title} (many-to-one)."""

    description = "{title}: a class for each text (made by nlptk new-plugin); metrics accuracy, macro_f1."  # CHANGE: `nlptk list` shows it
    Options = {cls}Options
    metrics = ("accuracy", "macro_f1", "loss")  # CHANGE: what compute_metrics returns; early stopping picks one
    lower_is_better = frozenset({{"loss"}})  # CHANGE: the metrics where smaller is better (best.pt, early stopping)

    # -- data: fitted on the training split, saved in the checkpoint ----------
    def setup(self, train: Any) -> None:
        texts = self._texts(train, "train")
        cfg = self.recipe.data.tokenizer
        self.tokenizer = build_tokenizer(cfg, texts)
        if self.run_dir is not None:
            self.tokenizer.save(self.run_dir)
        self.vocab = Vocabulary.build((self.tokenizer.tokenize(t) for t in texts), cfg.min_freq, cfg.max_size)
        # CHANGE: what else is learned from the training data (a class list here; a mean and spread for regression)
        self.labels = Vocabulary.labels(str(v) for v in column(train, self.options.label_field, "train", "task.label_field"))

    def state_dict(self) -> Dict[str, Any]:
        return {{"vocab": self.vocab.itos, "labels": self.labels.itos}}  # plain data only: checkpoints load with weights_only

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.tokenizer = load_tokenizer(self.recipe.data.tokenizer, self.run_dir)
        self.vocab = Vocabulary(state["vocab"])
        self.labels = Vocabulary(state["labels"], specials=())

    def _texts(self, dataset: Any, split: str) -> List[str]:
        texts = column(dataset, self.options.text_field, split, "task.text_field")
        for row, text in enumerate(texts):
            if not isinstance(text, str):
                raise self.data_error(split, row, f"field '{{self.options.text_field}}' is {{type(text).__name__}}, not text; fix or remove the row")
        return texts

    def encode(self, dataset: Any, split: str) -> List[Example]:
        labels = column(dataset, self.options.label_field, split, "task.label_field")
        examples = []
        for row, (text, label) in enumerate(zip(self._texts(dataset, split), labels)):
            ids = self.vocab.encode(self.tokenizer.tokenize(text))
            if not ids:
                raise self.data_error(split, row, "the text has no tokens (empty or only spaces); remove the row")
            if str(label) not in self.labels.stoi:  # CHANGE: how a target is checked and encoded
                raise self.data_error(split, row, f"unknown label {{label!r}}; the training data has {{', '.join(self.labels.itos)}}")
            examples.append((ids, self.labels.stoi[str(label)]))
        return examples

    def length(self, example: Example) -> int:
        return len(example[0])  # batches group similar lengths

    def collate(self, examples: Sequence[Example]) -> Dict[str, Tensor]:
        tokens, lengths = pad_batch([ids for ids, _ in examples])
        batch = {{"tokens": tokens, "lengths": lengths}}
        if all(y is not None for _, y in examples):  # predict() makes examples without targets
            batch["targets"] = torch.tensor([y for _, y in examples])
        return batch

    # -- model ------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        encoder = RNNEncoder.from_config(self.recipe.encoder, vocab_size=len(self.vocab))
        return {cls}Model(encoder, len(self.labels), self.options.dropout)

    def training_step(self, model: nn.Module, batch: Dict[str, Tensor]) -> Tensor:
        return F.cross_entropy(model(batch["tokens"], batch["lengths"]).float(), batch["targets"])  # CHANGE: the loss

    # -- evaluation: a batch's partial statistics, then the split's metrics ----
    def evaluate_batch(self, model: nn.Module, batch: Dict[str, Tensor]) -> Dict[str, Any]:
        logits = model(batch["tokens"], batch["lengths"]).float()
        return {{  # numbers add over the split; lists (one item per example) concatenate in input order
            "loss_sum": F.cross_entropy(logits, batch["targets"], reduction="sum"),
            "predictions": logits.argmax(-1).tolist(),
            "targets": batch["targets"].tolist(),
        }}

    def compute_metrics(self, totals: Dict[str, Any]) -> Dict[str, float]:
        return classification_metrics(totals["loss_sum"], totals["predictions"], totals["targets"])  # CHANGE: your metrics

    # -- use ----------------------------------------------------------------------
    def predict(self, model: nn.Module, texts: List[str]) -> List[Dict[str, Any]]:
        """One JSON-able dict per text, in input order (`nlptk predict --json` prints them)."""
        examples = [(self.vocab.encode(self.tokenizer.tokenize(t)) or [self.vocab.unk_id], None) for t in texts]
        probs = self.collect(model, examples, lambda m, b: {{"probs": m(b["tokens"], b["lengths"]).float().softmax(-1).tolist()}})["probs"]
        results = []
        for text, p in zip(texts, probs):  # CHANGE: what a prediction holds
            best = max(range(len(p)), key=p.__getitem__)
            results.append({{"input": text, "label": self.labels.itos[best], "probability": p[best]}})
        return results

    def format_prediction(self, result: Dict[str, Any]) -> str:
        return f"{{result['label']}}\\t{{result['probability']:.3f}}\\t{{result['input']}}"  # the line `nlptk predict` prints
'''

RECIPE_FILE = '''\
# {title}: the skeleton made by `nlptk new-plugin {name}`, on the movie snippets that ship with nlptk.
#   nlptk run {name}.yaml        (from this folder: the plugin path below is relative to the current folder)
name: {name}
plugins: [./{name}.py]        # drop this line once the task is installed as a package (entry point)
task:
  name: {name}
  text_field: text
  label_field: label            # CHANGE: the field your task predicts
seed: 13
device: auto
data:
  files:                        # CHANGE: your data (jsonl, csv, parquet, text; .gz too)
    train: bundled:sentiment/movie_snippets/train.jsonl.gz
    validation: bundled:sentiment/movie_snippets/validation.jsonl.gz
  tokenizer: {{kind: word, lowercase: true, split_punctuation: true, min_freq: 2}}
encoder: {{cell: lstm, embedding_dim: 64, hidden_size: 64, bidirectional: true, dropout: 0.3}}
train:
  lr: 0.003
  batch_size: 64
  epochs: 3
  early_stopping: {{metric: accuracy}}   # CHANGE: one of the task's metrics
'''

TEST_FILE = '''\
"""Tests of the {name} task (made by `nlptk new-plugin {name}`): `python -m pytest test_{name}.py`.

They train on a toy data set with a known answer, so they take seconds.
CHANGE: make the toy rows and the checks fit your task.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

import nlptoolkit

HERE = Path(__file__).resolve().parent
POSITIVE, NEGATIVE, FILLER = ["good", "great", "fine"], ["bad", "awful", "dull"], ["the", "film", "a", "plot", "is", "very"]


def toy_rows(n: int, seed: int) -> list:
    """The label is whether the text has a word from POSITIVE or one from NEGATIVE."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.choice(["positive", "negative"])
        words = [rng.choice(POSITIVE if label == "positive" else NEGATIVE)] + rng.choices(FILLER, k=rng.randint(1, 5))
        rng.shuffle(words)
        rows.append({{"text": " ".join(words), "label": label}})
    return rows


def write(path: Path, rows: list) -> str:
    path.write_text("".join(json.dumps(r) + "\\n" for r in rows), encoding="utf-8")
    return str(path)


def train_toy(tmp_path: Path, train_rows: list) -> "nlptoolkit.Run":
    """The recipe next to this file, on the toy data, small and short."""
    overrides = {{
        "plugins": [str(HERE / "{name}.py")],  # absolute, so the test runs from any folder
        "data.files": {{"train": write(tmp_path / "train.jsonl", train_rows), "validation": write(tmp_path / "validation.jsonl", toy_rows(60, 2))}},
        "encoder.embedding_dim": 16, "encoder.hidden_size": 16, "device": "cpu",
        "train.epochs": 3, "train.batch_size": 16, "train.lr": 0.01, "train.precision": "fp32",
    }}
    return nlptoolkit.train(str(HERE / "{name}.yaml"), overrides=overrides, output_dir=tmp_path / "run", quiet=True)


def test_it_learns_the_toy_task_and_predicts(tmp_path: Path) -> None:
    run = train_toy(tmp_path, toy_rows(300, 1))
    metrics = run.evaluate()
    assert metrics["accuracy"] >= 0.95, metrics
    results = run.predict(["a great film", "the plot is awful"])
    assert [r["label"] for r in results] == ["positive", "negative"], results
    assert run.format_prediction(results[0]).endswith("a great film")


def test_a_row_without_text_is_a_one_line_error(tmp_path: Path) -> None:
    rows = toy_rows(40, 1) + [{{"text": None, "label": "positive"}}]
    with pytest.raises(nlptoolkit.NlptkError, match=r"row 41: field 'text' is NoneType"):
        train_toy(tmp_path, rows)
'''


def plugin_files(name: str) -> Dict[str, str]:
    """File name -> text of the skeleton for task ``name``."""
    cls = "".join(part[:1].upper() + part[1:] for part in name.split("_") if part) or "My"
    title = name.replace("_", " ").strip().capitalize()
    values = {"name": name, "cls": cls, "title": title}
    return {
        f"{name}.py": TASK_FILE.format(**values),
        f"{name}.yaml": RECIPE_FILE.format(**values),
        f"test_{name}.py": TEST_FILE.format(**values),
    }


def check_name(name: str) -> None:
    if not name.isidentifier() or keyword.iskeyword(name) or not name.isascii():
        raise NlptkError(
            f"new-plugin {name!r}: the name becomes a module and a task name, so it must be a Python identifier "
            "(letters, digits and _, not starting with a digit, not a keyword), e.g. review_score"
        )


def write_plugin(name: str, folder: Path) -> List[Path]:
    """Write the skeleton into ``folder``; refuse, writing nothing, if any of its files exists."""
    check_name(name)
    files = plugin_files(name)
    if folder.exists() and not folder.is_dir():
        raise NlptkError(f"--dir {folder}: exists and is not a folder; give a folder for the plugin's files")
    existing = [folder / f for f in files if (folder / f).exists()]
    if existing:
        raise NlptkError(
            f"new-plugin: {', '.join(str(p) for p in existing)} already exist{'s' if len(existing) == 1 else ''}; "
            "nothing was written; pick another name or --dir, or remove the files"
        )
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for file_name, text in files.items():
        path = folder / file_name
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{file_name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
        written.append(path)
    return written
