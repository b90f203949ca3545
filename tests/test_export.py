"""`nlptk export`: the files, loaded without nlptoolkit, give the run's own outputs.

Each tiny run trains for two steps (the weights only need to be some trained
weights). The exported files are loaded the way a consumer would
(``torch.jit.load``, ``onnxruntime.InferenceSession``) and fed a padded batch
of real inputs of different lengths; the reference is the run's model reading
each input alone, unpadded: what the packed path gives.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

import pytest
import torch

import nlptoolkit
from conftest import one_line_error, real_rows, shared_data_dir, write_jsonl

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")  # the consumer's call; it works in torch 2.13

FORMATS = ("torchscript", "onnx")
TOL = 1e-5
DIFFERENCES: Dict[str, float] = {}  # what each test measured (printed with `pytest -s`)


# --------------------------------------------------------------------------
# a consumer's view: the manifest and the files, no nlptoolkit
# --------------------------------------------------------------------------
def load_graph(folder: Path, name: str) -> Callable[..., List[torch.Tensor]]:
    """The exported graph ``name`` as a function of tensors, by the manifest alone."""
    manifest = json.loads((folder / "manifest.json").read_text())
    graph = manifest["graphs"][name]
    path = str(folder / graph["file"])
    if manifest["format"] == "torchscript":
        module = torch.jit.load(path)

        def call(*inputs: torch.Tensor) -> List[torch.Tensor]:
            with torch.no_grad():
                out = module(*inputs)
            return list(out) if isinstance(out, tuple) else [out]
        return call
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [i["name"] for i in graph["inputs"]]
    assert [i.name for i in session.get_inputs()] == names  # the manifest describes the file

    def run(*inputs: torch.Tensor) -> List[torch.Tensor]:
        return [torch.from_numpy(y) for y in session.run(None, {n: x.numpy() for n, x in zip(names, inputs)})]
    return run


def pad(rows: Sequence[Sequence[int]]) -> Tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(r) for r in rows])
    out = torch.zeros(len(rows), int(lengths.max()), dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r)
    return out, lengths


def ids_from_manifest(folder: Path, text: str, tokenizer: str = "text", vocab: str = "vocab") -> List[int]:
    """Text -> ids from the manifest's tokenizer description and the vocabulary file."""
    manifest = json.loads((folder / "manifest.json").read_text())
    rule = manifest["tokenizers"][tokenizer]
    text = text.lower() if rule["lowercase"] else text
    if rule["kind"] == "char":
        tokens = list(text)
    elif rule.get("regex"):
        tokens = re.findall(rule["regex"], text)
    else:
        tokens = text.split()
    index = {t: i for i, t in enumerate(json.loads((folder / f"{vocab}.json").read_text()))}
    return [index.get(t, manifest["unk_id"]) for t in tokens]


def export_both(run: nlptoolkit.Run, base: Path) -> Dict[str, Path]:
    folders = {fmt: base / fmt for fmt in FORMATS}
    for fmt, folder in folders.items():
        manifest = run.export(folder, format=fmt)
        assert manifest["format"] == fmt and (folder / "manifest.json").is_file()
    return folders


def train(base: Path, recipe: dict) -> nlptoolkit.Run:
    recipe = {"seed": 1, "device": "cpu", **recipe}
    recipe["train"] = {"max_steps": 2, "epochs": 1, "batch_size": 8, "lr": 0.05, "precision": "fp32", **recipe.get("train", {})}
    nlptoolkit.train(recipe, output_dir=base / "run", quiet=True)
    return nlptoolkit.load(base / "run")


def record(key: str, difference: float) -> None:
    DIFFERENCES[key] = max(DIFFERENCES.get(key, 0.0), difference)
    print(f"export max abs difference {key}: {difference:.2e}")
    assert difference <= TOL, f"{key}: {difference}"


# --------------------------------------------------------------------------
# the classifier: LSTM and GRU, one and two directions
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sentiment_data(tmp_path_factory, shared_data) -> Dict[str, str]:
    base = tmp_path_factory.mktemp("sentiment_data")
    return {"train": str(write_jsonl(base / "train.jsonl", real_rows("train", 0, 40))),
            "validation": str(write_jsonl(base / "validation.jsonl", real_rows("validation", 0, 8)))}


@pytest.mark.parametrize("cell,bidirectional,layers,ensemble", [
    ("lstm", False, 1, 1), ("lstm", True, 2, 1), ("gru", False, 2, 1), ("gru", True, 1, 1), ("lstm", True, 1, 3),
])
def test_classifier_export_matches_the_run(sentiment_data, tmp_path, cell, bidirectional, layers, ensemble):
    run = train(tmp_path, {
        "name": "s", "task": {"name": "sentiment", "dropout": 0.0, "pooling": "max" if ensemble > 1 else "final", "ensemble": ensemble},
        "data": {"files": sentiment_data, "tokenizer": {"kind": "word", "lowercase": True, "split_punctuation": True}},
        "encoder": {"cell": cell, "embedding_dim": 8, "hidden_size": 8, "num_layers": layers, "bidirectional": bidirectional},
    })
    folders = export_both(run, tmp_path)
    texts = [r["text"] for r in real_rows("validation", 8, 20)] + ["Gorgeous!", "an utterly zzzqqq film"]
    ids = [ids_from_manifest(folders["onnx"], t) or [1] for t in texts]
    assert len({len(i) for i in ids}) > 5  # variable lengths
    with torch.no_grad():  # the reference: each text alone, no padding
        alone = torch.cat([run.model(torch.tensor([i]), torch.tensor([len(i)])) for i in ids])
    predicted = torch.tensor([[r["probabilities"][label] for label in run.task.labels.itos] for r in run.predict(texts)])
    assert torch.allclose(alone.softmax(-1), predicted, atol=1e-6)  # the manifest's tokenizer reads text as the run does
    tokens, lengths = pad(ids)
    for fmt, folder in folders.items():
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["labels"] == run.task.labels.itos
        assert manifest["graphs"]["model"]["check"]["max_abs_difference"] <= TOL
        (logits,) = load_graph(folder, "model")(tokens, lengths)
        record(f"classifier {cell} {'bi' if bidirectional else 'uni'}{f' ensemble {ensemble}' if ensemble > 1 else ''} {fmt}", float((logits - alone).abs().max()))


# --------------------------------------------------------------------------
# the tagger: character features, CRF, bidirectional
# --------------------------------------------------------------------------
def char_tensors(folder: Path, sentences: List[List[str]]) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The manifest's character inputs, built from its description: distinct words, their characters, an index."""
    manifest = json.loads((folder / "manifest.json").read_text())
    chars = {c: i for i, c in enumerate(json.loads((folder / "chars.json").read_text()))}
    half = manifest["max_chars"] // 2
    rows: Dict[str, int] = {}
    index = torch.zeros(len(sentences), max(map(len, sentences)), dtype=torch.long)
    for b, sentence in enumerate(sentences):
        for t, word in enumerate(sentence):
            index[b, t] = rows.setdefault(word, len(rows)) + 1
    words = [w if len(w) <= manifest["max_chars"] else w[:half] + w[-half:] for w in rows]
    char_ids, char_lengths = pad([[chars.get(c, manifest["unk_id"]) for c in w] for w in words])
    return char_ids, char_lengths, index


def test_tagger_export_matches_the_run(tmp_path, shared_data):
    pos = shared_data_dir() / "tagging" / "pos_wsj"
    rows = [json.loads(line) for line in open(pos / "validation.jsonl", encoding="utf-8")][:40]
    files = {"train": str(write_jsonl(tmp_path / "train.jsonl", rows[:30])), "validation": str(write_jsonl(tmp_path / "validation.jsonl", rows[30:34]))}
    run = train(tmp_path, {
        "name": "t", "task": {"name": "tagging", "decoder": "crf", "dropout": 0.0, "char_encoder": {"hidden_size": 6, "embedding_dim": 6, "max_chars": 8}},
        "data": {"files": files, "tokenizer": {"kind": "word", "lowercase": True}},
        "encoder": {"cell": "lstm", "embedding_dim": 8, "hidden_size": 8, "num_layers": 1, "bidirectional": True},
    })
    folders = export_both(run, tmp_path)
    sentences = [r["tokens"][:n] for r, n in zip(rows[30:40], (25, 3, 1, 12, 40, 7, 2, 18, 9, 30))]
    from datasets import Dataset

    examples = run.task.encode(Dataset.from_dict({"tokens": sentences, "tags": [["NN"] * len(s) for s in sentences]}), "x")
    with torch.no_grad():  # the reference: each sentence alone
        alone = [run.model(run.task.collate([e]))[0] for e in examples]
    for fmt, folder in folders.items():
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["tags"] == run.task.tags.itos and manifest["crf"]["transitions"] == run.model.crf.transitions.tolist()
        vocab = {w: i for i, w in enumerate(json.loads((folder / "vocab.json").read_text()))}
        ids = [[vocab.get(w.lower() if manifest["lowercase_words"] else w, manifest["unk_id"]) for w in s] for s in sentences]
        inputs, lengths = pad(ids)
        (emissions,) = load_graph(folder, "model")(inputs, lengths, *char_tensors(folder, sentences))
        worst = max(float((emissions[b, : len(s)] - alone[b]).abs().max()) for b, s in enumerate(sentences))
        record(f"tagger lstm bi+chars+crf {fmt}", worst)


# --------------------------------------------------------------------------
# the language model: read prompts, then one step
# --------------------------------------------------------------------------
def test_language_model_encoder_and_step_match_the_run(tmp_path):
    text = "".join(line for line in open(shared_data_dir() / "lm" / "tiny_shakespeare" / "validation.txt", encoding="utf-8"))[:3000]
    (tmp_path / "train.txt").write_text(text[:2500], encoding="utf-8")
    (tmp_path / "validation.txt").write_text(text[2500:], encoding="utf-8")
    run = train(tmp_path, {
        "name": "lm", "task": {"name": "language_model", "bptt": 16, "sample_tokens": 0, "dropout": 0.0},
        "data": {"files": {"train": str(tmp_path / "train.txt"), "validation": str(tmp_path / "validation.txt")}, "tokenizer": {"kind": "char"}},
        "encoder": {"cell": "lstm", "embedding_dim": 8, "hidden_size": 12, "num_layers": 2},
    })
    folders = export_both(run, tmp_path)
    prompts = ["ROMEO:", "O", "What light through yonder", "ab\nc", "thou art"]
    for fmt, folder in folders.items():
        ids = [ids_from_manifest(folder, p) for p in prompts]
        tokens, lengths = pad(ids)
        encoder, step = load_graph(folder, "encoder"), load_graph(folder, "decoder_step")
        layers, hidden = 2, 12
        zeros = torch.zeros(layers, len(ids), hidden)
        logits, h, c = encoder(tokens, lengths, zeros, zeros)
        nxt = torch.tensor([int(logits[b, len(i) - 1].argmax()) for b, i in enumerate(ids)])
        step_logits, h2, c2 = step(nxt, h, c)
        worst = 0.0
        with torch.no_grad():
            for b, i in enumerate(ids):  # the reference: each prompt alone, then the next token from its state
                ref_logits, (ref_h, ref_c) = run.model(torch.tensor([i]))
                worst = max(worst, float((logits[b, : len(i)] - ref_logits[0]).abs().max()),
                            float((h[:, b] - ref_h[:, 0]).abs().max()), float((c[:, b] - ref_c[:, 0]).abs().max()))
                ref_step, (ref_h2, ref_c2) = run.model(nxt[b].view(1, 1), (ref_h, ref_c))
                worst = max(worst, float((step_logits[b] - ref_step[0, 0]).abs().max()),
                            float((h2[:, b] - ref_h2[:, 0]).abs().max()), float((c2[:, b] - ref_c2[:, 0]).abs().max()))
        record(f"language model lstm x2 encoder+step {fmt}", worst)


# --------------------------------------------------------------------------
# seq2seq: bidirectional encoder, attention, input feeding; two decoder steps
# --------------------------------------------------------------------------
def test_seq2seq_encoder_and_steps_match_the_run(tmp_path):
    g2p = shared_data_dir() / "seq2seq" / "g2p_cmudict"
    rows = [json.loads(line) for line in open(g2p / "validation.jsonl", encoding="utf-8")][:50]
    files = {"train": str(write_jsonl(tmp_path / "train.jsonl", rows[:40])), "validation": str(write_jsonl(tmp_path / "validation.jsonl", rows[40:44]))}
    run = train(tmp_path, {
        "name": "g2p", "task": {"name": "seq2seq", "target_tokenizer": {"kind": "word"}, "attention": "general", "input_feed": True,
                                "dropout": 0.0, "max_length": 5},
        "data": {"files": files, "tokenizer": {"kind": "char"}},
        "encoder": {"cell": "lstm", "embedding_dim": 8, "hidden_size": 8, "num_layers": 2, "bidirectional": True},
        "train": {"max_steps": 40, "epochs": 8, "eval_every": 40, "lr": 0.03},  # long enough for outputs that differ
    })
    folders = export_both(run, tmp_path)
    words = ["a", "xylophone", "cat", "internationalization", "ox", "phoenix"]
    model = run.model
    for fmt, folder in folders.items():
        manifest = json.loads((folder / "manifest.json").read_text())
        ids = [ids_from_manifest(folder, w, "source", "source_vocab") for w in words]
        src, lengths = pad(ids)
        h, c, feed, memory, keys = load_graph(folder, "encoder")(src, lengths)
        step = load_graph(folder, "decoder_step")
        prev = torch.full((len(words),), manifest["bos_id"])
        worst = 0.0
        states = []
        with torch.no_grad():
            for b, i in enumerate(ids):  # the reference: each word alone through the run's encode / init_state
                ref_memory = model.encode(torch.tensor([i]), torch.tensor([len(i)]))
                states.append((model.init_state(ref_memory), ref_memory))
        for _ in range(2):  # two steps: the second reads the state the first wrote
            log_probs, h, c, feed, attention = step(prev, h, c, feed, memory, keys, lengths)
            with torch.no_grad():
                for b, i in enumerate(ids):
                    ref_state, ref_memory = states[b]
                    ref_lp, ref_state, ref_att = model.step(prev[b : b + 1], ref_state, ref_memory)
                    states[b] = (ref_state, ref_memory)
                    worst = max(worst, float((log_probs[b] - ref_lp[0]).abs().max()),
                                float((attention[b, : len(i)] - ref_att[0]).abs().max()), float(attention[b, len(i):].abs().sum()),
                                float((h[:, b] - ref_state.rnn[0][:, 0]).abs().max()), float((feed[b] - ref_state.feed[0]).abs().max()))
            prev = log_probs.argmax(-1)
        record(f"seq2seq lstm bi+attention+input feed encoder+2 steps {fmt}", worst)
        greedy = greedy_from_files(folder, words)
        assert greedy == [r["output"] for r in run.predict(words, beam_size=1)] and len(set(greedy)) > 3, greedy


def greedy_from_files(folder: Path, words: List[str]) -> List[str]:
    """Greedy decoding with the exported files, following the manifest's rule: what `nlptk predict --beam 1` writes."""
    manifest = json.loads((folder / "manifest.json").read_text())
    itos = json.loads((folder / "target_vocab.json").read_text())
    ids = [ids_from_manifest(folder, w, "source", "source_vocab") for w in words]
    src, lengths = pad(ids)
    h, c, feed, memory, keys = load_graph(folder, "encoder")(src, lengths)
    step = load_graph(folder, "decoder_step")
    rule = manifest["decoding"]
    max_length = min(rule["max_length"], int(rule["max_length_ratio"] * max(map(len, ids))) + 5)
    prev, written, done = torch.full((len(words),), manifest["bos_id"]), [[] for _ in words], [False] * len(words)
    for _ in range(max_length - 1):
        log_probs, h, c, feed, _ = step(prev, h, c, feed, memory, keys, lengths)
        log_probs[:, manifest["never_generate"]] = float("-inf")
        prev = log_probs.argmax(-1)
        for b, token in enumerate(prev.tolist()):
            done[b] = done[b] or token == manifest["eos_id"]
            if not done[b]:
                written[b].append(itos[token])
    return [" ".join(tokens) for tokens in written]  # the target tokenizer is `word`: tokens joined by spaces


# --------------------------------------------------------------------------
# the command: its one-line errors, and nothing overwritten
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_run(tmp_path_factory, sentiment_data) -> Path:
    base = tmp_path_factory.mktemp("small_run")
    train(base, {"name": "s", "task": {"name": "sentiment"}, "data": {"files": sentiment_data},
                 "encoder": {"cell": "gru", "embedding_dim": 4, "hidden_size": 4}})
    return base / "run"


def test_cli_export_writes_the_folder_and_refuses_to_overwrite(small_run, cli, tmp_path):
    out = tmp_path / "exported"
    code, stdout, err = cli(["export", small_run, "--out", out])
    assert code == 0, err
    assert "model.pt" in stdout and sorted(p.name for p in out.iterdir()) == ["labels.json", "manifest.json", "model.pt", "vocab.json"]
    before = (out / "model.pt").read_bytes()
    line = one_line_error(*cli(["export", small_run, "--out", out, "--format", "onnx"]))
    assert "--out" in line and "--force" in line and not (out / "model.onnx").exists()
    code, _, err = cli(["export", small_run, "--out", out, "--format", "onnx", "--force"])
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["labels.json", "manifest.json", "model.onnx", "vocab.json"]
    assert before and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left
    line = one_line_error(*cli(["export", small_run, "--out", small_run, "--force"]))
    assert "run folder" in line and (small_run / "best.pt").is_file()


def test_missing_onnx_extra_is_one_line(small_run, cli, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime raises ImportError
    line = one_line_error(*cli(["export", small_run, "--format", "onnx", "--out", tmp_path / "x"]))
    assert "pip install 'nlptoolkit[export]'" in line and "onnxruntime" in line
    assert not (tmp_path / "x").exists()


def test_bad_run_folder_is_one_line(cli, tmp_path):
    line = one_line_error(*cli(["export", tmp_path / "nope", "--out", tmp_path / "x"]))
    assert "nope" in line
    (tmp_path / "empty").mkdir()
    line = one_line_error(*cli(["export", tmp_path / "empty", "--out", tmp_path / "x"]))
    assert "recipe.yaml" in line and not (tmp_path / "x").exists()


def test_unsupported_task_names_the_ones_that_are(small_run, cli, tmp_path):
    """A task without ``exportable`` (here a plugin's classifier that opts out) gets a one-line error listing the others."""
    plugin = tmp_path / "opt_out.py"
    plugin.write_text(
        "from nlptoolkit import Task, register_task\n"
        "from nlptoolkit_plugins.sentiment import SentimentTask\n"
        "@register_task('plain_sentiment')\n"
        "class Plain(SentimentTask):\n"
        "    exportable = Task.exportable\n",
        encoding="utf-8",
    )
    run = tmp_path / "run"
    run.mkdir()
    for file in small_run.iterdir():
        if file.is_file():
            (run / file.name).write_bytes(file.read_bytes())
    recipe = (run / "recipe.yaml").read_text().replace("name: sentiment", "name: plain_sentiment")
    (run / "recipe.yaml").write_text(recipe.replace("plugins: []", f"plugins: [{plugin}]"))
    line = one_line_error(*cli(["export", run, "--out", tmp_path / "x"]))
    assert "'plain_sentiment' cannot be exported" in line
    assert "language_model, sentiment, seq2seq, tagging" in line


def test_a_trace_that_bakes_in_a_value_fails_the_check_and_writes_nothing(tmp_path):
    """The exporter's own check: a module that branches on a value traces one branch; run on a
    batch of another size the written file disagrees with the module, and no folder appears."""
    from types import SimpleNamespace

    from torch import nn

    from nlptoolkit.export import Exportable, ExportGraph, example_tokens, export_run

    class Branchy(nn.Module):
        def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
            total = tokens.float().sum(1)
            return total if int(lengths.max()) < 10 else -total  # traced at time 7, checked at 11

    graph = ExportGraph("model", Branchy(), ["tokens", "lengths"], ["y"], {"tokens": {0: "batch", 1: "time"}, "lengths": {0: "batch"}, "y": {0: "batch"}},
                        lambda batch, time: example_tokens(batch, time, 10))
    task = SimpleNamespace(name="stub", exportable=lambda model: Exportable([graph]))
    with pytest.raises(nlptoolkit.NlptkError, match="'model' failed its check"):
        export_run(task, nn.Identity(), tmp_path / "run", "torchscript", tmp_path / "out")
    assert list(tmp_path.iterdir()) == []  # neither the folder nor a temporary one
