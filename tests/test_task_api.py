"""The Task API's core loop: example ids, accumulation of partial statistics, structured predictions."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from nlptoolkit import Task, Vocabulary, pad_batch


class ListTask(Task):
    """Examples are id lists; 'evaluation' sums them and lists each example's first id."""

    name = "list_task"

    def __init__(self, batch_size: int = 3, bucket: bool = True) -> None:
        recipe = SimpleNamespace(task_options=None, train=SimpleNamespace(batch_size=batch_size, bucket=bucket), seed=5)
        super().__init__(recipe)
        self.batch_inputs = []

    def collate(self, examples):
        tokens, lengths = pad_batch(examples)
        return {"tokens": tokens, "lengths": lengths}

    def evaluate_batch(self, model, batch):
        self.batch_inputs.append(batch["tokens"][:, 0].tolist())
        return {
            "total": batch["tokens"].sum(),            # a 0-d tensor
            "count": len(batch["lengths"]),            # an int
            "weighted": float(batch["lengths"].sum()) / 2,  # a float
            "first": batch["tokens"][:, 0].tolist(),   # one item per example
            "lengths": batch["lengths"].tolist(),
        }

    def compute_metrics(self, totals):
        return totals


def examples_of_varied_length(n: int = 17):
    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 9, (n,), generator=generator).tolist()
    return [[100 * i + j + 1 for j in range(length)] for i, length in enumerate(lengths)]


def test_batches_carry_the_positions_of_their_examples():
    task, examples = ListTask(), examples_of_varied_length()
    seen = []
    for batch in task.batches(examples, train=False):
        ids = batch["example_ids"]
        for row, i in enumerate(ids):
            assert batch["tokens"][row, : len(examples[i])].tolist() == examples[i]
            assert int(batch["lengths"][row]) == len(examples[i])
        seen += ids
    assert sorted(seen) == list(range(len(examples)))
    assert seen != list(range(len(examples)))  # bucketing did reorder them: the test means something


def test_evaluate_adds_numbers_and_returns_lists_in_input_order():
    task, examples = ListTask(), examples_of_varied_length()
    totals = task.evaluate(nn.Linear(1, 1), examples)
    # the direct computation, one example at a time, in the order given
    assert totals["total"] == sum(sum(e) for e in examples) and isinstance(totals["total"], int)
    assert totals["count"] == len(examples)
    assert totals["weighted"] == pytest.approx(sum(len(e) for e in examples) / 2)
    assert totals["first"] == [e[0] for e in examples]
    assert totals["lengths"] == [len(e) for e in examples]
    assert len(task.batch_inputs) == 6  # 17 examples in batches of 3


def test_evaluate_without_bucketing_gives_the_same_totals():
    examples = examples_of_varied_length()
    assert ListTask(batch_size=4, bucket=False).evaluate(nn.Linear(1, 1), examples) == ListTask(batch_size=5).evaluate(nn.Linear(1, 1), examples)


def test_evaluate_restores_the_model_mode_and_computes_without_gradients():
    class Probe(ListTask):
        def evaluate_batch(self, model, batch):
            assert not model.training and not torch.is_grad_enabled()
            return {"n": 1}

    model = nn.Linear(1, 1)
    assert Probe().evaluate(model, [[1], [2]]) == {"n": 1}
    assert model.training
    model.eval()
    Probe().evaluate(model, [[1]])
    assert not model.training


def test_a_list_of_the_wrong_length_is_a_clear_error():
    class Wrong(ListTask):
        def evaluate_batch(self, model, batch):
            return {"items": [0]}

    with pytest.raises(ValueError, match="'items' holds 1 items for a batch of 3 examples"):
        Wrong().evaluate(nn.Linear(1, 1), examples_of_varied_length())


def test_evaluating_nothing_is_a_clear_error():
    from nlptoolkit import NlptkError

    with pytest.raises(NlptkError, match="no examples"):
        ListTask().evaluate(nn.Linear(1, 1), [])


def test_label_vocabulary_has_no_specials():
    labels = Vocabulary.labels(["pos", "neg", "pos", "neutral"])
    assert labels.itos == ["neg", "neutral", "pos"] and labels.encode(["pos", "neg"]) == [2, 0]
    assert (labels.pad_id, labels.unk_id, labels.bos_id, labels.eos_id) == (None, None, None, None)
    with pytest.raises(KeyError):
        labels.encode(["unseen"])
    tags = Vocabulary.build([["NN", "VB", "NN"]], specials=(Vocabulary.PAD,))
    assert tags.itos == ["<pad>", "NN", "VB"] and tags.pad_id == 0 and tags.eos_id is None
    assert Vocabulary(tags.itos, specials=tags.specials).stoi == tags.stoi
    with pytest.raises(ValueError):
        Vocabulary(["NN", "<pad>"], specials=(Vocabulary.PAD,))


def test_predict_json_lines_hold_the_structured_results(trained_run, cli):
    texts = ["dull and lifeless", "a gorgeous, witty, seductive movie.", "zzz"]
    code, out, err = cli(["predict", trained_run.dir, "--json", *texts])
    assert code == 0, err
    results = [json.loads(line) for line in out.splitlines()]
    assert [r["input"] for r in results] == texts
    code, plain, err = cli(["predict", trained_run.dir, *texts])
    for result, line in zip(results, plain.splitlines()):
        probs = result["probabilities"]
        assert set(probs) == {"negative", "positive"} and sum(probs.values()) == pytest.approx(1.0)
        assert result["label"] == max(probs, key=probs.get) and result["probability"] == probs[result["label"]]
        assert line == f"{result['label']}\t{result['probability']:.4f}\t{result['input']}"
