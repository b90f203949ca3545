"""One-to-many: write a caption (a sentence) from one fixed-size feature vector.

The lecture's one-to-many shape: one input (an image's features), then a
generated sequence. The writing is done by the core :class:`RNNDecoder` and
the core greedy / beam search, the same code that seq2seq uses; this task
only decides how the features enter the decoder (``condition``):

* ``init_state``: a learned ``tanh(W f + b)`` becomes the decoder's initial
  hidden state (the core :class:`Bridge`, given the features as a one-layer
  "encoder state"); the steps read ``<bos>`` and then the previous tokens.
* ``first_input``: a learned ``W f + b`` (embedding-sized) is the first
  step's input in place of ``<bos>`` (``Memory.first_input``); the state
  starts at zero and later steps read the previous tokens.
* ``later_inputs: zeros`` (with ``first_input``): the lecture's drawing,
  where every step after the first reads a zero vector, so the features,
  carried in the state, are all the decoder ever sees
  (``RNNDecoder(token_inputs=False)``).

In the search's terms (see :mod:`nlptoolkit.search`): ``encode(features)``
gives a :class:`Memory` that holds the features as the decoder will read
them; ``init_state``, ``step`` and ``reorder`` are the decoder's.

Metrics: ``loss`` (teacher-forced, nats per caption token, ``<eos>``
included), ``exact_match`` (share of decoded captions equal to the
reference, token for token) and ``bleu`` (sacrebleu's corpus BLEU, 0..100).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Literal, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nlptoolkit import (
    Bridge, DecodingOptions, Memory, NlptkError, RNNDecoder, SearchOptions, Task, Vocabulary, at_least, build_tokenizer, column, decode,
    feature_matrix, load_tokenizer, pad_batch, register_task,
)

Example = Tuple[Tensor, List[int]]  # (features (F,), caption token ids without <bos>/<eos>)


@dataclass
class CaptioningOptions(DecodingOptions):
    """The recipe's `task:` section for this task; the decoding keys are the core's :class:`DecodingOptions`."""

    features_field: str = "features"  # a list of floats per row, the same size in every row
    caption_field: str = "caption"  # the sentence to write, split by data.tokenizer
    condition: Literal["init_state", "first_input"] = "init_state"  # where the features enter the decoder
    later_inputs: Literal["tokens", "zeros"] = "tokens"  # what steps after the first read (zeros: first_input only)
    feature_dropout: float = at_least(0.0, 0.2, high=0.99)  # on the features, before they are projected
    max_length: int = at_least(1, 50)  # tokens a caption may have, <eos> included

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.later_inputs == "zeros" and self.condition != "first_input":
            raise NlptkError(
                "task.later_inputs: 'zeros' leaves the features only the first input to enter by, so it needs "
                "`condition: first_input`; set that, or use `later_inputs: tokens`"
            )


class CaptioningModel(nn.Module):
    """Features in, a caption out: the conditioning (see the module docstring) and an :class:`RNNDecoder`.

    It honours the search contract (``encode``, ``init_state``, ``step``,
    ``reorder``); ``forward`` gives teacher-forced logits for training.
    """

    def __init__(self, decoder: RNNDecoder, feature_size: int, condition: str, feature_dropout: float) -> None:
        super().__init__()
        self.decoder = decoder
        self.feature_size = feature_size
        self.dropout = nn.Dropout(feature_dropout)
        rnn = decoder.rnn
        self.bridge: Optional[Bridge] = None
        self.first_input: Optional[nn.Linear] = None
        if condition == "init_state":
            self.bridge = Bridge("rnn", feature_size, 1, 1, rnn.cell, decoder.hidden_size, rnn.num_layers, project=True)
        else:
            self.first_input = nn.Linear(feature_size, decoder.embedding.embedding_dim)

    def encode(self, features: Tensor, lengths: Optional[Tensor] = None) -> Memory:
        """(B, F) features -> the decoder's memory: an initial state to bridge, or a first input."""
        f = self.dropout(features)
        if self.bridge is not None:
            return Memory(state=f.unsqueeze(0))  # a one-layer, one-direction "encoder state"
        return Memory(first_input=self.first_input(f))

    def init_state(self, memory: Memory) -> Any:
        rows = memory.state if memory.state is not None else memory.first_input.unsqueeze(0)
        return self.decoder.init_state(memory, self.bridge, batch_size=rows.shape[1])

    def step(self, prev_tokens: Tensor, state: Any, memory: Memory) -> Tuple[Tensor, Any, Optional[Tensor]]:
        return self.decoder.step(prev_tokens, state, memory)

    def reorder(self, state: Any, memory: Optional[Memory], order: Tensor) -> Tuple[Any, Optional[Memory]]:
        return self.decoder.reorder(state, memory, order)

    def forward(self, features: Tensor, inputs: Tensor) -> Tensor:
        """(B, F) features and (B, T) decoder inputs (``<bos>``, then the caption) -> (B, T, V) logits."""
        memory = self.encode(features)
        logits, _ = self.decoder(inputs, self.init_state(memory), memory)
        return logits


@register_task("captioning")
class CaptioningTask(Task):
    """One-to-many: a caption for each fixed-size feature vector (e.g. image features)."""

    description = "Write a caption from a feature vector (one-to-many), e.g. image features; metrics exact_match, bleu."
    Options = CaptioningOptions
    metrics = ("exact_match", "bleu", "loss")
    input_kind = "features"
    decodes = True  # --beam / --nbest (Task.set_decoding keeps them in self.decoding)

    # -- data -----------------------------------------------------------------
    def setup(self, train: Any) -> None:
        if self.recipe.encoder.bidirectional:
            raise NlptkError("encoder.bidirectional: the captioning decoder writes left to right; set it to false")
        captions = self._captions(train, "train")
        cfg = self.recipe.data.tokenizer
        self.tokenizer = build_tokenizer(cfg, captions)
        if self.run_dir is not None:
            self.tokenizer.save(self.run_dir)
        self.vocab = Vocabulary.build((self.tokenizer.tokenize(c) for c in captions), cfg.min_freq, cfg.max_size)
        self.feature_size = int(self._features(train, "train", None).shape[1])

    def state_dict(self) -> Dict[str, Any]:
        return {"vocab": self.vocab.itos, "feature_size": self.feature_size}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.tokenizer = load_tokenizer(self.recipe.data.tokenizer, self.run_dir)
        self.vocab = Vocabulary(state["vocab"])
        self.feature_size = int(state["feature_size"])

    def _captions(self, dataset: Any, split: str) -> List[str]:
        captions = column(dataset, self.options.caption_field, split, "task.caption_field")
        for i, caption in enumerate(captions):
            if not isinstance(caption, str):
                raise self.data_error(split, i, f"field '{self.options.caption_field}' is {caption!r}, not text; every row needs a caption")
        return list(captions)

    def _features(self, dataset: Any, split: str, size: Optional[int]) -> Tensor:
        """The features column as one (N, F) tensor; the error names the file and row of a bad vector."""
        field = self.options.features_field
        column(dataset, field, split, "task.features_field")  # a clear error when the field is missing
        values = dataset.select_columns([field]).with_format("numpy")[:][field]  # no Python floats for a numeric column
        return feature_matrix(values, size, lambda i: f"{self.sources.get(split, f'the {split} split')}, row {i + 1}", f"field '{field}'")

    def encode(self, dataset: Any, split: str) -> List[Example]:
        features = self._features(dataset, split, self.feature_size)
        examples = []
        for row, caption in enumerate(self._captions(dataset, split)):
            ids = self.vocab.encode(self.tokenizer.tokenize(caption))
            if not ids:
                raise self.data_error(split, row, f"field '{self.options.caption_field}' has no tokens (empty or only spaces); give a caption or remove the row")
            examples.append((features[row], ids))
        return examples

    def length(self, example: Example) -> int:
        return len(example[1]) + 1

    def collate(self, examples: Sequence[Example]) -> Dict[str, Any]:
        bos, eos = self.vocab.bos_id, self.vocab.eos_id
        inputs, lengths = pad_batch([[bos] + ids for _, ids in examples])
        targets, _ = pad_batch([ids + [eos] for _, ids in examples])
        return {
            "features": torch.stack([f for f, _ in examples]), "inputs": inputs, "targets": targets, "lengths": lengths,
            "references": [ids for _, ids in examples],
        }

    # -- model ----------------------------------------------------------------
    def build_model(self) -> nn.Module:
        enc = self.recipe.encoder
        later_tokens = self.options.later_inputs == "tokens"
        decoder = RNNDecoder(
            len(self.vocab), cell=enc.cell, hidden_size=enc.hidden_size, num_layers=enc.num_layers,
            embedding_dim=enc.embedding_dim, dropout=enc.dropout, attention="none", token_inputs=later_tokens,
        )
        return CaptioningModel(decoder, self.feature_size, self.options.condition, self.options.feature_dropout)

    def training_step(self, model: nn.Module, batch: Dict[str, Any]) -> Tensor:
        logits = model(batch["features"], batch["inputs"])
        return F.cross_entropy(logits.flatten(0, 1).float(), batch["targets"].flatten(), ignore_index=0)

    # -- evaluation -----------------------------------------------------------
    def search_options(self) -> SearchOptions:
        """The recipe's decoding keys, with what ``set_decoding`` (``--beam``, ``--nbest``) changed."""
        v = self.vocab
        return self.options.search_options(v.bos_id, v.eos_id, banned=(v.pad_id, v.bos_id), overrides=self.decoding)

    def caption(self, model: nn.Module, features: Tensor, options: SearchOptions) -> List[List[Any]]:
        """The search's hypotheses for a (B, F) batch of features, through the decoder's fast frozen path."""
        with model.decoder.frozen():
            return decode(model, features, None, options)

    def evaluate_batch(self, model: nn.Module, batch: Dict[str, Any]) -> Dict[str, Any]:
        logits = model(batch["features"], batch["inputs"])
        loss_sum = F.cross_entropy(logits.flatten(0, 1).float(), batch["targets"].flatten(), ignore_index=0, reduction="sum")
        hypotheses = [hyps[0].tokens for hyps in self.caption(model, batch["features"], self.search_options())]
        return {"loss_sum": loss_sum, "tokens": int((batch["targets"] != 0).sum()), "hypotheses": hypotheses, "references": batch["references"]}

    def compute_metrics(self, totals: Dict[str, Any]) -> Dict[str, float]:
        import sacrebleu

        hyps, refs = totals["hypotheses"], totals["references"]
        exact = sum(h == r for h, r in zip(hyps, refs)) / len(refs)
        bleu = sacrebleu.corpus_bleu([self.detokenize(h) for h in hyps], [[self.detokenize(r) for r in refs]]).score
        return {"exact_match": exact, "bleu": bleu, "loss": totals["loss_sum"] / max(totals["tokens"], 1)}

    def detokenize(self, ids: Sequence[int]) -> str:
        return self.tokenizer.detokenize(self.vocab.decode(ids))

    # -- use ------------------------------------------------------------------
    def predict(self, model: nn.Module, inputs: List[Any]) -> List[Dict[str, Any]]:
        """A caption and its score for each feature vector, and the n-best list (``--beam``, ``--nbest``)."""
        if any(isinstance(x, str) for x in inputs):
            raise NlptkError("a captioning run reads feature vectors, not text; give them with `nlptk predict RUN --features FILE`")
        features = feature_matrix(inputs, self.feature_size, lambda i: f"input {i + 1}")
        examples = [(f, []) for f in features]  # no caption: only the features are read
        found = self.collect(model, examples, lambda m, b: {"hyps": self.caption(m, b["features"], self.search_options())})["hyps"]
        results = []
        for hyps in found:
            nbest = [{"caption": self.detokenize(h.tokens), "score": h.score, "log_prob": h.log_prob} for h in hyps]
            results.append({"caption": nbest[0]["caption"], "score": nbest[0]["score"], "nbest": nbest})
        return results

    def read_text(self, text: str) -> Tuple[List[str], List[int]]:
        """Refused: the model reads a feature vector, and a caption's words are its output, not its input."""
        raise NlptkError(
            "a captioning run reads feature vectors, not text, so `inspect` and `gradients` have no input tokens to show; "
            "use them on a run whose encoder reads text"
        )

    def format_prediction(self, result: Dict[str, Any]) -> str:
        """The caption; with --nbest N, one ``score<TAB>caption`` line per alternative, best first."""
        if len(result["nbest"]) == 1:
            return result["caption"]
        return "\n".join(f"{alt['score']:.4f}\t{alt['caption']}" for alt in result["nbest"])
