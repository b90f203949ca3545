"""The language_model task: stream batching, carried state, metrics and generation.

Everything here is tiny (a few hundred parameters, a few hundred tokens) so
the whole file runs in seconds on a CPU.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List

import datasets
import pytest
import torch
import torch.nn.functional as F

from conftest import one_line_error
from nlptoolkit import NlptkError, Vocabulary
from nlptoolkit.cli import main
from nlptoolkit.recipe import load_recipe, recipe_from_dict
from nlptoolkit.runs import make_task, train
from nlptoolkit.stepper import Stepper
from nlptoolkit_plugins.language_model import LanguageModelTask, pick_token, sample_ids

TEXT = "the cat sat on the mat.\nthe dog sat on the log.\n" * 4


def lm_recipe(tokenizer: str = "char", task: Dict[str, Any] = None, encoder: Dict[str, Any] = None, train_cfg: Dict[str, Any] = None, files=None):
    data = {"files": files or {"train": "train.txt", "validation": "validation.txt"}, "tokenizer": {"kind": tokenizer}}
    if tokenizer == "sentencepiece":
        data["tokenizer"]["vocab_size"] = 30
    return recipe_from_dict({
        "name": "lm",
        "task": {"name": "language_model", "bptt": 4, "sample_tokens": 0, **(task or {})},
        "seed": 0,
        "device": "cpu",
        "data": data,
        "encoder": {"cell": "lstm", "embedding_dim": 8, "hidden_size": 12, "num_layers": 2, **(encoder or {})},
        "train": {"batch_size": 2, "epochs": 1, **(train_cfg or {})},
    })


def rows(text: str) -> datasets.Dataset:
    """Rows as the `text` loader gives them: one per line, line breaks kept."""
    return datasets.Dataset.from_dict({"text": text.splitlines(keepends=True)})


def nlptk(*args: str) -> int:
    """Run the command line in-process; return its exit code."""
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    return exit_info.value.code


def lm_task(text: str = TEXT, tokenizer: str = "char", seed: int = 0, **kw):
    task = make_task(lm_recipe(tokenizer, **kw), None)
    task.setup(rows(text))
    torch.manual_seed(seed)
    return task, task.build_model().eval()


# ----------------------------------------------------------------------------
# The toy example, end to end: train on "hello", then `nlptk generate`
# ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hello_run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hello")
    for split in ("train", "validation"):
        (folder / f"{split}.txt").write_text("hello", encoding="utf-8")
    recipe = folder / "hello.yaml"
    recipe.write_text(
        f"""
name: hello
task: {{name: language_model, bptt: 4, dropout: 0.0, sample_tokens: 0}}
device: cpu
data:
  files: {{train: {folder}/train.txt, validation: {folder}/validation.txt}}
  tokenizer: {{kind: char}}
encoder: {{cell: lstm, embedding_dim: 8, hidden_size: 16, num_layers: 1}}
train: {{batch_size: 1, epochs: 150, lr: 0.05, eval_every: 100000}}
""",
        encoding="utf-8",
    )
    train(str(recipe), output_dir=str(folder / "run"), quiet=True)
    return folder / "run"


def test_hello_trains_and_greedy_generation_spells_hello(hello_run, capsys):
    assert nlptk("generate", str(hello_run), "--prompt", "h", "--max-tokens", "4", "--temperature", "0") == 0
    assert capsys.readouterr().out == "hello\n"


def test_hello_vocabulary_is_its_four_characters(hello_run):
    from nlptoolkit.runs import load_run

    _, task, _ = load_run(str(hello_run))
    assert task.vocab.itos[len(Vocabulary.SPECIALS):] == ["l", "e", "h", "o"]  # by frequency, then alphabetically


def test_cli_rejects_negative_temperature(hello_run, capsys):
    assert nlptk("generate", str(hello_run), "--prompt", "h", "--temperature", "-1") == 2
    assert "temperature" in capsys.readouterr().err


def test_evaluate_json_reports_loss_perplexity_and_bpc(hello_run, capsys):
    import json

    assert nlptk("evaluate", str(hello_run), "--json") == 0
    metrics = json.loads(capsys.readouterr().out)
    assert set(metrics) == {"loss", "perplexity", "bpc"} and metrics["loss"] < 0.1


def test_without_a_validation_file_the_split_is_by_position(tmp_path):
    from nlptoolkit.data.sources import load_splits

    path = tmp_path / "train.txt"
    path.write_text("".join(f"line {i}\n" for i in range(20)), encoding="utf-8")
    recipe = lm_recipe(files={"train": str(path)})
    task = make_task(recipe, None)
    splits = load_splits(recipe.data, recipe.seed, task.shuffle_split)
    assert splits["validation"]["text"] == ["line 18\n", "line 19\n"]  # the end of the text, not random lines


def test_generate_on_a_sentiment_run_is_a_clear_error(tmp_path, capsys):
    data = tmp_path / "train.jsonl"
    data.write_text('{"text": "good film", "label": "positive"}\n{"text": "bad film", "label": "negative"}\n', encoding="utf-8")
    recipe = tmp_path / "sentiment.yaml"
    recipe.write_text(
        f"""
name: tiny_sentiment
task: {{name: sentiment}}
device: cpu
data: {{files: {{train: {data}, validation: {data}}}}}
encoder: {{embedding_dim: 4, hidden_size: 4}}
train: {{batch_size: 2, epochs: 1}}
""",
        encoding="utf-8",
    )
    train(str(recipe), output_dir=str(tmp_path / "run"), quiet=True)
    assert nlptk("generate", str(tmp_path / "run"), "--prompt", "x") == 2
    err = capsys.readouterr().err
    assert "'sentiment' run" in err and "cannot generate text" in err


# ----------------------------------------------------------------------------
# The token stream
# ----------------------------------------------------------------------------
def test_char_stream_keeps_line_breaks_and_reproduces_the_text():
    task, _ = lm_task("ab\ncd\n")
    ids = task.encode(rows("ab\ncd\n"), "train")
    assert "".join(task.vocab.decode(ids.tolist())) == "ab\ncd\n"


def test_word_stream_has_one_eos_per_line():
    task, _ = lm_task("a b\nc\n", tokenizer="word")
    ids = task.encode(rows("a b\nc\nb"), "validation")  # an unfinished last line is a line too
    assert task.vocab.decode(ids.tolist()) == ["a", "b", "<eos>", "c", "<eos>", "b", "<eos>"]
    assert task.prompt_ids("a b") == [task.vocab.eos_id] + task.vocab.encode(["a", "b"])  # a prompt's line stays open


def test_word_generation_joins_words_with_spaces_and_ends_lines_at_eos():
    task, _ = lm_task("a b\nc\n", tokenizer="word")
    a, b, c, eos = task.vocab.encode(["a", "b", "c", "<eos>"])
    pieces, line_start = [], False
    for token_id in (a, eos, b, c):
        pieces.append(task.piece(token_id, line_start))
        line_start = pieces[-1].endswith("\n")
    assert "".join(pieces) == " a\nb c"


def test_sentencepiece_stream_and_generated_text():
    task, model = lm_task(TEXT, tokenizer="sentencepiece")
    ids = task.encode(rows(TEXT), "train")
    assert (ids == task.vocab.eos_id).sum() == TEXT.count("\n")
    text = "".join(task.generate(model, "the", 20, 1.0, None, torch.Generator().manual_seed(0)))
    assert text.startswith("the") and "\u2581" not in text


# ----------------------------------------------------------------------------
# Batching: B contiguous streams cut into chunks of bptt steps (char-rnn)
# ----------------------------------------------------------------------------
def test_batches_follow_the_char_rnn_layout():
    task, _ = lm_task(task={"bptt": 5})
    batches = task.batches(torch.arange(27), train=True)  # 2 streams of 13; token 26 is dropped
    # stream 0 = 0..12, stream 1 = 13..25; chunks start at 0, 5, 10 (the last is shorter)
    expected = [
        ([[0, 1, 2, 3, 4], [13, 14, 15, 16, 17]], [[1, 2, 3, 4, 5], [14, 15, 16, 17, 18]]),
        ([[5, 6, 7, 8, 9], [18, 19, 20, 21, 22]], [[6, 7, 8, 9, 10], [19, 20, 21, 22, 23]]),
        ([[10, 11], [23, 24]], [[11, 12], [24, 25]]),
    ]
    got = [(b["inputs"].tolist(), b["targets"].tolist()) for b in batches]
    assert got == expected
    assert len(batches) == 3 and batches.padding_fraction() == 0.0
    assert [b["inputs"].tolist() for b in batches.from_position(2)] == [expected[2][0]]


def test_each_process_gets_its_own_streams():
    task, _ = lm_task(task={"bptt": 5}, train_cfg={"batch_size": 1})
    first = [next(iter(task.batches(torch.arange(26), train=True, rank=r, world_size=2)))["inputs"].tolist() for r in (0, 1)]
    assert first == [[[0, 1, 2, 3, 4]], [[13, 14, 15, 16, 17]]]


def test_corpus_shorter_than_one_chunk_names_the_sizes():
    task, _ = lm_task(task={"bptt": 5})
    with pytest.raises(NlptkError) as error:
        task.batches(torch.arange(10), train=True)
    message = str(error.value)
    assert "10 tokens" in message and "batch_size 2" in message and "bptt 5" in message and "at least 12" in message


# ----------------------------------------------------------------------------
# Carried state
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_evaluating_in_chunks_with_carried_state_equals_one_pass(cell):
    task, model = lm_task(task={"bptt": 3, "eval_streams": 1}, encoder={"cell": cell})
    stream = task.encode(rows(TEXT), "validation").long()  # encode keeps ids compact (int32)
    chunked = task.evaluate(model, stream)["loss"]
    with torch.no_grad():
        logits, _ = model(stream[None, :-1])
        one_pass = float(F.cross_entropy(logits[0], stream[1:]))
    assert chunked == pytest.approx(one_pass, abs=1e-5)


def test_training_carries_a_detached_state_and_resets_it_each_epoch():
    task, model = lm_task()
    model.train()
    batches = list(task.batches(task.encode(rows(TEXT), "train"), train=True))
    task.on_epoch_start(0)
    task.training_step(model, batches[0]).backward()
    h, c = task.carried
    assert h.shape == (2, 2, 12) and h.grad_fn is None and c.grad_fn is None
    saved = task.training_state()
    task.on_epoch_start(1)
    assert task.carried is None
    task.load_training_state(saved)
    assert torch.equal(task.carried[0], h) and torch.equal(task.carried[1], c)


# ----------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------
def test_bpc_is_loss_over_ln2_and_perplexity_is_exp_loss():
    task, model = lm_task()
    metrics = task.evaluate(model, task.encode(rows(TEXT), "validation"))
    assert set(metrics) == {"loss", "perplexity", "bpc"}
    assert metrics["bpc"] == pytest.approx(metrics["loss"] / math.log(2))
    assert metrics["perplexity"] == pytest.approx(math.exp(metrics["loss"]))
    word_task, word_model = lm_task(tokenizer="word")
    assert set(word_task.evaluate(word_model, word_task.encode(rows(TEXT), "validation"))) == {"loss", "perplexity"}


# ----------------------------------------------------------------------------
# Generation
# ----------------------------------------------------------------------------
def rerun_prefix(model, context: List[int], n: int, temperature: float, banned, generator) -> List[int]:
    """Independent reference: re-read the whole prefix from scratch for every new token."""
    ids = list(context)
    with torch.no_grad():
        for _ in range(n):
            logits, _ = model(torch.tensor([ids]))
            ids.append(pick_token(logits[0, -1] + banned, temperature, None, generator))
    return ids[len(context):]


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_generation_with_carried_state_equals_rerunning_the_prefix(cell, temperature):
    task, model = lm_task(encoder={"cell": cell})
    context, banned = task.prompt_ids("the c"), task.banned()
    fast = list(sample_ids(model, context, 40, temperature, None, banned, torch.Generator().manual_seed(3)))
    slow = rerun_prefix(model, context, 40, temperature, banned, torch.Generator().manual_seed(3))
    assert fast == slow


def test_generation_costs_one_step_per_token(monkeypatch):
    task, model = lm_task()
    reads, steps = [], []
    model.encoder.register_forward_hook(lambda module, args, out: reads.append(args[0].shape[1]))
    real_step = Stepper.__call__
    monkeypatch.setattr(Stepper, "__call__", lambda self, *a: steps.append(1) or real_step(self, *a))
    pieces = list(task.generate(model, "the c", 50, 0.8, None))
    assert pieces[0] == "the c" and len(pieces) == 1 + 50
    assert reads == [len(task.prompt_ids("the c"))]  # the prompt is read once ...
    assert len(steps) == 49  # ... then one step per new token (none after the last)


def test_temperature_zero_is_greedy():
    task, model = lm_task()
    runs = {"".join(task.generate(model, "the", 30, 0.0, None, torch.Generator().manual_seed(s))) for s in range(3)}
    assert len(runs) == 1  # no randomness at all
    top1 = "".join(task.generate(model, "the", 30, 1.0, 1, torch.Generator().manual_seed(9)))
    assert runs == {top1}  # and the same as sampling from the single most likely token


def test_negative_temperature_is_an_error():
    task, model = lm_task()
    with pytest.raises(NlptkError, match="temperature"):
        next(task.generate(model, "the", 5, -0.5, None))


def test_empty_prompt_starts_from_a_line_break_or_bos():
    task, _ = lm_task()
    assert task.prompt_ids("") == [task.vocab.stoi["\n"]]
    no_newline, _ = lm_task("abcabc")
    assert no_newline.prompt_ids("") == [no_newline.vocab.bos_id]


def test_unknown_prompt_character_is_unk_with_a_warning(capsys):
    task, model = lm_task()
    assert task.prompt_ids("tZe")[-2] == task.vocab.unk_id
    assert "'Z'" in capsys.readouterr().err
    assert "".join(task.generate(model, "tZe", 3, 0.0, None)).startswith("tZe")


# ----------------------------------------------------------------------------
# Recipe mistakes
# ----------------------------------------------------------------------------
def test_bidirectional_encoder_is_rejected():
    with pytest.raises(NlptkError, match="bidirectional"):
        make_task(lm_recipe(encoder={"bidirectional": True}), None)


def test_tie_weights_needs_equal_sizes_and_shares_the_matrix():
    with pytest.raises(NlptkError, match="embedding_dim == encoder.hidden_size"):
        make_task(lm_recipe(task={"tie_weights": True}), None)
    _, model = lm_task(task={"tie_weights": True}, encoder={"embedding_dim": 12})
    assert model.decoder.weight is model.encoder.embedding.weight


def test_pick_token_draws_what_torch_multinomial_draws():
    """The exponential race is torch.multinomial's own one-sample method: same generator, same draws."""
    torch.manual_seed(0)
    for seed in range(200):
        logits = torch.randn(30) * 3
        logits[[0, 5]] = -math.inf  # banned tokens are never drawn
        want = int(torch.multinomial((logits / 0.7).softmax(-1), 1, generator=torch.Generator().manual_seed(seed)))
        assert pick_token(logits, 0.7, None, torch.Generator().manual_seed(seed)) == want


def test_pick_token_frequencies_follow_the_softmax():
    """Drawn often, each token turns up in proportion to softmax(logits / T) (and top-k keeps only k)."""
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0, -math.inf])
    generator = torch.Generator().manual_seed(1)
    n = 20000
    counts = torch.bincount(torch.tensor([pick_token(logits, 0.5, None, generator) for _ in range(n)]), minlength=5)
    expected = (logits / 0.5).softmax(-1) * n
    assert counts[4] == 0
    assert ((counts - expected).abs() <= 4 * expected.clamp(min=1).sqrt() + 1).all(), (counts, expected)
    top2 = torch.bincount(torch.tensor([pick_token(logits, 0.5, 2, generator) for _ in range(2000)]), minlength=5)
    assert top2[2:].sum() == 0 and top2[0] > top2[1] > 0


def test_validate_rejects_bpc_for_a_word_model_and_accepts_it_for_a_char_model(tmp_path, cli):
    """A word (or subword) model reports no bits per character; `nlptk validate` says so before any training."""
    (tmp_path / "train.txt").write_text("the cat sat\n", encoding="utf-8")
    for kind in ("word", "sentencepiece", "char"):
        recipe = tmp_path / f"{kind}.yaml"
        recipe.write_text(
            f"name: lm\ntask: {{name: language_model}}\ndata:\n  files: {{train: train.txt}}\n  tokenizer: {{kind: {kind}}}\n"
            "train:\n  early_stopping: {metric: bpc}\n",
            encoding="utf-8",
        )
        code, out, err = cli(["validate", recipe])
        if kind == "char":
            assert code == 0, err
            continue
        msg = one_line_error(code, out, err)
        assert "train.early_stopping.metric" in msg and "'bpc'" in msg and f"{kind}" in msg, msg
        assert "loss, perplexity" in msg, msg
    recipe = load_recipe(str(tmp_path / "char.yaml"))
    assert LanguageModelTask.reported_metrics(recipe) == ("loss", "perplexity", "bpc")
