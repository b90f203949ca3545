"""Data: vocabularies, tokenizers, padding, bucketing, and loading from every source."""
from __future__ import annotations

import csv
import random
import statistics
from collections import Counter

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.utils.rnn import pad_sequence

from conftest import one_line_error, real_rows, write_jsonl
from nlptoolkit.data import BucketSampler, Vocabulary, build_tokenizer, load_splits, load_tokenizer, pad_batch
from nlptoolkit.data.tokenizers import CharTokenizer, SentencePieceTokenizer, WordTokenizer
from nlptoolkit.errors import NlptkError
from nlptoolkit.recipe import DataConfig, TokenizerConfig


# --------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------
def test_vocabulary_specials_come_first():
    vocab = Vocabulary.build([["b", "a", "b"]])
    assert vocab.itos[:4] == ["<pad>", "<unk>", "<bos>", "<eos>"]
    assert [vocab.stoi[t] for t in ("<pad>", "<unk>", "<bos>", "<eos>")] == [0, 1, 2, 3]
    assert (vocab.pad_id, vocab.unk_id, vocab.bos_id, vocab.eos_id) == (0, 1, 2, 3)


def test_vocabulary_order_frequency_then_alphabet():
    sequences = [["the", "cat", "sat"], ["the", "dog", "sat"], ["a", "the"]]
    vocab = Vocabulary.build(sequences)
    # the x3, sat x2, then the count-1 words alphabetically
    assert vocab.itos[4:] == ["the", "sat", "a", "cat", "dog"]
    assert vocab.encode(["dog", "zebra", "the"]) == [8, 1, 4]
    assert vocab.decode([4, 5, 1]) == ["the", "sat", "<unk>"]


def test_vocabulary_min_freq_and_max_size():
    sequences = [list("aaaabbbccd")]
    assert Vocabulary.build(sequences, min_freq=2).itos[4:] == ["a", "b", "c"]
    assert Vocabulary.build(sequences, min_freq=5).itos == list(Vocabulary.SPECIALS)
    capped = Vocabulary.build(sequences, max_size=6)  # max_size counts the specials
    assert len(capped) == 6 and capped.itos[4:] == ["a", "b"]
    assert Vocabulary.build(sequences, max_size=2).itos == list(Vocabulary.SPECIALS)


def test_vocabulary_ignores_special_tokens_in_text():
    vocab = Vocabulary.build([["<unk>", "x", "<pad>", "x"]])
    assert vocab.itos == ["<pad>", "<unk>", "<bos>", "<eos>", "x"]


def test_vocabulary_deterministic_on_real_text():
    texts = [r["text"].lower().split() for r in real_rows("train", 0, 500)]
    vocab = Vocabulary.build(texts, min_freq=2)
    shuffled = texts[:]
    random.Random(0).shuffle(shuffled)
    assert Vocabulary.build(shuffled, min_freq=2).itos == vocab.itos
    # independent expectation from a Counter
    counts = Counter(t for seq in texts for t in seq)
    expected = sorted((t for t, c in counts.items() if c >= 2), key=lambda t: (-counts[t], t))
    assert vocab.itos[4:] == expected
    assert Vocabulary(vocab.itos).stoi == vocab.stoi


def test_vocabulary_rejects_missing_specials():
    with pytest.raises(ValueError):
        Vocabulary(["a", "b"])


# --------------------------------------------------------------------------
# tokenizers
# --------------------------------------------------------------------------
def test_char_tokenizer():
    tok = CharTokenizer()
    assert tok.tokenize("Hé, x") == ["H", "é", ",", " ", "x"]
    assert tok.detokenize(tok.tokenize("Hé, x")) == "Hé, x"
    assert CharTokenizer(lowercase=True).tokenize("AbC") == ["a", "b", "c"]


def test_word_tokenizer():
    tok = WordTokenizer()
    assert tok.tokenize("  a gorgeous,  witty\tfilm \n") == ["a", "gorgeous,", "witty", "film"]
    assert tok.detokenize(["a", "b"]) == "a b"
    assert WordTokenizer(lowercase=True).tokenize("Never Once") == ["never", "once"]


def test_build_tokenizer_kinds():
    assert isinstance(build_tokenizer(TokenizerConfig(kind="char")), CharTokenizer)
    assert isinstance(build_tokenizer(TokenizerConfig(kind="word", lowercase=True)), WordTokenizer)


@pytest.fixture(scope="module")
def spm_tokenizer():
    texts = [r["text"] for r in real_rows("train", 0, 400)]
    config = TokenizerConfig(kind="sentencepiece", vocab_size=300, model_type="unigram")
    return build_tokenizer(config, texts), texts, config


def test_sentencepiece_round_trip(spm_tokenizer):
    tok, texts, _ = spm_tokenizer
    assert isinstance(tok, SentencePieceTokenizer)
    pieces = [tok.tokenize(t) for t in texts]
    assert all(tok.detokenize(p) == t for p, t in zip(pieces, texts))
    # it really splits into subwords: more pieces than words, fewer than characters
    n_pieces, n_words, n_chars = sum(map(len, pieces)), sum(len(t.split()) for t in texts), sum(map(len, texts))
    assert n_words < n_pieces < n_chars
    # unseen sentences made of seen characters round-trip too
    seen = set("".join(texts))
    unseen = [r["text"] for r in real_rows("validation", 0, 200) if set(r["text"]) <= seen][:100]
    assert len(unseen) > 50
    assert all(tok.detokenize(tok.tokenize(t)) == t for t in unseen)
    assert tok.detokenize(tok.tokenize("two  spaces")) == "two  spaces"


def test_sentencepiece_save_and_load(spm_tokenizer, tmp_path):
    tok, texts, config = spm_tokenizer
    tok.save(tmp_path)
    loaded = load_tokenizer(config, tmp_path)
    assert all(loaded.tokenize(t) == tok.tokenize(t) for t in texts[:50])
    with pytest.raises(NlptkError, match="sentencepiece model is missing"):
        load_tokenizer(config, tmp_path / "elsewhere")


def test_sentencepiece_training_is_deterministic(spm_tokenizer):
    tok, texts, config = spm_tokenizer
    again = build_tokenizer(config, texts)
    assert again.model == tok.model


# --------------------------------------------------------------------------
# padding
# --------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.lists(st.integers(1, 1000), min_size=1, max_size=12), min_size=1, max_size=8),
    st.integers(0, 5),
)
def test_pad_batch_matches_pad_sequence(sequences, pad_id):
    tokens, lengths = pad_batch(sequences, pad_id=pad_id)
    reference = pad_sequence([torch.tensor(s) for s in sequences], batch_first=True, padding_value=pad_id)
    assert tokens.dtype == torch.long and lengths.dtype == torch.long
    assert torch.equal(tokens, reference)
    assert lengths.tolist() == [len(s) for s in sequences]


# --------------------------------------------------------------------------
# bucketing
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_lengths():
    return [len(r["text"].split()) for r in real_rows("train", 0, 3000)]


def test_bucket_sampler_covers_every_index_once(real_lengths):
    for bucket in (True, False):
        for epoch in (0, 1):
            sampler = BucketSampler(real_lengths, batch_size=32, bucket=bucket, seed=3)
            sampler.set_epoch(epoch)
            batches = list(sampler)
            flat = [i for b in batches for i in b]
            assert sorted(flat) == list(range(len(real_lengths)))
            assert len(batches) == len(sampler) == -(-len(real_lengths) // 32)
            assert all(1 <= len(b) <= 32 for b in batches)


def test_bucket_sampler_groups_similar_lengths(real_lengths):
    bucketed = BucketSampler(real_lengths, batch_size=32, bucket=True, seed=3)
    plain = BucketSampler(real_lengths, batch_size=32, bucket=False, seed=3)

    def mean_spread(sampler):
        return statistics.mean(max(real_lengths[i] for i in b) - min(real_lengths[i] for i in b) for b in sampler)

    assert mean_spread(bucketed) < 0.25 * mean_spread(plain)
    # padding measured independently of the sampler's own bookkeeping
    def padding(sampler):
        real = sum(real_lengths[i] for b in sampler for i in b)
        padded = sum(max(real_lengths[i] for i in b) * len(b) for b in sampler)
        return 1 - real / padded

    assert padding(bucketed) == pytest.approx(bucketed.padding_fraction())
    assert padding(plain) == pytest.approx(plain.padding_fraction())
    assert padding(bucketed) < 0.1 < 0.3 < padding(plain)


def test_bucket_sampler_still_shuffles(real_lengths):
    sampler = BucketSampler(real_lengths, batch_size=32, bucket=True, seed=3)
    maxima = [max(real_lengths[i] for i in b) for b in sampler]
    # batches are not served shortest-first: the order of batch lengths is random
    assert maxima != sorted(maxima) and maxima != sorted(maxima, reverse=True)
    assert abs(statistics.correlation(range(len(maxima)), maxima)) < 0.3


def test_bucket_sampler_deterministic_per_seed_and_epoch(real_lengths):
    def order(seed, epoch):
        s = BucketSampler(real_lengths, batch_size=32, seed=seed)
        s.set_epoch(epoch)
        return s.batches()

    assert order(3, 0) == order(3, 0)
    assert order(3, 1) == order(3, 1)
    assert order(3, 0) != order(3, 1)
    assert order(3, 0) != order(4, 0)


def test_bucket_sampler_evaluation_order_is_fixed(real_lengths):
    s = BucketSampler(real_lengths, batch_size=32, shuffle=False, bucket=True)
    first = s.batches()
    s.set_epoch(5)
    assert s.batches() == first
    flat = [real_lengths[i] for b in first for i in b]
    assert flat == sorted(real_lengths)  # evaluation: one sort over everything
    unbucketed = BucketSampler(real_lengths, batch_size=32, shuffle=False, bucket=False).batches()
    assert [i for b in unbucketed for i in b] == list(range(len(real_lengths)))


def test_bucket_sampler_replicas_partition(real_lengths):
    lengths = real_lengths[:1000]
    parts = []
    for rank in range(3):
        s = BucketSampler(lengths, batch_size=16, seed=1, num_replicas=3, rank=rank)
        parts.append(s.batches())
        assert len(parts[-1]) == len(s)
    assert len({len(p) for p in parts}) == 1  # every process takes the same number of steps
    seen = [i for p in parts for b in p for i in b]
    assert len(seen) == len(set(seen))  # no index twice across processes


# --------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------
@pytest.fixture
def rows():
    return real_rows("train", 100, 140)


def texts_of(dataset):
    return list(dataset["text"])


def test_seeded_validation_split_is_carved(tmp_path, rows):
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    config = DataConfig(files={"train": str(path)}, validation_fraction=0.25)
    a = load_splits(config, seed=5)
    assert len(a["train"]) == 30 and len(a["validation"]) == 10
    all_texts = [r["text"] for r in rows]
    assert sorted(texts_of(a["train"]) + texts_of(a["validation"])) == sorted(all_texts)
    b = load_splits(config, seed=5)
    assert texts_of(b["validation"]) == texts_of(a["validation"]) and texts_of(b["train"]) == texts_of(a["train"])
    c = load_splits(config, seed=6)
    assert set(texts_of(c["validation"])) != set(texts_of(a["validation"]))
    # the first ten rows in order would be the unshuffled split; a seeded one is not that
    assert set(texts_of(a["validation"])) != set(all_texts[-10:])
    ordered = load_splits(config, seed=5, shuffle_split=False)
    assert texts_of(ordered["validation"]) == all_texts[-10:]


def test_given_validation_is_used_as_is(tmp_path, rows):
    train = write_jsonl(tmp_path / "train.jsonl", rows[:30])
    valid = write_jsonl(tmp_path / "valid.jsonl", rows[30:])
    loaded = load_splits(DataConfig(files={"train": str(train), "validation": str(valid)}), seed=0)
    assert texts_of(loaded["validation"]) == [r["text"] for r in rows[30:]]
    assert texts_of(loaded["train"]) == [r["text"] for r in rows[:30]]


def test_csv_source(tmp_path, rows):
    path = tmp_path / "train.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["text", "label", "score"])
        writer.writeheader()
        writer.writerows(rows)
    assert any("," in r["text"] or '"' in r["text"] for r in rows)  # quoting is exercised
    loaded = load_splits(DataConfig(files={"train": str(path), "validation": str(path)}), seed=0)
    assert texts_of(loaded["train"]) == [r["text"] for r in rows]
    assert list(loaded["train"]["label"]) == [r["label"] for r in rows]


def test_parquet_source(tmp_path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    loaded = load_splits(DataConfig(files={"train": str(path)}, validation_fraction=0.1), seed=0)
    assert sorted(texts_of(loaded["train"]) + texts_of(loaded["validation"])) == sorted(r["text"] for r in rows)
    assert loaded["train"].features["score"].dtype == "float64"


def test_disk_source(tmp_path, rows):
    import datasets

    d = datasets.DatasetDict({"train": datasets.Dataset.from_list(rows[:30]), "validation": datasets.Dataset.from_list(rows[30:])})
    d.save_to_disk(str(tmp_path / "saved"))
    loaded = load_splits(DataConfig(disk=str(tmp_path / "saved")), seed=0)
    assert texts_of(loaded["validation"]) == [r["text"] for r in rows[30:]]
    # a single saved Dataset (not a dict) is the train split
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "single"))
    single = load_splits(DataConfig(disk=str(tmp_path / "single"), validation_fraction=0.5), seed=0)
    assert len(single["train"]) == 20 and len(single["validation"]) == 20


def test_disk_source_missing(tmp_path):
    with pytest.raises(NlptkError, match="data.disk: folder .* does not exist"):
        load_splits(DataConfig(disk=str(tmp_path / "nothing")), seed=0)


def test_format_cannot_be_guessed(tmp_path, rows):
    path = write_jsonl(tmp_path / "train.data", rows)
    with pytest.raises(NlptkError, match="data.format"):
        load_splits(DataConfig(files={"train": str(path)}), seed=0)
    loaded = load_splits(DataConfig(files={"train": str(path), "validation": str(path)}, format="json"), seed=0)
    assert len(loaded["train"]) == len(rows)


def test_hub_offline_points_to_data_files(run_cli, tmp_path):
    recipe = tmp_path / "hub.yaml"
    recipe.write_text(
        "name: hub\ntask: {name: sentiment}\ndevice: cpu\ndata:\n  hub: nlptk-tests/surely-not-a-dataset\n"
        "encoder: {embedding_dim: 8, hidden_size: 8}\ntrain: {max_steps: 1}\n"
    )
    env = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    msg = one_line_error(*run_cli(["run", recipe, "--output-dir", tmp_path / "out"], cwd=tmp_path, env=env))
    assert "data.hub: could not load 'nlptk-tests/surely-not-a-dataset'" in msg, msg
    assert "data.files" in msg and "data.disk" in msg, msg


@pytest.mark.parametrize("blank", ["", "   "])
def test_zero_length_text_names_the_row(cli, tiny_sentiment, blank):
    rows = real_rows("train", 0, 60)
    rows[6] = {**rows[6], "text": blank}
    write_jsonl(tiny_sentiment.train, rows)
    msg = one_line_error(*cli(["run", tiny_sentiment.recipe, "--output-dir", "out"]))
    assert f"{tiny_sentiment.train} (data.files.train), row 7: the text has no tokens" in msg, msg


def test_zero_length_text_in_validation(cli, tiny_sentiment):
    rows = real_rows("validation", 0, 20)
    rows[0] = {**rows[0], "text": ""}
    write_jsonl(tiny_sentiment.validation, rows)
    msg = one_line_error(*cli(["run", tiny_sentiment.recipe, "--output-dir", "out"]))
    assert f"{tiny_sentiment.validation} (data.files.validation), row 1" in msg, msg


def test_missing_label_names_the_row(cli, tiny_sentiment):
    rows = real_rows("train", 0, 60)
    rows[9] = {"text": rows[9]["text"], "label": None, "score": 0.0}
    write_jsonl(tiny_sentiment.train, rows)
    msg = one_line_error(*cli(["run", tiny_sentiment.recipe, "--output-dir", "out"]))
    assert "row 10" in msg and "every row needs a label" in msg, msg
