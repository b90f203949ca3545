"""Many-to-many, "read everything, then write": sequence to sequence.

The shared encoder reads the source (bidirectional allowed); the core
decoder (:class:`nlptoolkit.RNNDecoder`) starts from the bridged final state
and writes the target one token at a time, attending over the encoder's
outputs unless ``attention: none``. Grapheme to phoneme (``hello`` ->
``HH AH0 L OW1``) and translation are the bundled recipes.

Training is teacher forcing: the decoder reads ``<bos> y1 .. yn`` and is
scored on ``y1 .. yn <eos>`` (with probability ``1 - teacher_forcing`` an
input is the model's own previous guess instead). Evaluation reports the
loss per target token and its perplexity on the reference, and decodes the
split (greedy or beam search, :mod:`nlptoolkit.search`) for BLEU and chrF
(sacrebleu), ``wer`` (share of outputs that are not exactly the reference)
and ``per`` (token edit distance summed over the split / reference tokens,
with rapidfuzz's Levenshtein).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nlptoolkit import (
    DecoderState, DecodingOptions, EncoderDecoder, ExportGraph, Exportable, Memory, NlptkError, RNNDecoder, RNNEncoder,
    SearchOptions, Task, TokenizerConfig, Vocabulary, at_least, build_tokenizer, column, decode, example_tokens, load_tokenizer,
    pad_batch, register_task,
)

Example = Tuple[List[int], Optional[List[int]]]  # (source ids, target ids without <bos>/<eos>; None when predicting)
TARGET_FOLDER = "target"  # the target side's tokenizer files live in this subfolder of the run


@dataclass
class Seq2SeqOptions(DecodingOptions):
    """The recipe's `task:` section for this task. The source side uses `data.tokenizer`.

    The decoding keys (beam_size, nbest, length_penalty, min_length,
    max_length, no_repeat_ngram) are the core's :class:`DecodingOptions`.
    """

    source_field: str = "source"
    target_field: str = "target"
    target_tokenizer: Optional[TokenizerConfig] = None  # null: the same settings as data.tokenizer
    # the decoder (null: as the encoder's)
    attention: Literal["none", "dot", "general", "additive"] = "general"
    input_feed: bool = False
    decoder_cell: Optional[Literal["rnn", "lstm", "gru"]] = None
    decoder_hidden_size: Optional[int] = at_least(1, None)
    decoder_layers: Optional[int] = at_least(1, None)
    decoder_embedding_dim: Optional[int] = at_least(1, None)
    dropout: float = at_least(0.0, 0.2, high=0.99)  # in the decoder: embeddings, between layers, before the output layer
    # training
    teacher_forcing: float = at_least(0.0, 1.0, high=1.0)  # share of steps that read the reference's previous token
    label_smoothing: float = at_least(0.0, 0.0, high=0.99)
    # decoding: the max_length of DecodingOptions, capped per batch at this times the longest source, + 5
    max_length_ratio: float = at_least(0.01, 2.0)


# ----------------------------------------------------------------------------
# Export: the encoder and one decoder step, with tensors for arguments
# ----------------------------------------------------------------------------
def state_names(model: EncoderDecoder) -> List[str]:
    """The decoder's state as named tensors: h (and c for an LSTM), and feed with input feeding."""
    decoder = model.decoder
    return (["h", "c"] if decoder.rnn.cell == "lstm" else ["h"]) + (["feed"] if decoder.input_feed else [])


class ExportedEncoder(nn.Module):
    """Source ids and lengths -> the decoder's first state, then (with attention) memory and keys."""

    def __init__(self, model: EncoderDecoder) -> None:
        super().__init__()
        self.model = model

    def forward(self, src: Tensor, lengths: Tensor) -> Tuple[Tensor, ...]:
        memory = self.model.encode(src, lengths)
        state = self.model.init_state(memory)
        rnn = state.rnn if isinstance(state.rnn, tuple) else (state.rnn,)
        feed = (state.feed,) if self.model.decoder.input_feed else ()
        attended = (memory.outputs, memory.keys) if memory.outputs is not None else ()
        return (*rnn, *feed, *attended)


class ExportedDecoderStep(nn.Module):
    """The previous token, the state (and memory, keys, source lengths) -> log-probabilities, the new
    state (and the attention weights): ``RNNDecoder.step``."""

    def __init__(self, model: EncoderDecoder) -> None:
        super().__init__()
        self.model = model
        self.names = state_names(model)
        self.attends = model.decoder.attention is not None

    def forward(self, prev: Tensor, *args: Tensor) -> Tuple[Tensor, ...]:
        given = dict(zip(self.names + (["memory", "keys", "lengths"] if self.attends else []), args))
        rnn = (given["h"], given["c"]) if "c" in given else given["h"]
        feed = given.get("feed", given["h"][-1])  # (read only with input feeding)
        memory = Memory()
        if self.attends:
            mask = torch.arange(given["memory"].shape[1], device=prev.device).unsqueeze(0) < given["lengths"].unsqueeze(1)
            memory = Memory(outputs=given["memory"], mask=mask, keys=given["keys"])
        log_probs, state, weights = self.model.decoder.step(prev, DecoderState(rnn, feed), memory)
        rnn_out = state.rnn if isinstance(state.rnn, tuple) else (state.rnn,)
        return (log_probs, *rnn_out, *((state.feed,) if "feed" in given else ()), *((weights,) if weights is not None else ()))


@register_task("seq2seq")
class Seq2SeqTask(Task):
    """Source sequence -> target sequence with an attentional encoder-decoder."""

    description = "Sequence to sequence (G2P, translation) with attention and beam search; metrics loss, perplexity, bleu, chrf, wer, per."
    Options = Seq2SeqOptions
    metrics = ("loss", "perplexity", "bleu", "chrf", "wer", "per")
    lower_is_better = frozenset({"loss", "perplexity", "wer", "per"})
    decodes = True  # --beam / --nbest (Task.set_decoding keeps them in self.decoding)

    @classmethod
    def check_recipe(cls, recipe: Any) -> None:
        check_recipe(recipe)  # the module's function below

    # -- data -----------------------------------------------------------------
    @property
    def target_config(self) -> Any:
        return self.options.target_tokenizer or self.recipe.data.tokenizer

    def setup(self, train: Any) -> None:
        sources, targets = self._texts(train, "train")
        src_cfg, tgt_cfg = self.recipe.data.tokenizer, self.target_config
        self.src_tok = build_tokenizer(src_cfg, sources)
        self.tgt_tok = build_tokenizer(tgt_cfg, targets)
        if self.run_dir is not None:
            self.src_tok.save(self.run_dir)
            (self.run_dir / TARGET_FOLDER).mkdir(parents=True, exist_ok=True)
            self.tgt_tok.save(self.run_dir / TARGET_FOLDER)
        self.src_vocab = Vocabulary.build((self.src_tok.tokenize(t) for t in sources), src_cfg.min_freq, src_cfg.max_size)
        self.tgt_vocab = Vocabulary.build((self.tgt_tok.tokenize(t) for t in targets), tgt_cfg.min_freq, tgt_cfg.max_size)

    def state_dict(self) -> Dict[str, Any]:
        return {"source_vocab": self.src_vocab.itos, "target_vocab": self.tgt_vocab.itos}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.src_tok = load_tokenizer(self.recipe.data.tokenizer, self.run_dir)
        self.tgt_tok = load_tokenizer(self.target_config, Path(self.run_dir) / TARGET_FOLDER)
        self.src_vocab = Vocabulary(state["source_vocab"])
        self.tgt_vocab = Vocabulary(state["target_vocab"])

    def _texts(self, dataset: Any, split: str) -> Tuple[List[str], List[str]]:
        o = self.options
        sources = column(dataset, o.source_field, split, "task.source_field")
        targets = column(dataset, o.target_field, split, "task.target_field")
        for field, values in ((o.source_field, sources), (o.target_field, targets)):
            for i, text in enumerate(values):
                if not isinstance(text, str):
                    raise self.data_error(split, i, f"field '{field}' is {type(text).__name__}, not text; fix or remove the row")
        return sources, targets

    def encode(self, dataset: Any, split: str) -> List[Example]:
        sources, targets = self._texts(dataset, split)
        examples = []
        for row, (src, tgt) in enumerate(zip(sources, targets)):
            src_ids = self.src_vocab.encode(self.src_tok.tokenize(src))
            tgt_ids = self.tgt_vocab.encode(self.tgt_tok.tokenize(tgt))
            if not src_ids:
                raise self.data_error(split, row, f"the source ('{self.options.source_field}') has no tokens; remove the row")
            if not tgt_ids:
                raise self.data_error(split, row, f"the target ('{self.options.target_field}') has no tokens; remove the row")
            examples.append((src_ids, tgt_ids))
        return examples

    def length(self, example: Example) -> int:
        return len(example[0])

    def collate(self, examples: Sequence[Example]) -> Dict[str, Tensor]:
        src, lengths = pad_batch([s for s, _ in examples])
        batch = {"src": src, "lengths": lengths}
        if examples and examples[0][1] is not None:
            bos, eos = self.tgt_vocab.bos_id, self.tgt_vocab.eos_id
            batch["inputs"], _ = pad_batch([[bos] + t for _, t in examples])
            batch["targets"], batch["target_lengths"] = pad_batch([t + [eos] for _, t in examples])
        return batch

    def count_tokens(self, batch: Dict[str, Tensor]) -> int:
        return int(batch["target_lengths"].sum())

    # -- model ----------------------------------------------------------------
    def build_model(self) -> nn.Module:
        enc_cfg, o = self.recipe.encoder, self.options
        encoder = RNNEncoder.from_config(enc_cfg, vocab_size=len(self.src_vocab))
        decoder = RNNDecoder(
            len(self.tgt_vocab),
            cell=o.decoder_cell or enc_cfg.cell,
            hidden_size=o.decoder_hidden_size or encoder.output_size,
            num_layers=o.decoder_layers or enc_cfg.num_layers,
            embedding_dim=o.decoder_embedding_dim or enc_cfg.embedding_dim,
            dropout=o.dropout,
            attention=o.attention,
            memory_size=encoder.output_size,
            input_feed=o.input_feed,
        )
        return EncoderDecoder(encoder, decoder)

    def training_step(self, model: nn.Module, batch: Dict[str, Tensor]) -> Tensor:
        logits, _ = model(batch["src"], batch["lengths"], batch["inputs"], self.options.teacher_forcing)
        return F.cross_entropy(
            logits.flatten(0, 1).float(), batch["targets"].flatten(),
            ignore_index=self.tgt_vocab.pad_id, label_smoothing=self.options.label_smoothing,
        )

    # -- evaluation -------------------------------------------------------------
    def search_options(self, longest_source: int) -> SearchOptions:
        """The recipe's decoding keys with ``--beam``/``--nbest``, the length capped for this batch's sources."""
        o, v = self.options, self.tgt_vocab
        return o.search_options(
            v.bos_id, v.eos_id, banned=(v.pad_id, v.bos_id), overrides=self.decoding,
            max_length=int(o.max_length_ratio * longest_source) + 5,
        )

    def evaluate_batch(self, model: nn.Module, batch: Dict[str, Tensor]) -> Dict[str, Any]:
        """Teacher-forced loss on the reference (summed over real target tokens, no label smoothing);
        then the batch decoded, with edit distance and exact matches counted against the references."""
        from rapidfuzz.distance import Levenshtein

        logits, _ = model(batch["src"], batch["lengths"], batch["inputs"])
        loss = F.cross_entropy(logits.flatten(0, 1).float(), batch["targets"].flatten(), ignore_index=self.tgt_vocab.pad_id, reduction="sum")
        best = [h[0].tokens for h in self._search(model, batch["src"], batch["lengths"])]
        refs = [t[: int(n) - 1].tolist() for t, n in zip(batch["targets"], batch["target_lengths"])]  # without <eos>
        return {
            "loss_sum": loss,
            "target_tokens": int(batch["target_lengths"].sum()),
            "edits": sum(Levenshtein.distance(h, r) for h, r in zip(best, refs)),
            "reference_tokens": sum(len(r) for r in refs),
            "wrong": sum(h != r for h, r in zip(best, refs)),
            "hypotheses": [self.detokenize(h) for h in best],
            "references": [self.detokenize(r) for r in refs],
        }

    def compute_metrics(self, totals: Dict[str, Any]) -> Dict[str, float]:
        import sacrebleu

        loss = totals["loss_sum"] / max(totals["target_tokens"], 1)
        hyps, refs = totals["hypotheses"], totals["references"]
        return {
            "loss": loss,
            "perplexity": math.exp(loss) if loss < 700 else math.inf,
            "bleu": sacrebleu.corpus_bleu(hyps, [refs]).score,
            "chrf": sacrebleu.corpus_chrf(hyps, [refs]).score,
            "wer": totals["wrong"] / max(len(hyps), 1),
            "per": totals["edits"] / max(totals["reference_tokens"], 1),
        }

    def _search(self, model: nn.Module, src: Tensor, lengths: Tensor, keep_attention: bool = False) -> List[List[Any]]:
        options = self.search_options(int(lengths.max()))
        options.keep_attention = keep_attention
        with model.decoder.frozen():
            return decode(model, src, lengths, options)

    def detokenize(self, ids: Sequence[int]) -> str:
        return self.tgt_tok.detokenize(self.tgt_vocab.decode(ids))

    # -- use ------------------------------------------------------------------
    def predict(self, model: nn.Module, texts: List[str]) -> List[Dict[str, Any]]:
        """The best output, its score, and the n-best list (``output``, ``score``) of each input."""
        examples = [(self.src_vocab.encode(self.src_tok.tokenize(t)) or [self.src_vocab.unk_id], None) for t in texts]
        found = self.collect(model, examples, lambda m, b: {"hyps": self._search(m, b["src"], b["lengths"])})["hyps"]
        results = []
        for text, hyps in zip(texts, found):
            nbest = [{"output": self.detokenize(h.tokens), "score": h.score, "log_prob": h.log_prob} for h in hyps]
            results.append({"input": text, "output": nbest[0]["output"], "score": nbest[0]["score"], "nbest": nbest})
        return results

    # -- export ---------------------------------------------------------------
    def exportable(self, model: nn.Module) -> Exportable:
        """``encoder`` reads padded sources; ``decoder_step`` writes one token per call (search it
        greedily or with a beam outside, starting from ``bos_id``)."""
        names = state_names(model)
        new_names = ["new_" + n for n in names]
        decoder, src_size, tgt_size = model.decoder, len(self.src_vocab), len(self.tgt_vocab)
        layers, hidden, width = decoder.rnn.num_layers, decoder.hidden_size, model.encoder.output_size
        attends = decoder.attention is not None
        attended = ["memory", "keys"] if attends else []
        keys_width = width if decoder.attention_kind == "dot" else hidden
        state_axes = {n: ({0: "batch"} if n.endswith("feed") else {1: "batch"}) for n in names + new_names}

        def state_example(batch: int) -> List[Tensor]:
            return [torch.randn(batch, hidden) * 0.5 if n == "feed" else torch.randn(layers, batch, hidden) * 0.5 for n in names]

        def step_example(batch: int, time: int) -> Tuple[Tensor, ...]:
            prev = torch.randint(1, tgt_size, (batch,))
            if not attends:
                return (prev, *state_example(batch))
            _, lengths = example_tokens(batch, time, 2)
            real = (torch.arange(time).unsqueeze(0) < lengths.unsqueeze(1)).unsqueeze(-1)
            memory, keys = torch.randn(batch, time, width) * real, torch.randn(batch, time, keys_width) * real
            return (prev, *state_example(batch), memory, keys, lengths)

        memory_axes = {"memory": {0: "batch", 1: "source_time"}, "keys": {0: "batch", 1: "source_time"}}
        encoder = ExportGraph(
            name="encoder", module=ExportedEncoder(model), inputs=["src", "lengths"], outputs=[*names, *attended],
            dynamic={"src": {0: "batch", 1: "source_time"}, "lengths": {0: "batch"}, **state_axes, **(memory_axes if attends else {})},
            example=lambda batch, time: example_tokens(batch, time, src_size),
            doc="source ids (source_vocab, padded with pad_id) and lengths -> the decoder's first state"
                + (", and the memory and keys every step reads" if attends else ""),
        )
        step = ExportGraph(
            name="decoder_step", module=ExportedDecoderStep(model),
            inputs=["prev", *names, *attended, *(["lengths"] if attends else [])],
            outputs=["log_probs", *new_names, *(["attention"] if attends else [])],
            dynamic={"prev": {0: "batch"}, "log_probs": {0: "batch"}, **state_axes,
                     **({**memory_axes, "lengths": {0: "batch"}, "attention": {0: "batch", 1: "source_time"}} if attends else {})},
            example=step_example,
            doc="the previous target token (bos_id first) and the state -> log-probabilities of the next token (target_vocab) "
                "and the new state; stop at eos_id",
        )
        v = self.tgt_vocab
        info = {
            "pad_id": v.pad_id, "unk_id": v.unk_id, "bos_id": v.bos_id, "eos_id": v.eos_id, "never_generate": [v.pad_id, v.bos_id],
            "state": {"names": names, "shape": [layers, "batch", hidden], "feed_shape": ["batch", hidden]},
            "decoding": {"beam_size": self.options.beam_size, "length_penalty": self.options.length_penalty,
                         "max_length": self.options.max_length, "max_length_ratio": self.options.max_length_ratio,
                         "greedy": "prev = bos_id; each step, the argmax of log_probs over the ids not in never_generate; "
                                   "stop at eos_id or after max_length - 1 tokens, where max_length is "
                                   "min(max_length, int(max_length_ratio * the longest source) + 5)"},
        }
        return Exportable(
            graphs=[encoder, step],
            vocabularies={"source_vocab": self.src_vocab.itos, "target_vocab": v.itos},
            tokenizers={"source": self.src_tok, "target": self.tgt_tok}, info=info,
        )

    def format_prediction(self, result: Dict[str, Any]) -> str:
        """``input<TAB>output``; with --nbest N, then one ``  score<TAB>output`` line per alternative."""
        if len(result["nbest"]) == 1:
            return f"{result['input']}\t{result['output']}"
        lines = [result["input"]] + [f"  {h['score']:.4f}\t{h['output']}" for h in result["nbest"]]
        return "\n".join(lines)

    def attention_of(self, model: nn.Module, text: str) -> Tuple[List[str], List[str], Tensor]:
        """Source tokens, output tokens (with <eos>) and the (output, source) attention weights of one input."""
        ids = self.src_vocab.encode(self.src_tok.tokenize(text)) or [self.src_vocab.unk_id]
        src, lengths = pad_batch([ids])
        model.eval()
        hyp = self._search(model, src.to(self.device), lengths.to(self.device), keep_attention=True)[0][0]
        if hyp.attention is None:
            raise NlptkError("this model has attention: none; there are no attention weights to show")
        return self.src_vocab.decode(ids), self.tgt_vocab.decode(hyp.tokens) + [Vocabulary.EOS], hyp.attention.cpu()


def check_recipe(recipe: Any) -> None:
    """A mistake in the recipe that would only show up later, named now (the options check their own ranges)."""
    o = recipe.task_options
    hidden = o.decoder_hidden_size or recipe.encoder.hidden_size * (2 if recipe.encoder.bidirectional else 1)
    memory = recipe.encoder.hidden_size * (2 if recipe.encoder.bidirectional else 1)
    if o.attention == "dot" and hidden != memory:
        raise NlptkError(
            f"task.attention: dot needs task.decoder_hidden_size ({hidden}) to equal the encoder's output size ({memory}); "
            "use attention: general, or make the sizes equal"
        )
