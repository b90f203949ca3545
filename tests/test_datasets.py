"""The data section beyond one file per split: lists of files, split expressions,
column mapping, row and length filters, save_to_disk folders, the hub (only the
network call replaced), and streaming (``data.streaming: true``)."""
from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any, Dict, List

import datasets
import pytest
import torch

from conftest import make_tiny_sentiment, one_line_error, real_rows, shared_data_dir, write_jsonl
from nlptoolkit.checkpoint import load_checkpoint
from nlptoolkit.data import Vocabulary, load_splits
from nlptoolkit.data.streaming import StreamedBatches, StreamedExamples
from nlptoolkit.errors import NlptkError
from nlptoolkit.recipe import DataConfig, recipe_from_dict
from nlptoolkit.runs import make_task, train


def rows_of(dataset: Any) -> List[dict]:
    return [dict(r) for r in dataset]


def sentiment_recipe(data: Dict[str, Any], **train_cfg: Any) -> Dict[str, Any]:
    """A tiny sentiment recipe as a dict: a few steps of a small model."""
    return {
        "name": "tiny", "task": {"name": "sentiment"}, "seed": 3, "device": "cpu",
        "data": {"tokenizer": {"kind": "word", "lowercase": True}, **data},
        "encoder": {"embedding_dim": 8, "hidden_size": 8},
        "train": {"batch_size": 8, "epochs": 1, "max_steps": 3, "precision": "fp32", **train_cfg},
    }


def task_state(run_dir: Path) -> Dict[str, Any]:
    return load_checkpoint(Path(run_dir) / "best.pt")["task_state"]


# --------------------------------------------------------------------------
# several files per split
# --------------------------------------------------------------------------
def test_a_list_of_files_is_read_in_order(tmp_path):
    rows = real_rows("train", 0, 30)
    first = write_jsonl(tmp_path / "a.jsonl", rows[:10])
    second = tmp_path / "b.jsonl.gz"
    with gzip.open(second, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows[10:])
    loaded = load_splits(DataConfig(files={"train": [str(first), str(second)], "validation": str(first)}), seed=0)
    assert rows_of(loaded["train"]) == rows
    with pytest.raises(NlptkError, match=r"data.files.train\[1\]: file .*missing.jsonl does not exist"):
        load_splits(DataConfig(files={"train": [str(first), str(tmp_path / "missing.jsonl")]}), seed=0)


def test_pos_recipe_can_add_the_oanc_sentences_to_wsj():
    base = shared_data_dir() / "tagging"
    wsj, oanc = base / "pos_wsj" / "train.jsonl", base / "pos_oanc" / "train.jsonl"
    if not oanc.is_file():
        pytest.skip("pos_oanc is not in the shared data")
    recipe = recipe_from_dict(
        {"name": "pos", "task": {"name": "tagging"}, "data": {"files": {"train": [str(wsj), str(oanc)], "validation": str(base / "pos_wsj" / "validation.jsonl")}}}
    )
    loaded = load_splits(recipe.data, seed=0)
    lines = [json.loads(line) for path in (wsj, oanc) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(loaded["train"]) == len(lines)
    assert loaded["train"][len(lines) - 1] == lines[-1] and loaded["train"][0] == lines[0]


def test_a_list_of_conll_files(tmp_path):
    (tmp_path / "a.conll").write_text("the DT\ncat NN\n\n", encoding="utf-8")
    (tmp_path / "b.conll").write_text("a DT\ndog NN\nran VBD\n", encoding="utf-8")
    loaded = load_splits(DataConfig(files={"train": [str(tmp_path / "a.conll"), str(tmp_path / "b.conll")], "validation": str(tmp_path / "a.conll")}), seed=0)
    assert list(loaded["train"]["tokens"]) == [["the", "cat"], ["a", "dog", "ran"]]


# --------------------------------------------------------------------------
# split expressions, checked against datasets' own reading of them
# --------------------------------------------------------------------------
@pytest.mark.parametrize("train_expr,validation_expr", [("train[:90%]", "train[90%:]"), ("train[5:]", "train[:5]"), ("train[:10]+train[-3:]", "train[10:20]")])
def test_split_expressions_match_datasets(tmp_path, train_expr, validation_expr):
    path = write_jsonl(tmp_path / "all.jsonl", real_rows("train", 0, 41))
    loaded = load_splits(DataConfig(files={"train": str(path)}, split={"train": train_expr, "validation": validation_expr}), seed=0)
    for name, expression in (("train", train_expr), ("validation", validation_expr)):
        reference = datasets.load_dataset("json", data_files={"train": str(path)}, split=expression)
        assert rows_of(loaded[name]) == rows_of(reference), name


def test_split_expressions_on_a_saved_dataset(tmp_path):
    rows = real_rows("train", 0, 20)
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"))  # a Dataset: the train split
    loaded = load_splits(DataConfig(disk=str(tmp_path / "saved"), split={"train": "train[:75%]", "validation": "train[75%:]"}), seed=0)
    assert rows_of(loaded["train"]) == rows[:15] and rows_of(loaded["validation"]) == rows[15:]


@pytest.mark.parametrize("split,expected", [
    ({"train": "train[:ten]"}, "data.split.train: 'train[:ten]' is not a split expression"),
    ({"validation": "train[90%:]"}, "data.split: needs a 'train' expression"),
])
def test_bad_split_expressions_name_the_key(cli, tiny_sentiment, split, expected):
    msg = one_line_error(*cli(["validate", tiny_sentiment.recipe, "--set", f"data.split={json.dumps(split)}"]))
    assert expected in msg, msg


def test_split_expression_naming_a_missing_split(tiny_sentiment):
    with pytest.raises(NlptkError, match="data.split.validation: 'dev' reads split 'dev', but data.files has train, validation"):
        load_splits(DataConfig(files={"train": str(tiny_sentiment.train), "validation": str(tiny_sentiment.validation)}, split={"train": "train", "validation": "dev"}), seed=0)


# --------------------------------------------------------------------------
# column mapping
# --------------------------------------------------------------------------
def test_columns_rename_to_the_fields_the_task_reads(tmp_path):
    reviews = [{"review_body": r["text"], "stars": r["label"], "text": "not this one"} for r in real_rows("train", 0, 40)]
    train_file = write_jsonl(tmp_path / "reviews.jsonl", reviews)
    data = {"files": {"train": str(train_file)}, "columns": {"text": "review_body", "label": "stars"}}
    loaded = load_splits(recipe_from_dict(sentiment_recipe(data)).data, seed=0)
    assert sorted(loaded["train"].column_names) == ["label", "text"]
    assert sorted(list(loaded["train"]["text"]) + list(loaded["validation"]["text"])) == sorted(r["text"] for r in real_rows("train", 0, 40))
    result = train(sentiment_recipe(data), output_dir=str(tmp_path / "run"), quiet=True)
    assert result["steps"] == 3
    assert set(task_state(tmp_path / "run")["labels"]) == {r["label"] for r in real_rows("train", 0, 40)}


def test_columns_naming_a_missing_column(cli, tiny_sentiment):
    msg = one_line_error(*cli(["run", tiny_sentiment.recipe, "--output-dir", "out", "--set", "data.columns={text: review_body}"]))
    assert "data.columns.text: the train split of data.files has no column 'review_body' (columns: text, label, score)" in msg, msg


# --------------------------------------------------------------------------
# sample, shuffle_seed, min_length, max_length
# --------------------------------------------------------------------------
def test_sample_keeps_the_first_rows_or_a_seeded_random_set(tmp_path):
    rows = real_rows("train", 0, 50)
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    first = load_splits(DataConfig(files={"train": str(path), "validation": str(path)}, sample=12), seed=0)
    assert rows_of(first["train"]) == rows[:12]
    shuffled = load_splits(DataConfig(files={"train": str(path), "validation": str(path)}, sample=12, shuffle_seed=5), seed=0)
    reference = datasets.Dataset.from_list(rows).shuffle(seed=5).select(range(12))
    assert rows_of(shuffled["train"]) == rows_of(reference) != rows[:12]
    assert len(shuffled["validation"]) == 50  # the filters touch training rows only


def test_length_filters_keep_training_examples_within_bounds(tmp_path, capsys):
    tiny = make_tiny_sentiment(tmp_path / "data")
    recipe = sentiment_recipe({"files": {"train": str(tiny.train), "validation": str(tiny.validation)}, "min_length": 5, "max_length": 15}, epochs=3)
    result = train(recipe, output_dir=str(tmp_path / "run"), quiet=True)
    # the task's own tokens: lower-cased words, as the recipe's tokenizer splits them
    lengths = [len(r["text"].lower().split()) for r in real_rows("train", 0, 60)]
    kept = sum(5 <= n <= 15 for n in lengths)
    assert 0 < kept < 60
    assert f"data: kept {kept:,} of 60 training examples (data.min_length: 5, data.max_length: 15" in capsys.readouterr().err
    assert result["steps"] == 3


def test_length_filters_refused_for_one_stream_of_text(tmp_path):
    (tmp_path / "train.txt").write_text("hello world\n" * 50, encoding="utf-8")
    recipe = {
        "name": "lm", "task": {"name": "language_model", "bptt": 4, "sample_tokens": 0}, "device": "cpu",
        "data": {"files": {"train": str(tmp_path / "train.txt"), "validation": str(tmp_path / "train.txt")}, "tokenizer": {"kind": "char"}, "max_length": 10},
        "encoder": {"embedding_dim": 4, "hidden_size": 4}, "train": {"batch_size": 2, "max_steps": 1},
    }
    with pytest.raises(NlptkError, match="data.min_length / data.max_length: task 'language_model' reads its data as one stream"):
        train(recipe, output_dir=str(tmp_path / "run"), quiet=True)


def test_min_length_above_max_length_is_a_recipe_error(cli, tiny_sentiment):
    msg = one_line_error(*cli(["validate", tiny_sentiment.recipe, "--set", "data.min_length=9", "--set", "data.max_length=3"]))
    assert "--set data.min_length: 9 is more than data.max_length 3" in msg, msg


# --------------------------------------------------------------------------
# disk: a save_to_disk folder through a recipe
# --------------------------------------------------------------------------
def test_a_saved_dataset_trains_through_a_recipe(cli, tmp_path):
    splits = datasets.DatasetDict({
        "train": datasets.Dataset.from_list(real_rows("train", 0, 60)),
        "validation": datasets.Dataset.from_list(real_rows("validation", 0, 20)),
    })
    splits.save_to_disk(str(tmp_path / "saved"))
    recipe = tmp_path / "disk.yaml"
    recipe.write_text(json.dumps(sentiment_recipe({"disk": str(tmp_path / "saved")})), encoding="utf-8")  # JSON is YAML
    code, out, err = cli(["run", recipe, "--output-dir", "run", "--quiet"])
    assert code == 0, err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == 3 and 0.0 <= summary["final"]["accuracy"] <= 1.0
    # the vocabulary is the training split's: the saved folder was read, not something else
    words = Vocabulary.build([r["text"].lower().split() for r in real_rows("train", 0, 60)]).itos
    assert task_state(tmp_path / "run")["vocab"] == words
    code, out, err = cli(["evaluate", "run", "--json"])
    assert code == 0 and json.loads(out)["accuracy"] == summary["final"]["accuracy"], err


# --------------------------------------------------------------------------
# hub: datasets.load_dataset is called with the recipe's values (the network call is replaced)
# --------------------------------------------------------------------------
@pytest.fixture
def fake_hub(monkeypatch):
    """Record each datasets.load_dataset call; answer with the real movie snippets."""
    calls: List[Dict[str, Any]] = []
    full = datasets.DatasetDict({"train": datasets.Dataset.from_list(real_rows("train", 0, 60)),
                                 "validation": datasets.Dataset.from_list(real_rows("validation", 0, 20))})

    def load_dataset(path, name=None, *, revision=None, split=None, streaming=False, **kwargs):
        calls.append({"path": path, "name": name, "revision": revision, "split": split, "streaming": streaming, **kwargs})
        if streaming:
            streamed = datasets.IterableDatasetDict({k: v.to_iterable_dataset() for k, v in full.items()})
            return streamed if split is None else streamed[split]
        return full if split is None else _read_split(full, split)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def _read_split(full: Any, expression: str) -> Any:
    """What the hub would return for a split expression: datasets' own reading of it."""
    instruction = datasets.ReadInstruction.from_spec(expression)
    parts = [full[a.splitname].select(range(a.from_, a.to)) for a in instruction.to_absolute({k: len(v) for k, v in full.items()})]
    return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)


def test_hub_gets_name_config_revision_and_split(fake_hub, tmp_path):
    data = {"hub": "someone/movie-snippets", "config": "sentences", "revision": "v1.2",
            "split": {"train": "train[:80%]", "validation": "train[80%:]+validation[:5]"}}
    train(sentiment_recipe(data), output_dir=str(tmp_path / "run"), quiet=True)
    assert fake_hub == [
        {"path": "someone/movie-snippets", "name": "sentences", "revision": "v1.2", "split": "train[:80%]", "streaming": False},
        {"path": "someone/movie-snippets", "name": "sentences", "revision": "v1.2", "split": "train[80%:]+validation[:5]", "streaming": False},
    ]
    words = Vocabulary.build([r["text"].lower().split() for r in real_rows("train", 0, 48)]).itos
    assert task_state(tmp_path / "run")["vocab"] == words  # trained on the first 80% of train


def test_hub_without_split_loads_every_split(fake_hub, tmp_path):
    train(sentiment_recipe({"hub": "someone/movie-snippets"}), output_dir=str(tmp_path / "run"), quiet=True)
    assert fake_hub == [{"path": "someone/movie-snippets", "name": None, "revision": None, "split": None, "streaming": False}]


def test_hub_unreachable_with_a_split_points_to_files_and_disk(cli, monkeypatch, tmp_path):
    def offline(path, *args, **kwargs):  # what datasets raises when the hub cannot be reached
        raise ConnectionError(f"Couldn't reach '{path}' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    recipe = tmp_path / "hub.yaml"
    recipe.write_text(json.dumps(sentiment_recipe({"hub": "someone/movie-snippets", "split": {"train": "train[:90%]", "validation": "train[90%:]"}})))
    msg = one_line_error(*cli(["run", recipe, "--output-dir", "out"]))
    assert msg.startswith("error: data.hub: could not load 'someone/movie-snippets' split 'train[:90%]' from the Hugging Face hub (Couldn't reach"), msg
    assert "use `data.files` (csv/json/text/parquet) or `data.disk` (a save_to_disk folder) instead" in msg, msg


# --------------------------------------------------------------------------
# streaming
# --------------------------------------------------------------------------
def test_streamed_sentiment_run_has_the_vocabulary_of_an_in_memory_run(tmp_path, capsys):
    tiny = make_tiny_sentiment(tmp_path / "data")
    files = {"files": {"train": str(tiny.train), "validation": str(tiny.validation)}}
    train(sentiment_recipe(files), output_dir=str(tmp_path / "memory"), quiet=True)
    capsys.readouterr()
    result = train(sentiment_recipe({**files, "streaming": True, "vocab_sample": 1000}), output_dir=str(tmp_path / "streamed"), quiet=True)
    err = capsys.readouterr().err
    assert "fitted on the first 60 rows of the streamed train split (all of it) (data.vocab_sample: 1000)" in err, err
    assert task_state(tmp_path / "streamed") == task_state(tmp_path / "memory")
    assert result["steps"] == 3 and result["final"]["loss"] > 0


def test_streamed_vocabulary_comes_from_the_sample(tmp_path, capsys):
    tiny = make_tiny_sentiment(tmp_path / "data")
    recipe = sentiment_recipe({"files": {"train": str(tiny.train), "validation": str(tiny.validation)}, "streaming": True, "vocab_sample": 10})
    train(recipe, output_dir=str(tmp_path / "run"), quiet=True)
    assert "fitted on the first 10 rows of the streamed train split (data.vocab_sample: 10)" in capsys.readouterr().err
    assert task_state(tmp_path / "run")["vocab"] == Vocabulary.build([r["text"].lower().split() for r in real_rows("train", 0, 10)]).itos


class Source:
    """An endless stream of rows that fails if a single pass reads more than ``limit`` of them."""

    def __init__(self, rows: List[dict], limit: int) -> None:
        self.rows, self.limit, self.passes = rows, limit, []

    def generate(self):
        self.passes.append(0)
        i = 0
        while True:
            if self.passes[-1] >= self.limit:
                raise AssertionError(f"read more than {self.limit} rows in one pass: the stream was materialised")
            self.passes[-1] += 1
            yield self.rows[i % len(self.rows)]
            i += 1


def test_streaming_an_endless_corpus_reads_only_what_training_needs(monkeypatch, tmp_path):
    source = Source(real_rows("train", 0, 60), limit=1000)
    validation = real_rows("validation", 0, 20)

    def load_dataset(path, name=None, *, revision=None, split=None, streaming=False, **kwargs):
        assert streaming and split is None
        return datasets.IterableDatasetDict({
            "train": datasets.IterableDataset.from_generator(source.generate),
            "validation": datasets.IterableDataset.from_generator(lambda: iter(validation)),
        })

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    recipe = sentiment_recipe({"hub": "endless/corpus", "streaming": True, "vocab_sample": 100}, max_steps=4, epochs=1)
    result = train(recipe, output_dir=str(tmp_path / "run"), quiet=True)
    assert result["steps"] == 4
    # one pass fitted the vocabulary (100 rows); one trained: a window of 50 batches of 8 feeds the 4 steps
    assert source.passes[0] <= 101 and max(source.passes[1:]) <= 50 * 8 + 1, source.passes


def test_streamed_batches_cover_every_example_once_in_a_seeded_order():
    examples = StreamedExamples(datasets.Dataset.from_dict({"n": list(range(103))}).to_iterable_dataset(), lambda i, row: [0] * (1 + row["n"] % 7))
    lengths = [1 + n % 7 for n in range(103)]

    def batches(epoch: int, start: int = 0):
        b = StreamedBatches(examples, len, lambda xs: {"lengths": [len(x) for x in xs]}, batch_size=4, shuffle=True, seed=1, epoch=epoch, chunk_batches=5)
        return [batch["example_ids"] for batch in b.from_position(start)]

    epoch0 = batches(0)
    assert sorted(i for b in epoch0 for i in b) == list(range(103))
    assert all(max(b) // 20 == min(b) // 20 for b in epoch0)  # a window of 5 batches of 4 at a time
    assert batches(0) == epoch0 != batches(1)
    assert batches(0, start=7) == epoch0[7:]  # how a resumed run skips what it trained on
    padding = StreamedBatches(examples, len, lambda xs: {}, batch_size=4, shuffle=False, chunk_batches=1000)
    with pytest.raises(TypeError):
        len(padding)
    for _ in padding:
        pass
    sorted_lengths = sorted(lengths)
    padded = sum(max(sorted_lengths[s:s + 4]) * len(sorted_lengths[s:s + 4]) for s in range(0, 103, 4))
    assert padding.padding_fraction() == pytest.approx(1 - sum(lengths) / padded)


def lm_recipe(folder: Path, **data: Any) -> Dict[str, Any]:
    return {
        "name": "lm", "task": {"name": "language_model", "bptt": 5, "sample_tokens": 0, "stream_window": 3}, "seed": 0, "device": "cpu",
        "data": {"files": {"train": str(folder / "train.txt"), "validation": str(folder / "validation.txt")}, "tokenizer": {"kind": "char"}, **data},
        "encoder": {"embedding_dim": 8, "hidden_size": 8}, "train": {"batch_size": 2, "max_steps": 4, "precision": "fp32"},
    }


def test_streamed_language_model_run(tmp_path, capsys):
    text = (shared_data_dir() / "lm" / "tiny_shakespeare" / "validation.txt").read_text(encoding="utf-8")[:3000]
    (tmp_path / "train.txt").write_text(text, encoding="utf-8")
    (tmp_path / "validation.txt").write_text(text[:400], encoding="utf-8")
    train(lm_recipe(tmp_path), output_dir=str(tmp_path / "memory"), quiet=True)
    result = train(lm_recipe(tmp_path, streaming=True), output_dir=str(tmp_path / "streamed"), quiet=True)
    assert "rows of the streamed train split (all of it)" in capsys.readouterr().err
    assert task_state(tmp_path / "streamed") == task_state(tmp_path / "memory")
    assert result["steps"] == 4 and result["final"]["bpc"] > 0


def test_language_model_windows_are_contiguous_slices_of_the_text(tmp_path):
    text = "".join(chr(97 + (i * 7) % 26) + ("\n" if i % 13 == 12 else "") for i in range(700))
    (tmp_path / "train.txt").write_text(text, encoding="utf-8")
    (tmp_path / "validation.txt").write_text(text, encoding="utf-8")
    recipe = recipe_from_dict(lm_recipe(tmp_path, streaming=True))
    task = make_task(recipe, None)
    splits = load_splits(recipe.data, 0, log=None)
    task.setup(datasets.Dataset.from_dict({"text": text.splitlines(keepends=True)}))
    ids = torch.tensor(task.vocab.encode(list(text)))
    streamed = list(task.batches(task.encode(splits["train"], "train"), train=True))
    # windows of 2 streams x 3 chunks x 5 tokens = 30 tokens: stream b of window w reads ids[30w + 15b : 30w + 15b + 15]
    for number, batch in enumerate(streamed):
        window, chunk = divmod(number, 3)
        for b in range(2):
            row = 30 * window + 15 * b  # a row of 15 tokens gives chunks of 5, 5 and 4 inputs
            start, stop = row + 5 * chunk, min(row + 5 * chunk + 5, row + 14)
            assert batch["inputs"][b].tolist() == ids[start:stop].tolist()
            assert batch["targets"][b].tolist() == ids[start + 1:stop + 1].tolist()
        assert batch["reset_state"] == (chunk == 0)
    assert len(streamed) >= 3 * (len(ids) // 30 - 1)
    # a text shorter than one window: exactly the batches of the in-memory path
    short = ids[:25].to(torch.int32)
    memory = task.batches(short, train=True)
    from nlptoolkit_plugins.language_model import TokenStream, WindowBatches

    class Fixed(TokenStream):
        def __iter__(self):
            yield short.tolist()

    windowed = list(WindowBatches(Fixed(task, None, "train"), streams=2, bptt=5, window=3))
    assert [(b["inputs"].tolist(), b["targets"].tolist()) for b in windowed] == [(b["inputs"].tolist(), b["targets"].tolist()) for b in memory]


@pytest.mark.parametrize("setting,expected", [
    (["task={name: tagging}"], "data.streaming: task 'tagging' reads its data in memory and cannot stream it"),
    (["data.split={train: 'train[:90%]', validation: 'train[90%:]'}"], "data.split.train: 'train[:90%]' takes a percentage"),
    (["data.files={train: TRAIN}"], "data.streaming: data.files has no validation split"),
])
def test_streaming_mistakes_are_one_line(cli, tiny_sentiment, setting, expected):
    settings = [s.replace("TRAIN", str(tiny_sentiment.train)) for s in setting]
    args = ["run", tiny_sentiment.recipe, "--output-dir", "out", "--set", "data.streaming=true"]
    for s in settings:
        args += ["--set", s]
    msg = one_line_error(*cli(args))
    assert expected in msg, msg


def test_streamed_split_by_row_counts_and_evaluate(cli, tmp_path):
    path = write_jsonl(tmp_path / "all.jsonl", real_rows("train", 0, 80))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps(sentiment_recipe({"files": {"train": str(path)}, "streaming": True, "split": {"train": "train[20:]", "validation": "train[:20]"}})))
    code, out, err = cli(["run", recipe, "--output-dir", "run", "--quiet"])
    assert code == 0, err
    code, out, err = cli(["evaluate", "run", "--json"])
    assert code == 0, err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert json.loads(out)["loss"] == pytest.approx(summary["final"]["loss"], rel=1e-5)


def test_validate_checks_every_file_of_a_list(cli, tiny_sentiment):
    code, out, err = cli(["validate", tiny_sentiment.recipe, "--set", f"data.files.train=[{tiny_sentiment.train}, {tiny_sentiment.test}]"])
    assert code == 0 and "ok (task sentiment)" in out, err
    msg = one_line_error(*cli(["validate", tiny_sentiment.recipe, "--set", f"data.files.train=[{tiny_sentiment.train}, nothing.jsonl]"]))
    assert "data.files.train[1]: file nothing.jsonl does not exist" in msg, msg


def test_streamed_run_resumes_exactly(cli, monkeypatch, tmp_path):
    """Interrupted in its second epoch by a real SIGTERM and resumed: the stream is read again,
    the batches already trained on are skipped, and the run ends where a straight run ends."""
    tiny = make_tiny_sentiment(tmp_path / "data")
    recipe = tmp_path / "streamed.yaml"
    data = {"files": {"train": str(tiny.train), "validation": str(tiny.validation)}, "streaming": True}
    recipe.write_text(json.dumps(sentiment_recipe(data, epochs=2, max_steps=16, eval_every=3, scheduler="cosine", warmup_steps=2)))
    code, _, err = cli(["run", recipe, "--output-dir", "straight", "--quiet"])
    assert code == 0, err
    monkeypatch.setenv("NLPTK_TEST_SIGNAL_AT_STEP", "10:TERM")
    code, _, err = cli(["run", recipe, "--output-dir", "run", "--quiet"])
    assert code == 143 and "interrupted at step 10" in err, err
    monkeypatch.delenv("NLPTK_TEST_SIGNAL_AT_STEP")
    code, out, err = cli(["run", "--resume", "run", "--quiet"])
    assert code == 0, err
    clock = {"elapsed_seconds", "tokens_per_second", "train_seconds"}
    records = [[{k: v for k, v in json.loads(line).items() if k not in clock} for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()] for name in ("run", "straight")]
    assert records[0] == records[1] and [r["step"] for r in records[0]] == [3, 6, 9, 12, 15, 16]
    resumed, straight = (load_checkpoint(tmp_path / name / "last.pt")["model"] for name in ("run", "straight"))
    assert all(torch.equal(resumed[k], straight[k]) for k in straight)
