"""Load test of `nlptk serve`: throughput and latency with dynamic batching on and off.

    python benchmarks/bench_serve.py --json                       # trains a sentiment run first (about 30 s)
    python benchmarks/bench_serve.py --run runs/sentiment --clients 32 --seconds 15

Starts `nlptk serve` on a free loopback port, once with dynamic batching and
once with --no-batching, and drives each from --clients concurrent clients,
each sending one sentence per request and the next as soon as the answer
comes (closed loop). Each server first gets --warmup seconds of the same
load, not measured. The modes then take turns, --repeats rounds of at most
--requests requests or --seconds seconds each; throughputs are medians over
the rounds. Each server's CPU time per request is reported too: on shared
cores it moves less with other jobs' load than the wall-clock numbers. The baseline, in the same run: the Python
API's ``Run.predict`` called one text at a time in this process (no HTTP).
Target (README): with 32 clients, batching >= 4x the throughput of batching
off, and p99 latency <= 250 ms.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu, cpu_line, environment  # noqa: E402
from serving import Connection, ServerProcess, cpu_seconds, rss_mb  # noqa: E402
from soak_serve import sentences  # noqa: E402

import nlptoolkit  # noqa: E402


def percentile(values: List[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summarise(name: str, rounds: List[Dict[str, Any]], extra: Dict[str, Any]) -> Dict[str, Any]:
    """Median throughput over the rounds; latency percentiles over every request of every round."""
    latencies = [x for r in rounds for x in r["latencies"]]
    return {
        "mode": name, "requests": len(latencies), "errors": sum(r["errors"] for r in rounds),
        "throughput": round(statistics.median(len(r["latencies"]) / r["seconds"] for r in rounds), 1),
        "throughput_rounds": [round(len(r["latencies"]) / r["seconds"], 1) for r in rounds],
        "p50_ms": round(1000 * percentile(latencies, 0.50), 2), "p99_ms": round(1000 * percentile(latencies, 0.99), 2), **extra,
    }


def drive(url: str, texts: List[str], clients: int, requests: int, seconds: float) -> Dict[str, Any]:
    """``clients`` closed-loop clients, one text per request, until ``requests`` are answered or ``seconds`` pass."""
    bodies = [json.dumps({"texts": [t]}).encode() for t in texts]
    latencies: List[float] = []
    errors = 0

    async def run() -> float:
        nonlocal errors
        connections = [Connection(url) for _ in range(clients)]
        for k, connection in enumerate(connections):  # warm up: connections open, first batches run
            await connection.request("POST", "/predict", bodies[k % len(bodies)])
        sent = 0
        start = time.perf_counter()
        deadline = start + seconds

        async def one_client(k: int) -> None:
            nonlocal sent, errors
            while sent < requests and time.perf_counter() < deadline:
                body = bodies[(sent + k) % len(bodies)]
                sent += 1
                t0 = time.perf_counter()
                status, _ = await connections[k].request("POST", "/predict", body)
                latencies.append(time.perf_counter() - t0)
                errors += status != 200

        await asyncio.gather(*(one_client(k) for k in range(clients)))
        elapsed = time.perf_counter() - start
        for connection in connections:
            connection.close()
        return elapsed

    client_cpu = time.process_time()
    elapsed = asyncio.run(run())
    return {"latencies": latencies, "seconds": elapsed, "errors": errors, "client_cpu": time.process_time() - client_cpu}


class Served:
    """One `nlptk serve` process, and what its rounds measured."""

    def __init__(self, name: str, run_dir: str, flags: List[str]) -> None:
        self.name = name
        self.server = ServerProcess(run_dir, ["--no-access-log", *flags])
        self.rounds: List[Dict[str, Any]] = []
        self.texts = self.batches = 0
        self.cpu = 0.0

    def warm_up(self, texts: List[str], args: argparse.Namespace) -> None:
        """The same load for ``args.warmup`` seconds, not measured: oneDNN compiles a kernel for
        each new batch shape (texts x longest text), and a batching server meets hundreds."""
        drive(self.server.url, texts, args.clients, args.requests, args.warmup)

    def measure(self, texts: List[str], args: argparse.Namespace) -> None:
        before, cpu_before = json.loads(_get(self.server.url + "/health")), cpu_seconds(self.server.pid)
        self.rounds.append(drive(self.server.url, texts, args.clients, args.requests, args.seconds))
        after, cpu_after = json.loads(_get(self.server.url + "/health")), cpu_seconds(self.server.pid)
        self.texts += after["texts"] - before["texts"]
        self.batches += after["batches"] - before["batches"]
        self.cpu += cpu_after - cpu_before

    def finish(self) -> Dict[str, Any]:
        memory = rss_mb(self.server.pid)
        code = self.server.close()
        answered = sum(len(r["latencies"]) for r in self.rounds)
        return summarise(self.name, self.rounds, {
            "mean_batch": round(self.texts / max(1, self.batches), 1),
            "server_cpu_ms_per_request": round(1000 * self.cpu / max(1, self.texts), 3),  # moves less with other load than wall time
            "client_cpu_ms_per_request": round(1000 * sum(r["client_cpu"] for r in self.rounds) / max(1, answered), 3),
            "server_rss_mb": round(memory, 1), "exit_code": code,
        })


class InProcess:
    """The Python API, one text per call, in this process: no HTTP, no batching."""

    name = "Run.predict, one text at a time, in-process"

    def __init__(self, run_dir: str, texts: List[str]) -> None:
        import torch

        torch.set_num_threads(1)  # as the server's model thread (nlptk serve --threads 1)
        self.run = nlptoolkit.load(run_dir)
        for text in texts[:10]:
            self.run.predict([text])
        self.rounds: List[Dict[str, Any]] = []

    def warm_up(self, texts: List[str], args: argparse.Namespace) -> None:
        start = time.perf_counter()
        for k in range(len(texts) * 100):
            if time.perf_counter() - start > args.warmup:
                return
            self.run.predict([texts[k % len(texts)]])

    def measure(self, texts: List[str], args: argparse.Namespace) -> None:
        latencies: List[float] = []
        start = time.perf_counter()
        while len(latencies) < args.requests and time.perf_counter() - start < args.seconds:
            t0 = time.perf_counter()
            self.run.predict([texts[len(latencies) % len(texts)]])
            latencies.append(time.perf_counter() - t0)
        self.rounds.append({"latencies": latencies, "seconds": time.perf_counter() - start, "errors": 0})

    def finish(self) -> Dict[str, Any]:
        return summarise(self.name, self.rounds, {"mean_batch": 1.0})


def _get(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def train_run(folder: Path) -> str:
    """A sentiment run from the bundled recipe, one epoch: its speed, not its accuracy, is measured."""
    run_dir = folder / "sentiment"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    subprocess.run([sys.executable, "-m", "nlptoolkit.cli", "run", "sentiment", "--set", "train.epochs=1", "--output-dir", str(run_dir), "--quiet"],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    return str(run_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", help="A sentiment run folder (default: train one, one epoch of the bundled recipe).")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=5000, help="At most this many requests per mode and round.")
    parser.add_argument("--seconds", type=float, default=5, help="At most this long per mode and round.")
    parser.add_argument("--warmup", type=float, default=3, help="Seconds of unmeasured load on each server before the rounds.")
    parser.add_argument("--repeats", type=int, default=3, help="Rounds; the modes take turns in each, and throughputs are medians.")
    parser.add_argument("--max-batch-size", type=int, default=None, help="Passed to nlptk serve (default: its own).")
    parser.add_argument("--max-wait-ms", type=float, default=None, help="Passed to nlptk serve (default: its own).")
    parser.add_argument("--json", action="store_true", help="Print one JSON object.")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = args.run or train_run(Path(tmp))
        texts = sentences()
        flags = [f for k, v in (("--max-batch-size", args.max_batch_size), ("--max-wait-ms", args.max_wait_ms)) if v is not None for f in (k, str(v))]
        modes = [Served("nlptk serve, dynamic batching", run_dir, flags), Served("nlptk serve, --no-batching", run_dir, ["--no-batching"]),
                 InProcess(run_dir, texts)]
        for mode in modes:
            mode.warm_up(texts, args)
        for _ in range(args.repeats):  # interleaved, so that a burst of other load hits every mode alike
            for mode in modes:
                mode.measure(texts, args)
        rows = [mode.finish() for mode in modes]
    on, off, alone = rows
    report = {
        **environment(), **cpu(), "load_average": os.getloadavg(), "clients": args.clients, "rows": rows,
        "batching_speedup": round(on["throughput"] / off["throughput"], 2),
        "batching_speedup_rounds": [round(a / b, 2) for a, b in zip(on["throughput_rounds"], off["throughput_rounds"])],
        "server_cpu_ratio": round(off["server_cpu_ms_per_request"] / on["server_cpu_ms_per_request"], 2),
        "batching_vs_in_process": round(on["throughput"] / alone["throughput"], 2),
        "targets": {"batching_speedup >= 4": on["throughput"] >= 4 * off["throughput"], "p99 <= 250 ms": on["p99_ms"] <= 250},
    }
    if args.json:
        print(json.dumps(report))
        return
    print(cpu_line(report))
    print(f"{report['machine']}; torch {report['torch']}; {args.clients} clients; {args.repeats} rounds of {args.seconds:g} s; load average {' '.join(f'{x:.2f}' for x in report['load_average'])}")
    print("| mode | requests | requests/s | p50 ms | p99 ms | texts per model call | server CPU ms per request | errors |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['mode']} | {r['requests']:,} | {r['throughput']:,.1f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['mean_batch']} | "
              f"{r.get('server_cpu_ms_per_request', '-')} | {r['errors']} |")
    print(f"batching speedup: {report['batching_speedup']}x over --no-batching (rounds: {report['batching_speedup_rounds']}), "
          f"{report['batching_vs_in_process']}x over Run.predict one text at a time; server CPU per request {report['server_cpu_ratio']}x less")


if __name__ == "__main__":
    main()
