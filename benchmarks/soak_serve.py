"""Soak `nlptk serve`: thousands of mixed good and bad requests, then check every answer and the memory.

    python benchmarks/soak_serve.py --run runs/sentiment --requests 10000 --json

Starts the server (or uses --url), sends the requests from concurrent clients
on loopback, and checks: every good /predict answer equals what
``Run.predict`` gives in this process (labels equal, probabilities within
1e-4: the server batches, this process predicts each text alone); every bad
request gets the 4xx its kind calls for; no 5xx at all; and the server's
resident memory (VmRSS) after the last request is within 10% of what it was
after the first tenth (the first thousand of 10,000).
"""
from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import random
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving import REPO, ServerProcess, rss_mb  # noqa: E402

sys.path.insert(0, str(REPO))
import nlptoolkit  # noqa: E402


def sentences(limit: int = 300) -> List[str]:
    """Real sentences: the bundled sentiment validation split."""
    path = REPO / "nlptoolkit" / "bundled_data" / "sentiment" / "movie_snippets" / "validation.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f][:limit]


def bad_requests(max_texts: int, max_chars: int) -> List[Tuple[str, str, str, bytes, int]]:
    """(kind, method, path, body, expected status): one of each kind of mistake."""
    long_text = "very " * (max_chars // 5 + 1)
    return [
        ("bad JSON", "POST", "/predict", b'{"texts": ["unfinished', 400),
        ("not UTF-8", "POST", "/predict", b'{"texts": ["\xff"]}', 400),
        ("not an object", "POST", "/predict", b'"a film"', 422),
        ("missing field", "POST", "/predict", b'{"sentences": ["a film"]}', 422),
        ("texts not a list", "POST", "/predict", b'{"texts": "a film"}', 422),
        ("non-string text", "POST", "/predict", b'{"texts": ["a film", 42]}', 422),
        ("empty list", "POST", "/predict", b'{"texts": []}', 422),
        ("empty text", "POST", "/predict", b'{"texts": [""]}', 422),
        ("lone surrogate", "POST", "/predict", b'{"texts": ["\\udc80"]}', 422),
        ("too many texts", "POST", "/predict", json.dumps({"texts": ["a film"] * (max_texts + 1)}).encode(), 413),
        ("over-long text", "POST", "/predict", json.dumps({"texts": [long_text]}).encode(), 413),
        ("wrong method", "GET", "/predict", b"", 405),
        ("unknown path", "POST", "/predicts", b'{"texts": ["a film"]}', 404),
    ]


def soak(
    url: str, run_dir: str, requests: int = 10_000, concurrency: int = 16, max_texts: int = 64, max_chars: int = 2000,
    pid: Optional[int] = None, good_share: float = 0.7, seed: int = 0, log: Callable[[str], None] = lambda s: None,
) -> Dict[str, Any]:
    """Send ``requests`` mixed requests to ``url``; count what went wrong. ``pid``: the server, for its memory."""
    import httpx

    rng = random.Random(seed)
    pool = sentences()
    run = nlptoolkit.load(run_dir)
    expected = dict(zip(pool, run.predict(pool)))
    alone = {text: run.predict([text])[0] for text in pool[:20]}  # batched and alone agree (checked on a few)
    assert all(close(alone[t], expected[t]) for t in alone), "Run.predict differs between batch and alone"
    bad = bad_requests(max_texts, max_chars)
    plan: List[Any] = []
    for _ in range(requests):
        if rng.random() < good_share:
            plan.append(("good", rng.sample(pool, rng.randint(1, min(4, max_texts)))))
        else:
            plan.append(("bad", rng.choice(bad)))
    counts = {"good": 0, "bad": 0, "wrong_answers": 0, "bad_not_4xx": 0, "bad_wrong_status": 0, "server_errors": 0}
    problems: List[str] = []
    checkpoint = max(1, requests // 10)
    rss: List[Tuple[int, float]] = []
    done = 0

    async def one(client: "httpx.AsyncClient", item: Any) -> None:
        nonlocal done
        kind, what = item
        if kind == "good":
            response = await client.post("/predict", json={"texts": what})
            counts["good"] += 1
            if response.status_code >= 500:
                counts["server_errors"] += 1
            if response.status_code != 200 or not close(response.json(), [expected[t] for t in what]):
                counts["wrong_answers"] += 1
                problems.append(f"good request answered {response.status_code}: {response.text[:200]}")
        else:
            name, method, path, body, status = what
            response = await client.request(method, path, content=body, headers={"content-type": "application/json"})
            counts["bad"] += 1
            if response.status_code >= 500:
                counts["server_errors"] += 1
            if not 400 <= response.status_code < 500 or "error" not in response.json():
                counts["bad_not_4xx"] += 1
                problems.append(f"{name}: answered {response.status_code}: {response.text[:200]}")
            elif response.status_code != status:
                counts["bad_wrong_status"] += 1
                problems.append(f"{name}: answered {response.status_code}, expected {status}")
        done += 1
        if pid is not None and done % checkpoint == 0:
            rss.append((done, rss_mb(pid)))
            log(f"{done:,} requests, server RSS {rss[-1][1]:.1f} MB")

    async def drive() -> None:
        queue: "asyncio.Queue[Any]" = asyncio.Queue()
        for item in plan:
            queue.put_nowait(item)
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
            async def worker() -> None:
                while not queue.empty():
                    await one(client, queue.get_nowait())
            await asyncio.gather(*(worker() for _ in range(concurrency)))

    start = time.perf_counter()
    asyncio.run(drive())
    report: Dict[str, Any] = {"requests": requests, "seconds": round(time.perf_counter() - start, 2), **counts, "problems": problems[:10]}
    if rss:
        first, last = rss[0][1], rss[-1][1]
        report.update({"rss_mb": [[n, round(m, 1)] for n, m in rss], "rss_first_mb": round(first, 1), "rss_last_mb": round(last, 1),
                       "rss_growth": round(last / first - 1, 4)})
    return report


def close(a: Any, b: Any, tol: float = 1e-4) -> bool:
    """Equal results, numbers within ``tol``; the label may differ only where two labels tie within ``tol``."""
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(close(x, y, tol) for x, y in zip(a, b))
    if not isinstance(a, dict) or not isinstance(b, dict) or a.keys() != b.keys():
        return False
    p, q = a.get("probabilities", {}), b.get("probabilities", {})
    if p.keys() != q.keys() or any(abs(p[k] - q[k]) > tol for k in p):
        return False
    tie = a.get("label") != b.get("label") and abs(p.get(a.get("label"), 0) - p.get(b.get("label"), 0)) <= 2 * tol
    same = all(a[k] == b[k] or (k == "probability" and abs(a[k] - b[k]) <= tol) for k in a if k != "probabilities")
    return same or tie


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="A sentiment run folder (nlptk run sentiment).")
    parser.add_argument("--url", help="A server that is already running (default: start one on a free port).")
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=600, help="Give up after this long (a bound, not a target).")
    parser.add_argument("--json", action="store_true", help="Print one JSON object.")
    args = parser.parse_args()
    log = (lambda s: print(s, file=sys.stderr)) if args.json else print
    if args.url:
        report = soak(args.url, args.run, args.requests, args.concurrency, log=log)
    else:
        with ServerProcess(args.run, ["--no-access-log"]) as server:
            report = soak(server.url, args.run, args.requests, args.concurrency, pid=server.pid, log=log)
            report["exit_code_after_sigterm"] = server.stop()
    report["passed"] = (report["server_errors"] == 0 and report["wrong_answers"] == 0 and report["bad_not_4xx"] == 0
                        and abs(report.get("rss_growth", 0)) <= 0.10)
    if args.json:
        print(json.dumps(report))
        return
    print(f"| requests | good | bad | wrong answers | bad not 4xx | 5xx | RSS after first 10% | RSS at end | growth | seconds |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| {report['requests']:,} | {report['good']:,} | {report['bad']:,} | {report['wrong_answers']} | {report['bad_not_4xx']} | "
          f"{report['server_errors']} | {report.get('rss_first_mb', '-')} MB | {report.get('rss_last_mb', '-')} MB | "
          f"{100 * report.get('rss_growth', 0):+.1f}% | {report['seconds']} |")
    for line in report["problems"]:
        print("  " + line)
    print("passed" if report["passed"] else "FAILED")


if __name__ == "__main__":
    main()
