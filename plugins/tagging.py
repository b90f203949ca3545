"""Sequence tagging (many-to-many, in sync): one tag per input position.

Part-of-speech tags, named entities in BIO form, or labels for the frames of
audio or video. The shared encoder (usually bidirectional) reads the whole
sequence; at every position its output goes through dropout and one linear
layer to a score per tag (the *emissions*). Then either

* ``decoder: softmax`` picks each position's best tag on its own (the loss is
  cross-entropy per real token), or
* ``decoder: crf`` scores whole tag sequences with a linear-chain CRF
  (:class:`nlptoolkit.CRF`) and decodes with Viterbi, so that ``O I-person``
  can be ruled out by a learned transition score.

Inputs are word tokens (``input: tokens``, with optional character features
from :class:`nlptoolkit.CharEncoder` joined to each word's embedding) or float
vectors (``input: vectors``: no embedding, the encoder reads the vectors).
Padding never counts: not in the loss, not in any metric.
"""
from __future__ import annotations

import dataclasses
import json
import re
import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Any, Dict, List, Literal, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nlptoolkit import (
    CRF, CharEncoder, ExportGraph, Exportable, NlptkError, RNNEncoder, Task, Vocabulary, at_least, build_tokenizer,
    char_batch, column, example_tokens, feature_matrix, pad_batch, register_task,
)

IGNORE = -100  # the tag id of padding (and of a gold tag the model never saw): left out of the loss
ENTITY_TAG = re.compile(r"^[BIESLU]-.+")  # BIO / BIOES / BILOU tags name entity types


@dataclass
class CharEncoderOptions:
    """The ``task.char_encoder:`` section: an RNN over each word's characters."""

    cell: Literal["rnn", "lstm", "gru"] = "lstm"
    embedding_dim: int = at_least(1, 32, high=4096)
    hidden_size: int = at_least(1, 32, high=4096)  # per direction
    bidirectional: bool = True
    min_freq: int = at_least(1, 1)  # rarer characters read as <unk>
    max_chars: int = at_least(0, 20)  # longer words (URLs) keep their first and last 10; 0 keeps all


@dataclass
class TaggingOptions:
    """The recipe's ``task:`` section for this task."""

    tokens_field: str = "tokens"  # the input sequence: a list of tokens (or of vectors, with input: vectors)
    tags_field: str = "tags"  # a list of tag strings, as long as the input
    input: Literal["tokens", "vectors"] = "tokens"
    input_size: Optional[int] = at_least(1, None)  # vectors: their width (default: the first training row's)
    decoder: Literal["softmax", "crf"] = "softmax"
    dropout: float = at_least(0.0, 0.5, high=1.0)  # on the encoder's outputs, before the tag scores
    word_dropout: float = at_least(0.0, 0.0, high=1.0)  # training words read as <unk>, so <unk> learns
    char_encoder: Optional[CharEncoderOptions] = None


class Sentence(NamedTuple):
    """One encoded example."""

    inputs: Any  # word ids (a list), or a (T, F) float tensor of vectors
    tags: List[int]  # tag ids; IGNORE for a gold tag the model does not know
    words: List[str]  # the tokens as written (character features read them); [] for vectors
    gold: List[str]  # the gold tags as written, for the metrics


class Tagger(nn.Module):
    """Word embedding (+ character features) or vectors, encoder, dropout, linear; a CRF if asked."""

    def __init__(
        self,
        encoder: RNNEncoder,
        num_tags: int,
        dropout: float,
        embedding: Optional[nn.Embedding] = None,
        chars: Optional[CharEncoder] = None,
        crf: bool = False,
    ) -> None:
        super().__init__()
        self.embedding, self.chars, self.encoder = embedding, chars, encoder
        self.dropout = nn.Dropout(dropout)
        self.scores = nn.Linear(encoder.output_size, num_tags)
        self.crf = CRF(num_tags) if crf else None

    def forward(self, batch: Dict[str, Tensor]) -> Tensor:
        """(B, T, K) emissions: a score per position and tag."""
        x = batch["inputs"]
        if self.embedding is not None:
            x = self.embedding(x)
            if self.chars is not None:
                x = torch.cat([x, self.chars(batch["chars"], batch["char_lengths"], batch["char_index"])], dim=-1)
        outputs = self.encoder(x, batch["lengths"]).outputs
        return self.scores(self.dropout(outputs))

    def loss(self, emissions: Tensor, batch: Dict[str, Tensor]) -> Tensor:
        """Summed loss over the batch's real tokens (cross-entropy, or the CRF's sentence NLL)."""
        tags = batch["tags"]
        if self.crf is None:
            return F.cross_entropy(emissions.flatten(0, 1).float(), tags.flatten(), ignore_index=IGNORE, reduction="sum")
        # the CRF scores whole sequences: a tag the model does not know reads as tag 0
        return self.crf.nll(emissions, tags.clamp(min=0), batch["lengths"]).sum()

    def decode(self, emissions: Tensor, lengths: Tensor) -> List[List[int]]:
        if self.crf is not None:
            return self.crf.decode_lists(emissions, lengths)
        best = emissions.argmax(-1).tolist()
        return [b[:n] for b, n in zip(best, lengths.tolist())]


class ExportedTagger(nn.Module):
    """The tagger with tensors for arguments (``Tagger.forward`` reads a batch dict), for `nlptk export`."""

    def __init__(self, tagger: Tagger) -> None:
        super().__init__()
        self.tagger = tagger

    def forward(self, inputs: Tensor, lengths: Tensor, *chars: Tensor) -> Tensor:
        batch = {"inputs": inputs, "lengths": lengths}
        if chars:
            batch["chars"], batch["char_lengths"], batch["char_index"] = chars
        return self.tagger(batch)


@register_task("tagging")
class TaggingTask(Task):
    """One tag per token or frame (POS, NER in BIO form, frame labels); optional char features and CRF."""

    description = "Tag every token or frame (many-to-many): POS, BIO named entities, frame labels; accuracy, entity f1."
    Options = TaggingOptions
    metrics = ("accuracy", "f1", "precision", "recall", "loss")

    # -- data -----------------------------------------------------------------
    def setup(self, train: Any) -> None:
        opts = self.options
        sequences = self._column(train, "train", opts.tokens_field, "task.tokens_field")
        tag_rows = self._column(train, "train", opts.tags_field, "task.tags_field")
        counts: Counter = Counter()
        for row, (seq, tags) in enumerate(zip(sequences, tag_rows)):
            self._check_row(seq, tags, row, "train")
            counts.update(tags)
        self.tags = Vocabulary.labels(counts)
        self.entity = any(t != "O" for t in self.tags.itos) and all(t == "O" or ENTITY_TAG.match(t) for t in self.tags.itos)
        metric = self.recipe.train.early_stopping.metric
        if metric in ("f1", "precision", "recall") and not self.entity:
            raise NlptkError(
                f"train.early_stopping.metric: '{metric}' is an entity score, but the training tags are not BIO/BIOES "
                f"(for example {self.tags.itos[0]!r}); use accuracy or loss"
            )
        self.vocab = self.char_vocab = None
        self.input_size = opts.input_size
        if opts.input == "vectors":
            if self.input_size is None:
                first = sequences[0][0]
                if not isinstance(first, list) or not first:
                    raise self.data_error("train", 0, f"with input: vectors, '{opts.tokens_field}' is a list of vectors (lists of numbers), got {first!r}")
                self.input_size = len(first)
            return
        cfg = self.recipe.data.tokenizer
        if cfg.kind != "word":
            raise NlptkError(f"data.tokenizer.kind: the tagging task reads tokens as given (kind: word), got '{cfg.kind}'")
        self.vocab = Vocabulary.build(([self._word_key(w) for w in s] for s in sequences), cfg.min_freq, cfg.max_size)
        if opts.char_encoder is not None:
            self.char_vocab = Vocabulary.build((w for s in sequences for w in s), opts.char_encoder.min_freq)

    def state_dict(self) -> Dict[str, Any]:
        return {
            "tags": self.tags.itos, "entity": self.entity, "input_size": self.input_size,
            "vocab": self.vocab.itos if self.vocab else None,
            "char_vocab": self.char_vocab.itos if self.char_vocab else None,
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.tags = Vocabulary(state["tags"], specials=())
        self.entity, self.input_size = bool(state["entity"]), state["input_size"]
        self.vocab = Vocabulary(state["vocab"]) if state["vocab"] else None
        self.char_vocab = Vocabulary(state["char_vocab"]) if state["char_vocab"] else None

    def _word_key(self, word: str) -> str:
        return word.lower() if self.recipe.data.tokenizer.lowercase else word

    def _column(self, dataset: Any, split: str, field: str, key: str) -> List[Any]:
        values = column(dataset, field, split, key)
        for row, value in enumerate(values):
            if not isinstance(value, list):
                raise self.data_error(split, row, f"field '{field}' is {type(value).__name__}, not a list; each row holds a list per field")
        return values

    def _check_row(self, sequence: List[Any], tags: List[Any], row: int, split: str) -> None:
        opts = self.options
        if not sequence:
            raise self.data_error(split, row, f"field '{opts.tokens_field}' is empty; remove the row (a sentence needs at least one token)")
        if len(sequence) != len(tags):
            raise self.data_error(
                split, row, f"{len(sequence)} tokens in '{opts.tokens_field}' but {len(tags)} tags in '{opts.tags_field}'; every token needs exactly one tag"
            )
        for position, tag in enumerate(tags):
            if not isinstance(tag, str):
                raise self.data_error(split, row, f"tag {position + 1} of '{opts.tags_field}' is {tag!r} ({type(tag).__name__}), not a string")
        if opts.input == "tokens":
            for position, token in enumerate(sequence):
                if not isinstance(token, str) or not token:
                    raise self.data_error(split, row, f"token {position + 1} of '{opts.tokens_field}' is {token!r}, not a non-empty string")

    def _vectors(self, frames: List[Any], where: str) -> Tensor:
        """A (T, F) tensor from a list of frames; a frame of the wrong width is named with both widths."""
        return feature_matrix(frames, self.input_size, lambda i: f"{where}, frame {i + 1}", "the vector")

    def encode(self, dataset: Any, split: str) -> List[Sentence]:
        opts = self.options
        sequences = self._column(dataset, split, opts.tokens_field, "task.tokens_field")
        tag_rows = self._column(dataset, split, opts.tags_field, "task.tags_field")
        index = self.tags.stoi
        examples = []
        for row, (seq, tags) in enumerate(zip(sequences, tag_rows)):
            self._check_row(seq, tags, row, split)
            tag_ids = [index.get(t, IGNORE) for t in tags]
            if opts.input == "vectors":
                where = f"{self.sources.get(split, f'the {split} split')}, row {row + 1}"
                examples.append(Sentence(self._vectors(seq, where), tag_ids, [], tags))
            else:
                examples.append(Sentence(self.vocab.encode(self._word_key(w) for w in seq), tag_ids, seq, tags))
        return examples

    def length(self, example: Sentence) -> int:
        return len(example.words) if example.words else len(example.inputs)

    def collate(self, examples: Sequence[Sentence]) -> Dict[str, Any]:
        if self.options.input == "vectors":
            inputs = nn.utils.rnn.pad_sequence([e.inputs for e in examples], batch_first=True)
            lengths = torch.tensor([len(e.inputs) for e in examples])
        else:
            inputs, lengths = pad_batch([e.inputs for e in examples])
        batch = {"inputs": inputs, "lengths": lengths, "gold": [e.gold for e in examples], "words": [e.words for e in examples]}
        if all(e.tags for e in examples):  # (inputs to predict have none)
            batch["tags"], _ = pad_batch([e.tags for e in examples], pad_id=IGNORE)
        if self.char_vocab is not None:
            batch["chars"], batch["char_lengths"], batch["char_index"] = char_batch(
                batch["words"], self.char_vocab, self.options.char_encoder.max_chars
            )
        return batch

    # -- model ----------------------------------------------------------------
    def build_model(self) -> nn.Module:
        opts, cfg = self.options, self.recipe.encoder
        if opts.input == "vectors":
            encoder = RNNEncoder.from_config(cfg, input_size=self.input_size)
            return Tagger(encoder, len(self.tags), opts.dropout, crf=opts.decoder == "crf")
        embedding = nn.Embedding(len(self.vocab), cfg.embedding_dim, padding_idx=0)
        chars = None
        if opts.char_encoder is not None:
            c = opts.char_encoder
            chars = CharEncoder(RNNEncoder(
                cell=c.cell, hidden_size=c.hidden_size, bidirectional=c.bidirectional,
                vocab_size=len(self.char_vocab), embedding_dim=c.embedding_dim,
            ))
        width = cfg.embedding_dim + (chars.output_size if chars is not None else 0)
        encoder = RNNEncoder.from_config(cfg, input_size=width)
        return Tagger(encoder, len(self.tags), opts.dropout, embedding, chars, crf=opts.decoder == "crf")

    def training_step(self, model: nn.Module, batch: Dict[str, Any]) -> Tensor:
        p = self.options.word_dropout
        if p > 0 and self.options.input == "tokens":
            inputs = batch["inputs"]
            dropped = (torch.rand(inputs.shape, device=inputs.device) < p) & (inputs != self.vocab.pad_id)
            batch = {**batch, "inputs": inputs.masked_fill(dropped, self.vocab.unk_id)}
        emissions = model(batch)
        raw = getattr(model, "module", model)  # under DistributedDataParallel
        return raw.loss(emissions, batch) / batch["lengths"].sum().clamp(min=1).to(emissions.device)

    def evaluate_batch(self, model: nn.Module, batch: Dict[str, Any]) -> Dict[str, Any]:
        emissions = model(batch)
        paths = model.decode(emissions, batch["lengths"])
        return {
            "loss_sum": model.loss(emissions, batch),
            "predicted": [[self.tags.itos[i] for i in path] for path in paths],
            "gold": batch["gold"],
        }

    def compute_metrics(self, totals: Dict[str, Any]) -> Dict[str, float]:
        return tagging_metrics(totals["predicted"], totals["gold"], self.entity, totals["loss_sum"])

    # -- use ------------------------------------------------------------------
    def predict(self, model: nn.Module, texts: List[str], **options: Any) -> List[Dict[str, Any]]:
        """Tokens and their tags for each text (vectors runs: one JSON list of frames per input)."""
        if options:
            raise NlptkError(f"task '{self.name}' takes no predict options (got {', '.join(options)})")
        if self.options.input == "vectors":
            examples = [Sentence(self._vectors(self._frames(text, n), f"input {n + 1}"), [], [], []) for n, text in enumerate(texts)]
        else:
            splitter = build_tokenizer(dataclasses.replace(self.recipe.data.tokenizer, lowercase=False))
            examples = []
            for n, text in enumerate(texts):
                words = splitter.tokenize(text)
                if not words:
                    raise NlptkError(f"input {n + 1}: no tokens in {text!r}; give a sentence with words separated by spaces")
                examples.append(Sentence(self.vocab.encode(self._word_key(w) for w in words), [], words, []))
        tags = self.collect(model, examples, lambda m, b: {"tags": [[self.tags.itos[i] for i in p] for p in m.decode(m(b), b["lengths"])]})["tags"]
        if self.options.input == "vectors":
            return [{"input": text, "tags": t} for text, t in zip(texts, tags)]
        return [{"input": text, "tokens": e.words, "tags": t} for text, e, t in zip(texts, examples, tags)]

    # -- export ---------------------------------------------------------------
    def exportable(self, model: nn.Module) -> Exportable:
        """Emissions (a score per position and tag) from padded inputs, lengths and, with character
        features, ``char_batch``'s tensors; a CRF's scores go into the manifest for Viterbi."""
        inputs, dynamic = ["inputs", "lengths"], {"lengths": {0: "batch"}, "emissions": {0: "batch", 1: "time"}}
        vocabularies: Dict[str, List[str]] = {"tags": self.tags.itos}
        info: Dict[str, Any] = {"labels": self.tags.itos, "tags": self.tags.itos}
        tokenizers = {}
        if self.options.input == "vectors":
            width = self.input_size
            dynamic["inputs"] = {0: "batch", 1: "time"}

            def example(batch: int, time: int) -> Tuple[Tensor, ...]:
                _, lengths = example_tokens(batch, time, 2)
                real = torch.arange(time).unsqueeze(0) < lengths.unsqueeze(1)
                return torch.randn(batch, time, width) * real.unsqueeze(-1), lengths

            doc = "inputs: (batch, time, width) float vectors, zero-padded; lengths: real frames per row; argmax(emissions) gives each frame's tag"
        else:
            vocab_size, chars = len(self.vocab), self.char_vocab
            dynamic["inputs"] = {0: "batch", 1: "time"}
            vocabularies["vocab"] = self.vocab.itos
            tokenizers["text"] = build_tokenizer(dataclasses.replace(self.recipe.data.tokenizer, lowercase=False))
            info.update(pad_id=self.vocab.pad_id, unk_id=self.vocab.unk_id, lowercase_words=bool(self.recipe.data.tokenizer.lowercase))
            if chars is not None:
                inputs += ["chars", "char_lengths", "char_index"]
                dynamic.update(chars={0: "words", 1: "characters"}, char_lengths={0: "words"}, char_index={0: "batch", 1: "time"})
                vocabularies["chars"] = chars.itos
                info["max_chars"] = self.options.char_encoder.max_chars

            def example(batch: int, time: int) -> Tuple[Tensor, ...]:
                ids, lengths = example_tokens(batch, time, vocab_size)
                if chars is None:
                    return ids, lengths
                words = batch + 2  # distinct words; every position points at one (1-based, 0 at padding)
                char_ids, char_lengths = example_tokens(words, time, len(chars))
                index = torch.randint(1, words + 1, (batch, time)).masked_fill(ids == 0, 0)
                return ids, lengths, char_ids, char_lengths, index

            doc = (
                "inputs: vocab ids padded with pad_id (words lower-cased first when lowercase_words); lengths: real words per row; "
                + ("chars, char_lengths, char_index: each distinct word's character ids (chars vocabulary, the word as written, "
                   "longer than max_chars: its first and last max_chars/2), padded, and for each position the row of its word + 1 (0 at padding); "
                   if chars is not None else "")
                + ("emissions plus the crf scores in the manifest give the best tags by Viterbi" if model.crf is not None
                   else "argmax(emissions) gives each word's tag")
            )
        if model.crf is not None:
            crf = model.crf
            info["crf"] = {
                "transitions": crf.transitions.tolist(), "start": crf.start.tolist(), "end": crf.end.tolist(),
                "score": "start[y_1] + sum_t emissions[t, y_t] + sum_t transitions[y_(t-1), y_t] + end[y_T]; the best y by Viterbi",
            }
        graph = ExportGraph(
            name="model", module=ExportedTagger(model), inputs=inputs, outputs=("emissions",), dynamic=dynamic, example=example, doc=doc,
        )
        return Exportable(graphs=[graph], vocabularies=vocabularies, tokenizers=tokenizers, info=info)

    def format_prediction(self, result: Dict[str, Any]) -> str:
        """``token/TAG`` pairs (vectors runs: the tags)."""
        if "tokens" not in result:
            return " ".join(result["tags"])
        return " ".join(f"{w}/{t}" for w, t in zip(result["tokens"], result["tags"]))

    @staticmethod
    def _frames(text: str, n: int) -> List[Any]:
        try:
            frames = json.loads(text)
        except ValueError:
            raise NlptkError(f"input {n + 1}: a vectors model reads one JSON list of frames per input, such as [[0.1, 0.2], [0.3, 0.4]]") from None
        if not isinstance(frames, list) or not frames:
            raise NlptkError(f"input {n + 1}: expected a non-empty JSON list of frames, got {text[:40]!r}")
        return frames


def tagging_metrics(predicted: List[List[str]], gold: List[List[str]], entity: bool, loss_sum: float) -> Dict[str, float]:
    """Token accuracy and mean loss per token; for BIO/BIOES tags also entity scores (seqeval).

    seqeval implements conlleval's rules: an entity is a maximal run that
    starts at a B- (or at an I- that does not continue an entity of its own
    type) and must match in type and both boundaries to count.
    """
    total = sum(len(g) for g in gold)
    correct = sum(p == g for ps, gs in zip(predicted, gold) for p, g in zip(ps, gs))
    metrics = {"accuracy": correct / max(total, 1)}
    if entity:
        from seqeval.metrics import classification_report, f1_score, precision_score, recall_score

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a type with no predictions scores 0; that is the point
            metrics["precision"] = float(precision_score(gold, predicted, zero_division=0))
            metrics["recall"] = float(recall_score(gold, predicted, zero_division=0))
            metrics["f1"] = float(f1_score(gold, predicted, zero_division=0))
            report = classification_report(gold, predicted, output_dict=True, zero_division=0)
        metrics["loss"] = loss_sum / max(total, 1)
        for name, scores in sorted(report.items()):
            if name.endswith(" avg"):
                continue
            metrics[f"{name}_precision"] = float(scores["precision"])
            metrics[f"{name}_recall"] = float(scores["recall"])
            metrics[f"{name}_f1"] = float(scores["f1-score"])
        return metrics
    metrics["loss"] = loss_sum / max(total, 1)
    return metrics
