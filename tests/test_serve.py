"""`nlptk serve`: the endpoints, every kind of bad request, dynamic batching, and shutdown on SIGTERM.

The expectation for every answer is the Python API on the same run:
/predict returns what ``Run.predict`` returns, /generate streams what
``Run.generate`` makes. The endpoints run in-process through FastAPI's
TestClient (which runs the app's startup and shutdown); shutdown and the
soak run a real `nlptk serve` process.
"""
from __future__ import annotations

import asyncio
import json
import socket
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List

import pytest
from fastapi.testclient import TestClient

import nlptoolkit
from conftest import REPO, one_line_error, real_rows, write_jsonl
from nlptoolkit.serve.app import ServeSettings, create_app
from nlptoolkit.serve.batcher import Batcher
from nlptoolkit.serve.requests import Limits

sys.path.insert(0, str(REPO / "benchmarks"))
from serving import ServerProcess  # noqa: E402
from soak_serve import soak  # noqa: E402

TEXTS = [r["text"] for r in real_rows("validation", 0, 24)]


@pytest.fixture(scope="module")
def run(trained_run) -> nlptoolkit.Run:
    return nlptoolkit.load(trained_run.dir)


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory) -> nlptoolkit.Run:
    """A character LM, briefly trained on "hello" (the expectation is the Python API on the same run)."""
    folder = tmp_path_factory.mktemp("hello")
    for split in ("train", "validation"):
        (folder / f"{split}.txt").write_text("hello", encoding="utf-8")
    recipe = {
        "name": "hello", "device": "cpu",
        "task": {"name": "language_model", "bptt": 4, "dropout": 0.0, "sample_tokens": 0},
        "data": {"files": {"train": str(folder / "train.txt"), "validation": str(folder / "validation.txt")}, "tokenizer": {"kind": "char"}},
        "encoder": {"cell": "lstm", "embedding_dim": 8, "hidden_size": 16, "num_layers": 1},
        "train": {"batch_size": 1, "epochs": 20, "lr": 0.05, "eval_every": 100000},
    }
    return nlptoolkit.train(recipe, output_dir=folder / "run", quiet=True)


def close(a: Any, b: Any, tol: float = 1e-5) -> bool:
    """Equal results, numbers within ``tol`` (a batch pads; alone it does not)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(close(a[k], b[k], tol) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(close(x, y, tol) for x, y in zip(a, b))
    if isinstance(a, float):
        return abs(a - b) <= tol
    return a == b


def recording(run: nlptoolkit.Run) -> List[int]:
    """Make ``run.predict`` note the number of texts of every call; return that list."""
    sizes: List[int] = []
    predict = run.predict

    def counted(texts):
        sizes.append(len(texts))
        return predict(texts)

    run.predict = counted
    return sizes


# ----------------------------------------------------------------------------
# endpoints
# ----------------------------------------------------------------------------
def test_predict_returns_what_the_python_api_returns(run):
    with TestClient(create_app(run)) as client:
        response = client.post("/predict", json={"texts": TEXTS[:5]})
        assert response.status_code == 200
        assert response.json() == run.predict(TEXTS[:5])  # one request: the same call, the same numbers
        assert response.json()[0]["label"] in ("negative", "positive")


def test_health_and_info(run, trained_run):
    with TestClient(create_app(run, ServeSettings(max_batch_size=8, max_wait_ms=2.0))) as client:
        client.post("/predict", json={"texts": TEXTS[:3]})
        assert client.get("/health").json() == {"status": "ok", "queued": 0, "batches": 1, "texts": 3}
        info = client.get("/info").json()
    assert info["task"] == "sentiment" and info["labels"] == run.task.labels.itos == ["negative", "positive"]
    assert info["recipe"]["encoder"]["hidden_size"] == 16 and info["recipe"]["train"]["max_steps"] == 6
    assert info["endpoints"] == ["/predict", "/health", "/info"]
    assert info["batching"] == {"max_batch_size": 8, "max_wait_ms": 2.0}


def test_generate_streams_what_the_python_api_generates(lm_run):
    with TestClient(create_app(lm_run)) as client:
        with client.stream("POST", "/generate", json={"prompt": "h", "max_tokens": 4, "temperature": 0}) as response:
            assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
            pieces = list(response.iter_text())
        assert len(pieces) == 5 and "".join(pieces) == lm_run.generate("h", 4, temperature=0)  # the prompt, then one piece per token
        sampled = client.post("/generate", json={"prompt": "he", "max_tokens": 30, "temperature": 1.5, "top_k": 3, "seed": 5}).text
        assert sampled == lm_run.generate("he", 30, temperature=1.5, top_k=3, seed=5)
        assert client.post("/predict", json={"texts": ["hello"]}).json() == {"error": "this 'language_model' run does not predict from text; POST /generate"}


# ----------------------------------------------------------------------------
# bad requests: a 4xx with a one-line JSON error, and the server carries on
# ----------------------------------------------------------------------------
LIMITS = Limits(max_texts=3, max_chars=40, max_new_tokens=50)
BAD_PREDICT = [
    (b"{not json", 400, "not valid JSON"),
    (b"", 400, "not valid JSON"),
    (b"\xff\xfe", 400, "not valid JSON"),
    (b"[" * 2000 + b"]" * 2000, 400, "not valid JSON"),  # nested deeper than the parser goes
    (b'["a"]', 422, "the body is a JSON array"),
    (b"{}", 422, "missing field 'texts'"),
    (b'{"text": ["a"]}', 422, "unknown field 'text' (did you mean 'texts'?)"),
    (b'{"texts": "a film"}', 422, "texts: expected a list of strings, got a JSON string"),
    (b'{"texts": []}', 422, "texts: the list is empty"),
    (b'{"texts": ["fine", 3]}', 422, "texts[1]: expected a string, got a JSON number"),
    (b'{"texts": [null]}', 422, "texts[0]: expected a string, got a JSON null"),
    (b'{"texts": [["nested"]]}', 422, "texts[0]: expected a string, got a JSON array"),
    (b'{"texts": ["  "]}', 422, "texts[0]: the text is empty"),
    (b'{"texts": ["\\ud800 lone surrogate"]}', 422, "texts[0]: not valid Unicode"),
    (b'{"texts": ["a", "b", "c", "d"]}', 413, "4 texts, more than this server's limit of 3"),
    (json.dumps({"texts": ["x" * 41]}).encode(), 413, "texts[0]: 41 characters, more than this server's limit of 40"),
    (json.dumps({"texts": ["x" * 10_000]}).encode(), 413, "the body is over"),
]


@pytest.mark.parametrize("body, status, message", BAD_PREDICT, ids=[m for _, _, m in BAD_PREDICT])
def test_bad_predict_request_is_a_4xx_and_the_server_carries_on(run, body, status, message):
    with TestClient(create_app(run, ServeSettings(limits=LIMITS))) as client:
        response = client.post("/predict", content=body, headers={"content-type": "application/json"})
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert message in error and "\n" not in error
        assert client.post("/predict", json={"texts": ["still here"]}).status_code == 200


BAD_GENERATE = [
    ({"prompt": 5}, 422, "prompt: expected a string"),
    ({"prompt": "h" * 41}, 413, "prompt: 41 characters"),
    ({"max_tokens": 51}, 413, "max_tokens: 51 is more than this server's limit of 50"),
    ({"max_tokens": -1}, 422, "max_tokens: expected an integer >= 0"),
    ({"max_tokens": 2.5}, 422, "max_tokens: expected an integer"),
    ({"temperature": -1}, 422, "temperature: expected a number >= 0"),
    ({"temperature": "hot"}, 422, "temperature: expected a number"),
    ({"top_k": 0}, 422, "top_k: expected an integer >= 1"),
    ({"seed": True}, 422, "seed: expected an integer >= 0"),
    ({"promt": "h"}, 422, "unknown field 'promt' (did you mean 'prompt'?)"),
]


@pytest.mark.parametrize("body, status, message", BAD_GENERATE, ids=[m for _, _, m in BAD_GENERATE])
def test_bad_generate_request_is_a_4xx(lm_run, body, status, message):
    with TestClient(create_app(lm_run, ServeSettings(limits=LIMITS))) as client:
        response = client.post("/generate", json=body)
        assert response.status_code == status and message in response.json()["error"], response.text
        assert client.post("/generate", json={"prompt": "h", "max_tokens": 4, "temperature": 0}).text == lm_run.generate("h", 4, temperature=0)


def test_wrong_path_or_method_and_the_other_tasks_endpoint_are_4xx_json(run):
    with TestClient(create_app(run)) as client:
        assert client.get("/nowhere").json() == {"error": "Not Found"}
        assert client.get("/predict").status_code == 405
        response = client.post("/generate", json={})
        assert response.status_code == 404 and response.json()["error"] == "this 'sentiment' run does not generate text; POST /predict"


# ----------------------------------------------------------------------------
# dynamic batching
# ----------------------------------------------------------------------------
def post_together(client: TestClient, bodies: List[dict]) -> List[Any]:
    with ThreadPoolExecutor(len(bodies)) as pool:
        responses = list(pool.map(lambda b: client.post("/predict", json=b), bodies))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    return [r.json() for r in responses]


def test_concurrent_requests_run_as_one_batch_with_the_results_of_one_at_a_time(run):
    """16 requests at once: one call of predict for all 16 texts (the batch is full before the long wait
    ends), and each request gets what predicting its text alone gives."""
    sizes = recording(run)
    try:
        with TestClient(create_app(run, ServeSettings(max_batch_size=16, max_wait_ms=60_000))) as client:
            answers = post_together(client, [{"texts": [t]} for t in TEXTS[:16]])
        assert sizes == [16]
        for text, answer in zip(TEXTS, answers):
            assert close(answer, run.predict([text]))
    finally:
        del run.predict


def tiny_run(folder: Path, task: Dict[str, Any], files: Dict[str, List[dict]], tokenizer: Dict[str, Any], steps: int) -> nlptoolkit.Run:
    """A few seconds of training on real rows: enough for answers that differ from text to text."""
    for split, rows in files.items():
        write_jsonl(folder / f"{split}.jsonl", rows)
    recipe = {
        "name": task["name"], "seed": 3, "device": "cpu", "task": task,
        "data": {"files": {split: str(folder / f"{split}.jsonl") for split in files}, "tokenizer": tokenizer},
        "encoder": {"cell": "lstm", "embedding_dim": 16, "hidden_size": 16, "bidirectional": True},
        "train": {"batch_size": 16, "epochs": 20, "max_steps": steps, "eval_every": steps, "lr": 0.03, "precision": "fp32"},
    }
    return nlptoolkit.train(recipe, output_dir=folder / "run", quiet=True)


def jsonl_rows(path: Path, stop: int) -> List[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line, _ in zip(f, range(stop))]


@pytest.fixture(scope="module")
def tagger_run(tmp_path_factory, shared_data) -> nlptoolkit.Run:
    """A POS tagger with a CRF and a character encoder: Viterbi over a batch of sentences of different lengths."""
    pos = shared_data / "tagging" / "pos_wsj"
    return tiny_run(tmp_path_factory.mktemp("pos"), {"name": "tagging", "decoder": "crf", "char_encoder": {"hidden_size": 8, "embedding_dim": 8}},
                    {"train": jsonl_rows(pos / "train.jsonl", 120), "validation": jsonl_rows(pos / "validation.jsonl", 20)},
                    {"kind": "word", "lowercase": True}, steps=30)


@pytest.fixture(scope="module")
def seq2seq_run(tmp_path_factory, shared_data) -> nlptoolkit.Run:
    """Grapheme to phoneme with attention: beam search over a batch of words of different lengths."""
    g2p = shared_data / "seq2seq" / "g2p_cmudict"
    return tiny_run(tmp_path_factory.mktemp("g2p"), {"name": "seq2seq", "attention": "general", "target_tokenizer": {"kind": "word"}, "max_length": 12},
                    {"train": jsonl_rows(g2p / "train.jsonl", 400), "validation": jsonl_rows(g2p / "validation.jsonl", 20)},
                    {"kind": "char"}, steps=60)


@pytest.mark.parametrize("which", ["tagger_run", "seq2seq_run"])
def test_a_tagger_and_a_seq2seq_run_serve_what_run_predict_gives(which, request, shared_data):
    """Eight concurrent one-text requests run as one batch; each answer equals ``Run.predict`` on its text
    alone, and one request with all eight texts equals ``Run.predict`` on all of them."""
    run = request.getfixturevalue(which)
    if which == "tagger_run":
        texts = [" ".join(r["tokens"]) for r in jsonl_rows(shared_data / "tagging" / "pos_wsj" / "validation.jsonl", 8)]
    else:
        texts = [r["source"] for r in jsonl_rows(shared_data / "seq2seq" / "g2p_cmudict" / "validation.jsonl", 8)]
    assert len({len(t) for t in texts}) > 1  # lengths differ: the batch pads
    alone = [run.predict([t]) for t in texts]
    together = run.predict(texts)
    sizes = recording(run)
    try:
        with TestClient(create_app(run, ServeSettings(max_batch_size=8, max_wait_ms=60_000))) as client:
            answers = post_together(client, [{"texts": [t]} for t in texts])
            whole = client.post("/predict", json={"texts": texts})
        assert sizes == [8, 8]  # the eight requests as one batch, then the request of eight
        assert whole.status_code == 200
        assert close(answers, alone) and close(whole.json(), together)
        assert answers[0][0]["input"] == texts[0]
        assert len({json.dumps(a[0].get("tags", a[0].get("output"))) for a in answers}) > 1  # the model reads its input
    finally:
        del run.predict


def test_batches_take_whole_requests_up_to_the_batch_size(run):
    sizes = recording(run)
    try:
        with TestClient(create_app(run, ServeSettings(max_batch_size=8, max_wait_ms=60_000))) as client:
            answers = post_together(client, [{"texts": TEXTS[i:i + 2]} for i in range(0, 16, 2)])
        assert sizes == [8, 8]
        assert close([a for answer in answers for a in answer], run.predict(TEXTS[:16]))
    finally:
        del run.predict


def test_without_batching_each_request_runs_alone(run):
    sizes = recording(run)
    try:
        with TestClient(create_app(run, ServeSettings.unbatched())) as client:
            post_together(client, [{"texts": [t]} for t in TEXTS[:6]] + [{"texts": TEXTS[6:9]}])
        assert sorted(sizes) == [1, 1, 1, 1, 1, 1, 3]
    finally:
        del run.predict


def test_batcher_runs_a_lone_request_after_the_wait_and_survives_a_failing_call():
    calls: List[List[str]] = []

    def predict(texts):
        calls.append(list(texts))
        if "boom" in texts:
            raise RuntimeError("boom")
        return [t.upper() for t in texts]

    async def scenario():
        batcher = Batcher(predict, ThreadPoolExecutor(1), max_batch_size=4, max_wait_ms=20)
        batcher.start()
        start = time.monotonic()
        assert await batcher.submit(["a"]) == ["A"]
        waited = time.monotonic() - start
        big = await batcher.submit(["b", "c", "d", "e", "f"])  # bigger than a batch: runs whole, alone
        failed = await asyncio.gather(batcher.submit(["boom"]), batcher.submit(["x"]), return_exceptions=True)
        after = await batcher.submit(["g"])
        await batcher.close()
        return waited, big, failed, after

    waited, big, failed, after = asyncio.run(scenario())
    assert waited >= 0.02 and big == ["B", "C", "D", "E", "F"] and after == ["G"]
    assert isinstance(failed[0], RuntimeError) and isinstance(failed[1], RuntimeError)  # both were in the failing batch
    assert calls == [["a"], ["b", "c", "d", "e", "f"], ["boom", "x"], ["g"]]


def test_requests_that_queued_while_the_model_was_busy_run_as_soon_as_it_is_free():
    """The wait for company counts from a request's arrival, not from when the model thread frees up:
    a request that queued behind a long model call has waited long enough and runs at once, so the
    HTTP work of one batch overlaps the model work of the next."""
    release = threading.Event()
    started: List[float] = []

    def predict(texts):
        started.append(time.monotonic())
        if texts == ["slow", "call"]:
            release.wait(10)
        return [t.upper() for t in texts]

    async def scenario():
        batcher = Batcher(predict, ThreadPoolExecutor(1), max_batch_size=2, max_wait_ms=1000)
        batcher.start()
        slow = asyncio.ensure_future(batcher.submit(["slow", "call"]))  # a full batch: runs at once, and blocks
        await asyncio.sleep(0.05)
        queued = asyncio.ensure_future(batcher.submit(["a"]))  # half a batch: would wait up to 1 s for company
        await asyncio.sleep(1.2)  # ... but it has waited longer than that when the model frees up
        freed = time.monotonic()
        release.set()
        results = await asyncio.gather(slow, queued)
        await batcher.close()
        return freed, results

    freed, results = asyncio.run(scenario())
    assert results == [["SLOW", "CALL"], ["A"]]
    assert started[1] - freed < 0.5  # it did not wait another max_wait (1 s) after the model was free


# ----------------------------------------------------------------------------
# the command: a missing extra, a busy port, SIGTERM, and a short soak
# ----------------------------------------------------------------------------
def test_missing_extra_is_a_one_line_error(cli, trained_run, monkeypatch):
    monkeypatch.setitem(sys.modules, "fastapi", None)  # import fastapi now raises ImportError
    line = one_line_error(*cli(["serve", trained_run.dir]))
    assert 'pip install "nlptoolkit[serve]"' in line


def test_busy_port_is_a_one_line_error(cli, trained_run):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        line = one_line_error(*cli(["serve", trained_run.dir, "--port", port]))
    assert f"--port {port}: cannot listen there" in line and "pick another --port" in line


def post(url: str, body: dict) -> tuple:
    request = urllib.request.Request(url + "/predict", json.dumps(body).encode(), {"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.status, json.loads(response.read())


def get_json(url: str, path: str) -> dict:
    with urllib.request.urlopen(url + path, timeout=10) as response:
        return json.loads(response.read())


def test_sigterm_finishes_the_requests_in_flight_and_exits_0(trained_run, run):
    """Six requests wait in the batch queue (a 60 s wait for company); SIGTERM: all six are answered, exit 0."""
    server = ServerProcess(trained_run.dir, ["--max-wait-ms", "60000", "--max-batch-size", "64", "--no-access-log"], env={"OMP_NUM_THREADS": "1"})
    answers: List[Any] = [None] * 6

    def client(i: int) -> None:
        answers[i] = post(server.url, {"texts": [TEXTS[i]]})

    threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while get_json(server.url, "/health")["queued"] < 6:
        assert time.monotonic() < deadline, "the requests never reached the queue"
        time.sleep(0.02)
    start = time.monotonic()
    try:
        code = server.stop()
        for t in threads:
            t.join(30)
        assert code == 0, server.stderr()
        assert time.monotonic() - start < 30  # the queue was run at once, not after its 60 s wait
        assert [status for status, _ in answers] == [200] * 6
        for i, (_, result) in enumerate(answers):
            assert close(result, run.predict([TEXTS[i]]))
        assert "Traceback" not in server.stderr()
    finally:
        server.close()


def test_short_soak_good_answers_bad_4xx_no_5xx(trained_run):
    with ServerProcess(trained_run.dir, ["--no-access-log", "--max-texts", "8", "--max-chars", "300"], env={"OMP_NUM_THREADS": "1"}) as server:
        report = soak(server.url, trained_run.dir, requests=300, concurrency=8, max_texts=8, max_chars=300, pid=server.pid)
    assert report["server_errors"] == 0 and report["wrong_answers"] == 0 and report["bad_not_4xx"] == 0, report
    assert report["good"] > 100 and report["bad"] > 50


def test_it_listens_on_loopback_unless_told_otherwise():
    import inspect

    from nlptoolkit.cli import serve as serve_command
    from nlptoolkit.serve.server import serve

    assert {p.name: p.default for p in serve_command.params}["host"] == "127.0.0.1"
    assert inspect.signature(serve).parameters["host"].default == "127.0.0.1"
