"""Fuzzing: random recipes at `nlptk validate`, random data rows at `nlptk run`.

Whatever comes in, `nlptk` must either succeed (exit 0) or print one `error:`
line and exit 2: never a traceback, never a crash, never a hang. The CLI runs
in this process (the ``cli`` fixture), so an exception that `main` does not turn
into a one-line error fails the test with its traceback.

Each test prints how many cases it ran (``pytest -s``) and adds the counts to
``.pytest_cache/nlptk_fuzz_counts.json``. The default suite runs a small sample;
``pytest -m slow tests/test_fuzz.py`` runs many more.
"""
from __future__ import annotations

import json
from typing import Any, Dict

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import REPO, one_line_error

COUNTS_FILE = REPO / ".pytest_cache" / "nlptk_fuzz_counts.json"


def record(name: str, cases: int, outcomes: Dict[str, int], record_property) -> None:
    print(f"\nfuzz: {cases} {name} cases, 0 tracebacks ({outcomes.get('ok', 0)} ok, {outcomes.get('error', 0)} one-line errors)")
    record_property(f"fuzz_{name}_cases", cases)
    try:
        COUNTS_FILE.parent.mkdir(exist_ok=True)
        counts = json.loads(COUNTS_FILE.read_text()) if COUNTS_FILE.exists() else {}
        counts[name] = {"cases": cases, "tracebacks": 0, **outcomes}
        COUNTS_FILE.write_text(json.dumps(counts, indent=2) + "\n")
    except (OSError, ValueError):
        pass


def check_outcome(code: int, out: str, err: str, outcomes: Dict[str, int]) -> None:
    """Exit 0, or exit 2 with exactly one `error:` line; training may log evaluations before it."""
    assert "Traceback" not in out + err, err
    if code == 0:
        outcomes["ok"] = outcomes.get("ok", 0) + 1
        return
    lines = err.strip("\n").split("\n")
    if len(lines) > 1 and code == 2:  # `nlptk run` logs evaluations, then fails
        assert all(not line.startswith("error:") for line in lines[:-1]), err
        lines = lines[-1:]
    one_line_error(code, out, "\n".join(lines) + "\n")
    outcomes["error"] = outcomes.get("error", 0) + 1


# --------------------------------------------------------------------------
# values
# --------------------------------------------------------------------------
texts = st.text(max_size=30) | st.sampled_from(["", " ", "\x00", "\t\n", "lstm", "${HOME}", "${NOPE}", "${NOPE:-3}", "1e400", "é😀", "../x", "/dev/null"])
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.sampled_from([0, 1, -1, 2**31, 2**63, 10**100])
    | st.floats(allow_nan=True, allow_infinity=True)
    | texts
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4), max_leaves=12)

KEYS = [
    "name", "task", "task.name", "task.text_field", "task.label_field", "task.dropout", "task.extra", "seed", "device",
    "plugins", "data", "data.files", "data.files.train", "data.files.validation", "data.files.bad-split", "data.hub",
    "data.disk", "data.format", "data.validation_fraction", "data.tokenizer", "data.tokenizer.kind",
    "data.tokenizer.lowercase", "data.tokenizer.vocab_size", "data.tokenizer.min_freq", "data.tokenizer.max_size",
    "encoder", "encoder.cell", "encoder.embedding_dim", "encoder.hidden_size", "encoder.num_layers",
    "encoder.bidirectional", "encoder.dropout", "train", "train.lr", "train.optimizer", "train.batch_size",
    "train.epochs", "train.max_steps", "train.max_minutes", "train.grad_clip", "train.scheduler", "train.warmup_steps",
    "train.eval_every", "train.bucket", "train.early_stopping", "train.early_stopping.metric",
    "train.early_stopping.mode", "train.early_stopping.patience", "unknown", "train.unknown", "encoder.cel",
]


def base_recipe(tiny) -> Dict[str, Any]:
    return yaml.safe_load(tiny.text)


def mutate(data: Dict[str, Any], path: str, value: Any, delete: bool) -> None:
    keys = path.split(".")
    node = data
    for k in keys[:-1]:
        if not isinstance(node.get(k), dict):
            node[k] = {}
        node = node[k]
    if delete:
        node.pop(keys[-1], None)
    elif keys[0] == "plugins":  # never import a random module name: only (missing) file paths
        node[keys[-1]] = [f"./no_such_plugin_{i}.py" for i, _ in enumerate(value)] if isinstance(value, list) else value
    else:
        node[keys[-1]] = value


mutations = st.lists(st.tuples(st.sampled_from(KEYS), values, st.booleans()), min_size=1, max_size=4)


@st.composite
def recipe_files(draw, tiny) -> bytes:
    """The bytes of a recipe file: a mutated valid recipe, random YAML data, random text, or deep nesting."""
    kind = draw(st.sampled_from(["mutated", "mutated", "mutated", "random", "text", "bytes", "deep", "aliases"]))
    if kind == "mutated":
        data = base_recipe(tiny)
        for path, value, delete in draw(mutations):
            mutate(data, path, value, delete)
        return yaml.safe_dump(data, allow_unicode=True).encode("utf-8")
    if kind == "random":
        data = draw(values)
        if isinstance(data, dict):
            data.pop("plugins", None)
        return yaml.safe_dump(data, allow_unicode=True).encode("utf-8")
    if kind == "text":
        return draw(st.text(alphabet=st.characters(blacklist_categories=("Cs",)) | st.sampled_from(list(":-[]{}&*!|>%@`'\"#\n ")), max_size=200)).encode("utf-8")
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "deep":
        depth = draw(st.integers(1, 5000))
        opener, closer = draw(st.sampled_from([("[", "]"), ("{a: ", "}")]))
        return ("name: x\ntrain: " + opener * depth + "1" + closer * depth + "\n").encode()
    # aliases: self-reference and exponential expansion
    levels = draw(st.integers(1, 12))
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"] + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, levels)]
    if draw(st.booleans()):
        lines.append("loop: &loop [*loop]")
    return ("\n".join(lines) + "\n").encode()


def fuzz_validate(cli, tiny, tmp_path, record_property, n: int) -> None:
    recipe = tmp_path / "fuzz.yaml"
    outcomes: Dict[str, int] = {}
    count = [0]

    @settings(max_examples=n, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(content=recipe_files(tiny), overrides=st.lists(st.tuples(st.sampled_from(KEYS), st.text(max_size=20)), max_size=2))
    def one(content: bytes, overrides) -> None:
        count[0] += 1
        recipe.write_bytes(content)
        args = ["validate", recipe]
        for key, text in overrides:
            if not key.startswith("plugins"):
                args += ["--set", f"{key}={text}"]
        check_outcome(*cli(args), outcomes)

    one()
    assert outcomes.get("ok", 0) >= 1 or n < 50  # the fuzzer also reaches valid recipes
    record("recipe", count[0], outcomes, record_property)


def test_fuzz_validate(cli, tiny_sentiment, tmp_path, record_property):
    fuzz_validate(cli, tiny_sentiment, tmp_path, record_property, 100)


@pytest.mark.slow
def test_fuzz_validate_many(cli, tiny_sentiment, tmp_path, record_property):
    fuzz_validate(cli, tiny_sentiment, tmp_path, record_property, 3000)


# --------------------------------------------------------------------------
# data rows
# --------------------------------------------------------------------------
row_text = (
    st.text(max_size=60)
    | st.sampled_from(["", " ", "\x00", "\x07\x1b[31m", "\u200b", "a\r\nb", "😀 é ñ", "\ufeffgood"])
    | st.builds(lambda word, n: (word + " ") * n, st.sampled_from(["good", "bad", "x" * 50]), st.integers(100, 3000))
)
labels = st.sampled_from(["positive", "negative"]) | scalars | st.lists(scalars, max_size=2) | st.dictionaries(texts, scalars, max_size=2)


@st.composite
def data_lines(draw) -> bytes:
    """One line of a .jsonl file."""
    kind = draw(st.sampled_from(["good", "good", "good", "row", "row", "missing", "raw", "bytes", "json"]))
    if kind == "good":
        return json.dumps({"text": draw(st.sampled_from(["a good film", "dull and bad", "fine"])), "label": draw(st.sampled_from(["positive", "negative"]))}).encode()
    if kind == "row":
        return json.dumps({"text": draw(row_text | scalars), "label": draw(labels)}, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
    if kind == "missing":
        row = draw(st.dictionaries(st.sampled_from(["text", "label", "other", ""]), values, max_size=3))
        return json.dumps(row).encode()
    if kind == "raw":
        return draw(st.sampled_from([b"", b"   ", b"null", b"[]", b"[1, 2]", b'"text"', b"1", b"true", b"{", b'{"text": "x", "label": "positive"', b"\xef\xbb\xbf{}"]))
    if kind == "bytes":
        return draw(st.binary(max_size=60)).replace(b"\n", b" ")
    return json.dumps(draw(values)).encode()


def fuzz_run(cli, tiny, tmp_path, record_property, n: int) -> None:
    train = tmp_path / "fuzz_train.jsonl"
    validation = tmp_path / "fuzz_validation.jsonl"
    validation.write_text("".join(json.dumps({"text": r, "label": l}) + "\n" for r, l in [("a good film", "positive"), ("dull and bad", "negative")] * 3))
    outcomes: Dict[str, int] = {}
    count = [0]

    @settings(max_examples=n, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(lines=st.lists(data_lines(), min_size=0, max_size=12), same_validation=st.booleans(), newline=st.sampled_from([b"\n", b"\r\n"]))
    def one(lines, same_validation, newline) -> None:
        count[0] += 1
        train.write_bytes(newline.join(lines) + (newline if lines else b""))
        args = [
            "run", tiny.recipe, "--output-dir", tmp_path / "out", "--force", "--quiet",
            "--set", "train.max_steps=1", "--set", f"data.files.train={train}",
            "--set", f"data.files.validation={train if same_validation else validation}",
        ]
        check_outcome(*cli(args), outcomes)

    one()
    record("data", count[0], outcomes, record_property)


@pytest.fixture
def private_datasets_cache(tmp_path, monkeypatch):
    """Keep the fuzzed files' `datasets` cache out of the user's cache folder."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")


def test_fuzz_run_data(cli, tiny_sentiment, tmp_path, record_property, private_datasets_cache):
    fuzz_run(cli, tiny_sentiment, tmp_path, record_property, 25)


@pytest.mark.slow
def test_fuzz_run_data_many(cli, tiny_sentiment, tmp_path, record_property, private_datasets_cache):
    fuzz_run(cli, tiny_sentiment, tmp_path, record_property, 400)
