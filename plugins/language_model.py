"""Language modelling: predict the next token of one long text, char-rnn style.

The corpus is one stream of tokens (characters, words or subword pieces). For
training it is cut into B parallel *contiguous* streams (B = train.batch_size)
and read in chunks of ``bptt`` steps; batch k holds chunk k of every stream::

    tokens   a b c d e f g h i j k l m         B = 2, bptt = 3
    stream 0 a b c d e f                       batch 0: inputs [a b c] [g h i]  targets [b c d] [h i j]
    stream 1 g h i j k l                       batch 1: inputs [d e]   [j k]    targets [e f]   [k l]
                                               (m is dropped so that the streams are equally long)

The hidden state at the end of chunk k is where chunk k+1 continues, so it is
carried over and *detached*: gradients flow back at most ``bptt`` steps
(truncated BPTT) while the model still reads the whole stream. It is reset
at the start of every epoch.

Evaluation reads the validation stream the same way, with carried state, so
the loss is the loss of the whole text (not of shuffled windows). Generation
reads the prompt once and then costs one RNN step per new token.
"""
from __future__ import annotations

import math
import sys
from array import array
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Literal, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nlptoolkit import (
    ExportGraph, Exportable, NlptkError, RNNEncoder, Stepper, Task, Vocabulary, build_tokenizer, example_tokens, is_streamed,
    iter_column, load_tokenizer, register_task,
)

State = Union[Tensor, Tuple[Tensor, Tensor]]


@dataclass
class LanguageModelOptions:
    """The recipe's `task:` section for this task."""

    text_field: str = "text"
    bptt: int = 100  # steps per chunk: how far back gradients flow
    dropout: float = 0.1  # on the encoder's outputs, before the output layer
    tie_weights: bool = False  # one matrix for embedding and output (needs embedding_dim == hidden_size)
    eval_streams: int = 16  # parallel streams when evaluating (fewer if the text is short)
    sample_tokens: int = 200  # a sample printed after each evaluation; 0: none
    sample_prompt: str = ""
    sample_temperature: float = 0.8
    stream_window: int = 100  # data.streaming only: chunks of bptt tokens per stream read into memory at a time; the state restarts between windows
    # `nlptk generate`'s weights: fp32, or fp16/int8 (2-4x fewer bytes a step, faster on a CPU), used only
    # when they moved the validation loss by at most generation_tolerance (measured once, kept in the run folder)
    generation_weights: Literal["fp32", "fp16", "int8"] = "fp32"
    generation_tolerance: float = 0.005  # nats per token


# ----------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------
class LanguageModel(nn.Module):
    """Embedding and unidirectional RNN (the shared encoder), dropout, then a linear layer to token scores."""

    def __init__(self, encoder: RNNEncoder, vocab_size: int, dropout: float, tie_weights: bool) -> None:
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.decoder = nn.Linear(encoder.output_size, vocab_size)
        if tie_weights:  # Press & Wolf 2017: fewer parameters, usually lower perplexity
            self.decoder.weight = encoder.embedding.weight

    def forward(self, tokens: Tensor, state: Optional[State] = None) -> Tuple[Tensor, State]:
        """(B, T) token ids and the state to start from -> (B, T, V) scores and the state to continue from."""
        out = self.encoder(tokens, state=state)
        return self.decoder(self.dropout(out.outputs)), out.state


class SteppedModel(nn.Module):
    """A language model read one token at a time through a :class:`Stepper`, as generation reads it.

    Same inputs and outputs as ``LanguageModel.forward`` (in eval mode), so the
    task's own evaluation measures what a weight storage costs in loss.
    """

    def __init__(self, model: LanguageModel, weights: str) -> None:
        super().__init__()
        self.model = model
        self.step = Stepper(model.encoder, weights)

    def forward(self, tokens: Tensor, state: Optional[State] = None) -> Tuple[Tensor, State]:
        outputs = []
        with one_thread():  # as generation runs (and small products gain nothing from a second thread)
            for t in range(tokens.shape[1]):
                output, state = self.step(tokens[:, t], state)
                outputs.append(output)
            return self.model.decoder(torch.stack(outputs, dim=1)), state


class ExportedReader(nn.Module):
    """`nlptk export`'s encoder: padded ids, lengths and a state -> scores at every position and
    the state at each row's own end (what ``LanguageModel.forward`` gives per sequence)."""

    def __init__(self, model: LanguageModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: Tensor, lengths: Tensor, *state: Tensor) -> Tuple[Tensor, ...]:
        out = self.model.encoder(tokens, lengths, state=state if len(state) == 2 else state[0])
        new = out.state if isinstance(out.state, tuple) else (out.state,)
        return (self.model.decoder(out.outputs), *new)


class ExportedStep(nn.Module):
    """`nlptk export`'s decoder step: one token per row and the state -> next-token scores and the new state."""

    def __init__(self, model: LanguageModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, token: Tensor, *state: Tensor) -> Tuple[Tensor, ...]:
        output, new = self.model.encoder.step(token, state if len(state) == 2 else state[0])
        return (self.model.decoder(output), *(new if isinstance(new, tuple) else (new,)))


def detach(state: State) -> State:
    """Cut the graph behind a carried state: the next chunk's gradients stop here."""
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


# ----------------------------------------------------------------------------
# Stream batches
# ----------------------------------------------------------------------------
def split_streams(ids: Tensor, streams: int) -> Tensor:
    """(streams, L) rows, each a contiguous stretch of ``ids``; the tail that fills no row is dropped."""
    length = ids.numel() // streams
    return ids[: streams * length].view(streams, length)


class StreamBatches:
    """Chunks of ``bptt`` steps read across parallel streams, in order.

    Never shuffled: the hidden state after batch k is where batch k+1 starts.
    Every stream has the same length, so nothing is padded.
    """

    def __init__(self, rows: Tensor, bptt: int) -> None:
        self.rows, self.bptt = rows, bptt

    def __len__(self) -> int:
        return -(-(self.rows.shape[1] - 1) // self.bptt)  # ceil: a shorter last chunk

    def __iter__(self) -> Iterator[Dict[str, Tensor]]:
        return self.from_position(0)

    def from_position(self, start: int) -> Iterator[Dict[str, Tensor]]:
        """Batches from number ``start`` on (a resumed run skips what it saw)."""
        for k in range(start, len(self)):
            chunk = self.rows[:, k * self.bptt : (k + 1) * self.bptt + 1]
            yield {"inputs": chunk[:, :-1].long(), "targets": chunk[:, 1:].long()}

    def padding_fraction(self) -> float:
        return 0.0


class TokenStream:
    """A streamed split's token ids, a line at a time, read as they are asked for (data.streaming)."""

    def __init__(self, task: "LanguageModelTask", dataset: Any, split: str) -> None:
        self.task, self.dataset, self.split = task, dataset, split

    def __iter__(self) -> Iterator[List[int]]:
        for line in self.task._lines(self.dataset, self.split):
            yield self.task.vocab.encode(self.task._tokens(line))


class WindowBatches:
    """Stream batches over a :class:`TokenStream`, one window at a time.

    A stream's length is not known ahead, so it cannot be cut into ``streams``
    contiguous parts as a whole. Instead each window of ``streams x window``
    tokens is cut that way and read as :class:`StreamBatches` reads a whole
    text; the first batch of each window has ``reset_state`` (the hidden
    state of row b does not continue into the next window's row b). A text
    shorter than one window gives exactly the batches of the in-memory path.
    Memory: one window of int32 ids.
    """

    def __init__(self, tokens: TokenStream, streams: int, bptt: int, window: int, rank: int = 0, world_size: int = 1, train: bool = True) -> None:
        self.tokens, self.streams, self.bptt = tokens, streams, bptt
        self.window, self.rank, self.world_size, self.train = window, rank, world_size, train

    def __iter__(self) -> Iterator[Dict[str, Tensor]]:
        return self.from_position(0)

    def from_position(self, start: int) -> Iterator[Dict[str, Any]]:
        """Batches from number ``start`` on; the windows before it are read again and skipped."""
        number = 0
        rows_total = self.streams * self.world_size
        size = rows_total * self.window * self.bptt
        for ids in self._windows(size):
            if self.train:
                if ids.numel() < rows_total * (self.bptt + 1):
                    continue  # a last window too short for a chunk on every stream
                rows = split_streams(ids, rows_total)[self.rank * self.streams : (self.rank + 1) * self.streams]
            else:
                rows = split_streams(ids, max(1, min(self.streams, ids.numel() // (self.bptt + 1))))
            for k, batch in enumerate(StreamBatches(rows, self.bptt)):
                if number >= start:
                    batch["reset_state"] = k == 0
                    yield batch
                number += 1
        if number == 0:
            raise NlptkError(
                f"{self.tokens.task.sources.get(self.tokens.split, f'the {self.tokens.split} split')}: too few tokens for one chunk of "
                f"{rows_total if self.train else 1} stream(s) of task.bptt {self.bptt} + 1; lower train.batch_size or task.bptt, or give more text"
            )

    def _windows(self, size: int) -> Iterator[Tensor]:
        buffer = array("i")
        for line_ids in self.tokens:
            buffer.extend(line_ids)
            while len(buffer) >= size + 1:
                yield torch.frombuffer(buffer[: size + 1], dtype=torch.int32)
                del buffer[:size]  # the window's last token is also the next window's first input
        if len(buffer) >= 2:
            yield torch.frombuffer(buffer, dtype=torch.int32)

    def padding_fraction(self) -> float:
        return 0.0


# ----------------------------------------------------------------------------
# Text <-> tokens
# ----------------------------------------------------------------------------
def pick_token(logits: Tensor, temperature: float, top_k: Optional[int], generator: Optional[torch.Generator]) -> int:
    """Greedy at temperature 0; otherwise sample from softmax(logits / T), over the top k if given."""
    if temperature == 0:
        return int(logits.argmax())
    logits = logits / temperature
    if top_k is not None and top_k < logits.numel():
        kth = logits.topk(top_k).values[-1]
        logits = logits.masked_fill(logits < kth, -math.inf)
    # An exponential race: with E_i ~ Exp(1), argmax p_i / E_i is drawn with
    # probability p_i. torch.multinomial(p, 1) computes exactly this, but its
    # input checks cost more than the draw at one token per call.
    probs = logits.softmax(-1)
    return int((probs / torch.empty_like(probs).exponential_(generator=generator)).argmax())


@torch.no_grad()
def sample_ids(
    model: LanguageModel, context: List[int], max_tokens: int, temperature: float, top_k: Optional[int],
    banned: Tensor, generator: Optional[torch.Generator] = None, weights: str = "fp32",
) -> Iterator[int]:
    """New token ids after ``context``.

    The context is read once, in one call; after that each new token is a
    single step from the carried state, so n tokens cost n steps, not n^2/2.
    ``banned`` is added to the scores (-inf for tokens that are never output).
    ``weights``: the steps' weight storage (``Stepper``).
    Torch runs on one thread while this generator is being iterated.
    """
    with one_thread():
        logits, state = model(torch.tensor([context], device=banned.device))
        scores = logits[0, -1]
        step = stepper_for(model, weights)  # weights arranged once for fast single steps
        ids = torch.arange(banned.numel(), device=banned.device)  # a step's input is a slice of this (no new tensor a token)
        for i in range(max_tokens):
            next_id = pick_token(scores + banned, temperature, top_k, generator)
            yield next_id
            if i + 1 < max_tokens:  # the step for a token nobody asks for is skipped
                output, state = step(ids[next_id:next_id + 1], state)
                scores = model.decoder(output)[0]


def stepper_for(model: LanguageModel, weights: str) -> Stepper:
    """A :class:`Stepper` for the model's encoder; with fp16/int8 weights one kept on the model and reused.

    Quantizing and packing the weights costs ~50 ms, a tenth of a second's
    generation, on every request of a server. The kept one is rebuilt when a
    weight changed since (training or ``load_state_dict`` updates a tensor in
    place, which bumps its version counter). fp32 is cheap to arrange and is
    built fresh each time, as during training.
    """
    if weights == "fp32":
        return Stepper(model.encoder)
    versions = tuple(p._version for p in model.encoder.parameters())
    kept = model.__dict__.setdefault("_kept_steppers", {})
    if weights not in kept or kept[weights][0] != versions:
        kept[weights] = (versions, Stepper(model.encoder, weights))
    return kept[weights][1]


@contextmanager
def one_thread() -> Iterator[None]:
    """One intra-op thread while generating.

    At batch 1 each step is a few matrix-vector products of ~1 ms in all;
    splitting them over threads costs more in synchronisation than it saves,
    and far more when other processes share the cores (measured on a busy
    2-core machine: 2.4x slower with 2 threads). Restored afterwards.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ----------------------------------------------------------------------------
# The task
# ----------------------------------------------------------------------------
@register_task("language_model")
class LanguageModelTask(Task):
    """Next-token prediction over a text stream; reports loss, perplexity and (char) bpc; generates text."""

    description = "Language model (char, word or subword) trained with truncated BPTT; metrics loss, perplexity, bpc; `nlptk generate`."
    Options = LanguageModelOptions
    shuffle_split = False  # a carved validation split is the end of the text, not random lines
    streams = True  # data.streaming: the text is read a window at a time (WindowBatches)
    metrics = ("loss", "perplexity", "bpc")

    @classmethod
    def reported_metrics(cls, recipe: Any) -> Sequence[str]:
        """Bits per character only for a char model: a word or piece is not a character."""
        return cls.metrics if recipe.data.tokenizer.kind == "char" else ("loss", "perplexity")

    @classmethod
    def check_recipe(cls, recipe: Any) -> None:
        check_recipe(recipe)  # the module's function below

    def __init__(self, recipe: Any, run_dir: Any = None) -> None:
        super().__init__(recipe, run_dir)
        self.kind = recipe.data.tokenizer.kind
        self.carried: Optional[State] = None  # the training state handed from chunk to chunk
        self.eval_state: Optional[State] = None  # the same, within one evaluation pass

    # -- data -----------------------------------------------------------------
    def setup(self, train: Any) -> None:
        cfg = self.recipe.data.tokenizer
        lines = (line.rstrip("\n") for line in self._lines(train, "train")) if self.kind == "sentencepiece" else None
        self.tokenizer = build_tokenizer(cfg, lines)
        if self.run_dir is not None:
            self.tokenizer.save(self.run_dir)
        self.vocab = Vocabulary.build((self._tokens(line) for line in self._lines(train, "train")), cfg.min_freq, cfg.max_size)

    def state_dict(self) -> Dict[str, Any]:
        return {"vocab": self.vocab.itos}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.tokenizer = load_tokenizer(self.recipe.data.tokenizer, self.run_dir)
        self.vocab = Vocabulary(state["vocab"])

    def _lines(self, dataset: Any, split: str) -> Iterator[str]:
        """The split as the lines of one text, streamed.

        Rows of a `text` file keep their line breaks, so their concatenation is
        the file; rows without one (json, csv) are taken as separate lines.
        """
        field = self.options.text_field
        rows = (row.get(field) for row in dataset) if is_streamed(dataset) else iter_column(dataset, field, split, "task.text_field")
        previous: Optional[str] = None
        for i, row in enumerate(rows):  # one row behind: the last row is only known at the end
            if not isinstance(row, str):
                raise self.data_error(split, i, f"field '{field}' is {type(row).__name__}, not text; fix or remove the row (or set task.text_field)")
            if previous is not None:
                yield previous if previous.endswith("\n") else previous + "\n"
            previous = row
        if previous is not None:
            yield previous

    def _tokens(self, text: str, end_last_line: bool = True) -> List[str]:
        """Tokens of a text. Characters keep the newline as a token; words and
        pieces get one ``<eos>`` per line instead (Mikolov's PTB convention).
        ``end_last_line=False`` leaves an unfinished last line open (a prompt)."""
        if self.kind == "char":
            return self.tokenizer.tokenize(text)
        lines = text.split("\n")
        last = lines.pop()  # "" when the text ends with a line break
        tokens = [t for line in lines for t in (*self.tokenizer.tokenize(line), Vocabulary.EOS)]
        if last:
            tokens += self.tokenizer.tokenize(last) + ([Vocabulary.EOS] if end_last_line else [])
        return tokens

    def encode(self, dataset: Any, split: str) -> Union[Tensor, TokenStream]:
        """The split as one 1-D int32 tensor of token ids, built line by line.

        4 bytes a token and no Python object per token: a 200 MB corpus
        becomes an 800 MB buffer, and batches are made from views of it.
        A streamed split (data.streaming) stays a TokenStream, read as batches need it.
        """
        if is_streamed(dataset):
            return TokenStream(self, dataset, split)
        buffer = array("i")
        for line in self._lines(dataset, split):
            buffer.extend(self.vocab.encode(self._tokens(line)))
        ids = torch.frombuffer(buffer, dtype=torch.int32) if buffer else torch.zeros(0, dtype=torch.int32)
        if ids.numel() < 2:
            raise NlptkError(f"{self.sources.get(split, f'the {split} split')}: {ids.numel()} token(s); a language model needs at least 2 (one input, one target)")
        return ids

    def batches(self, examples: Tensor, train: bool, epoch: int = 0, rank: int = 0, world_size: int = 1) -> StreamBatches:
        """Training: train.batch_size streams per process. Evaluation: up to task.eval_streams streams."""
        bptt = self.options.bptt
        if isinstance(examples, TokenStream):
            streams = self.recipe.train.batch_size if train else self.options.eval_streams
            return WindowBatches(examples, streams, bptt, self.options.stream_window, rank if train else 0, world_size if train else 1, train)
        if not train:
            streams = max(1, min(self.options.eval_streams, examples.numel() // (bptt + 1)))
            return StreamBatches(split_streams(examples, streams), bptt)
        streams = self.recipe.train.batch_size
        needed = streams * world_size * (bptt + 1)
        if examples.numel() < needed:
            procs = f" x {world_size} processes" if world_size > 1 else ""
            raise NlptkError(
                f"{self.sources.get('train', 'the train split')}: {examples.numel():,} tokens are too few for one training chunk: "
                f"train.batch_size {streams} streams{procs} of task.bptt {bptt} + 1 tokens need at least {needed:,}; "
                f"lower train.batch_size or task.bptt, or give more text"
            )
        rows = split_streams(examples, streams * world_size)[rank * streams : (rank + 1) * streams]
        return StreamBatches(rows, bptt)

    def count_tokens(self, batch: Dict[str, Tensor]) -> int:
        return batch["targets"].numel()

    # -- model ----------------------------------------------------------------
    def build_model(self) -> nn.Module:
        encoder = RNNEncoder.from_config(self.recipe.encoder, vocab_size=len(self.vocab))
        return LanguageModel(encoder, len(self.vocab), self.options.dropout, self.options.tie_weights)

    def training_step(self, model: nn.Module, batch: Dict[str, Tensor]) -> Tensor:
        if batch.get("reset_state"):  # a new window of a streamed text
            self.carried = None
        logits, state = model(batch["inputs"], self.carried)
        self.carried = detach(state)
        return F.cross_entropy(logits.flatten(0, 1), batch["targets"].flatten())

    def on_evaluate_start(self) -> None:
        self.eval_state = None  # evaluation reads the stream with state carried across chunks

    def evaluate_batch(self, model: nn.Module, batch: Dict[str, Tensor]) -> Dict[str, Any]:
        if batch.get("reset_state"):
            self.eval_state = None
        logits, self.eval_state = model(batch["inputs"], self.eval_state)
        loss_sum = F.cross_entropy(logits.flatten(0, 1).float(), batch["targets"].flatten(), reduction="sum")
        return {"loss_sum": loss_sum, "tokens": batch["targets"].numel()}

    def compute_metrics(self, totals: Dict[str, Any]) -> Dict[str, float]:
        """Mean loss per predicted token over the whole stream."""
        self.eval_state = None
        return self.metrics_from_loss(totals["loss_sum"] / totals["tokens"])

    def metrics_from_loss(self, loss: float) -> Dict[str, float]:
        """Loss in nats per token; perplexity = e^loss; bits per character = loss / ln 2 (char models)."""
        metrics = {"loss": loss, "perplexity": math.exp(loss) if loss < 700 else math.inf}
        if self.kind == "char":
            metrics["bpc"] = loss / math.log(2)
        return metrics

    # -- training-time state -----------------------------------------------------
    def on_epoch_start(self, epoch: int) -> None:
        self.carried = None  # a new pass over the text starts from a blank state

    def training_state(self) -> Dict[str, Any]:
        carried = self.carried
        if carried is None:
            return {"carried": None}
        return {"carried": [s.cpu() for s in carried] if isinstance(carried, tuple) else [carried.cpu()]}

    def load_training_state(self, state: Dict[str, Any]) -> None:
        saved = state.get("carried")
        if not saved:
            self.carried = None
            return
        tensors = [s.to(self.device) for s in saved]
        self.carried = tuple(tensors) if len(tensors) == 2 else tensors[0]

    def after_evaluate(self, model: nn.Module, log: Any) -> None:
        """Print a short sample, so a person watching sees the model learn."""
        n = self.options.sample_tokens
        if n == 0:
            return
        was_training = model.training
        generator = torch.Generator(device=self.device).manual_seed(self.recipe.seed)  # leaves training's RNG alone
        try:
            text = "".join(self.generate(model, self.options.sample_prompt, n, self.options.sample_temperature, None, generator))
        finally:
            model.train(was_training)
        shown = "\n".join("  | " + line for line in text.split("\n"))
        log(f"sample (temperature {self.options.sample_temperature}):\n{shown}")

    # -- use ------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self, model: nn.Module, prompt: str, max_tokens: int, temperature: float, top_k: Optional[int],
        generator: Optional[torch.Generator] = None, weights: str = "fp32",
    ) -> Iterator[str]:
        """Stream the prompt, then ``max_tokens`` new tokens as text pieces (``weights``: see ``Stepper``)."""
        if temperature < 0:
            raise NlptkError(f"temperature {temperature}: must be 0 (greedy) or positive")
        model.eval()
        context = self.prompt_ids(prompt)
        if prompt:
            yield prompt
        line_start = prompt == "" or prompt.endswith("\n")
        for token_id in sample_ids(model, context, max_tokens, temperature, top_k, self.banned(), generator, weights):
            piece = self.piece(token_id, line_start)
            line_start = piece.endswith("\n")
            yield piece

    def stepped(self, model: nn.Module, weights: str) -> nn.Module:
        """The model as generation runs it with ``weights`` (for ``evaluate``: what the storage costs in loss)."""
        return SteppedModel(model, weights)

    def prompt_ids(self, prompt: str) -> List[int]:
        """What the model reads before generating.

        A line break first (a prompt starts a line, and that is a state the
        model has seen), then the prompt; ``<bos>`` if there is neither.
        Tokens outside the vocabulary are read as ``<unk>``, with a warning.
        """
        tokens = self._tokens(prompt, end_last_line=False)
        unknown = sorted({t for t in tokens if t not in self.vocab})
        if unknown:
            shown = ", ".join(repr(t) for t in unknown[:10])
            print(f"warning: not in the model's vocabulary, read as {Vocabulary.UNK}: {shown}", file=sys.stderr)
        line_break = self.line_break_id()
        ids = ([line_break] if line_break is not None else []) + self.vocab.encode(tokens)
        return ids or [self.vocab.bos_id]

    # -- export ---------------------------------------------------------------
    def exportable(self, model: nn.Module) -> Exportable:
        """Two graphs: ``encoder`` reads a padded batch of prompts from a given state, ``decoder_step``
        advances one token; generation is the first, then the second once per new token."""
        encoder, vocab_size = model.encoder, len(self.vocab)
        names = ["h", "c"] if encoder.cell == "lstm" else ["h"]
        new_names = ["new_" + n for n in names]
        layers, hidden = encoder.num_layers, encoder.hidden_size

        def states(batch: int) -> List[Tensor]:
            return [torch.randn(layers, batch, hidden) * 0.5 for _ in names]

        def read_example(batch: int, time: int) -> Tuple[Tensor, ...]:
            return (*example_tokens(batch, time, vocab_size), *states(batch))

        def step_example(batch: int, time: int) -> Tuple[Tensor, ...]:
            return (torch.randint(1, vocab_size, (batch,)), *states(batch))

        state_axes = {n: {1: "batch"} for n in names + new_names}
        reader = ExportGraph(
            name="encoder", module=ExportedReader(model), inputs=["tokens", "lengths", *names], outputs=["logits", *new_names],
            dynamic={"tokens": {0: "batch", 1: "time"}, "lengths": {0: "batch"}, "logits": {0: "batch", 1: "time"}, **state_axes},
            example=read_example,
            doc="read prompts (ids padded with pad_id, lengths) from a state (zeros to start); logits at position lengths-1 "
                "score the next token, and new_h/new_c are each row's state after its last real token",
        )
        step = ExportGraph(
            name="decoder_step", module=ExportedStep(model), inputs=["token", *names], outputs=["logits", *new_names],
            dynamic={"token": {0: "batch"}, "logits": {0: "batch"}, **state_axes}, example=step_example,
            doc="one token per row and the state -> next-token logits and the new state",
        )
        never = [i for i, b in enumerate(self.banned().tolist()) if b != 0]
        info = {
            "pad_id": self.vocab.pad_id, "unk_id": self.vocab.unk_id, "bos_id": self.vocab.bos_id, "eos_id": self.vocab.eos_id,
            "line_break_id": self.line_break_id(), "never_generate": never,
            "state": {"names": names, "shape": [layers, "batch", hidden], "start": "zeros"},
            "prompt": "the line_break_id, then the prompt's token ids (<eos> ends each line of a word or subword model); [bos_id] if both are missing",
        }
        return Exportable(graphs=[reader, step], vocabularies={"vocab": self.vocab.itos}, tokenizers={"text": self.tokenizer}, info=info)

    def read_text(self, text: str) -> Tuple[List[str], List[int]]:
        """Tokens as the model reads a text: characters with the newline, or ``<eos>`` per line."""
        tokens = self._tokens(text)
        return tokens, self.vocab.encode(tokens)

    def line_break_id(self) -> Optional[int]:
        if self.kind == "char":
            return self.vocab.stoi.get("\n")
        return self.vocab.eos_id

    def banned(self) -> Tensor:
        """Added to the scores: -inf for tokens never to output: padding and
        <bos>; in a char model also <eos> (the newline ends lines) and <unk>
        (an unknown character has no text to print)."""
        never = [self.vocab.pad_id, self.vocab.bos_id]
        if self.kind == "char":
            never += [self.vocab.eos_id, self.vocab.unk_id]
        bias = torch.zeros(len(self.vocab), device=self.device)
        bias[never] = -math.inf
        return bias

    def piece(self, token_id: int, line_start: bool) -> str:
        """The text of one generated token, given whether it starts a line."""
        token = self.vocab.itos[token_id]
        if token_id == self.vocab.eos_id:
            return "\n"
        if self.kind == "char":
            return token
        if self.kind == "word":
            return token if line_start else " " + token
        text = token.replace("\u2581", " ")  # sentencepiece marks a space with '▁'
        return text.lstrip(" ") if line_start else text


def check_recipe(recipe: Any) -> None:
    """Mistakes in the recipe that would only show up later, named now."""
    options, encoder = recipe.task_options, recipe.encoder
    if encoder.bidirectional:
        raise NlptkError(
            "encoder.bidirectional: true, but a language model predicts the next token and may not read ahead; "
            "set encoder.bidirectional: false"
        )
    if options.tie_weights and encoder.embedding_dim != encoder.hidden_size:
        raise NlptkError(
            f"task.tie_weights: true needs encoder.embedding_dim == encoder.hidden_size "
            f"(got {encoder.embedding_dim} and {encoder.hidden_size}); make them equal or set tie_weights: false"
        )
    checks = [
        ("bptt", options.bptt >= 1, "at least 1"),
        ("dropout", 0.0 <= options.dropout < 1.0, "in [0, 1)"),
        ("eval_streams", options.eval_streams >= 1, "at least 1"),
        ("stream_window", options.stream_window >= 1, "at least 1"),
        ("sample_tokens", options.sample_tokens >= 0, "0 or more"),
        ("sample_temperature", options.sample_temperature >= 0, "0 (greedy) or more"),
    ]
    for key, ok, rule in checks:
        if not ok:
            raise NlptkError(f"task.{key}: must be {rule}, got {getattr(options, key)!r}")
