"""Start `nlptk serve` as a subprocess, read its memory and CPU time, and talk to it cheaply:
shared by bench_serve.py, soak_serve.py and the tests."""
from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parents[1]
READY = re.compile(r"^serving .* on (http://\S+):", re.M)


class ServerProcess:
    """``nlptk serve RUN --port 0 ARGS`` in a subprocess; ``url`` once it takes requests.

    Its stderr goes to a file (a pipe nobody reads would fill and stall the
    server). Use as a context manager: leaving it sends SIGTERM and waits.
    """

    def __init__(self, run_dir: str, args: Sequence[str] = (), env: Optional[Dict[str, str]] = None, timeout: float = 120) -> None:
        self.log = tempfile.NamedTemporaryFile("w+", prefix="nlptk-serve-", suffix=".log", delete=False)
        full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
        command = [sys.executable, "-m", "nlptoolkit.cli", "serve", str(run_dir), "--port", "0", *args]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=self.log, env=full_env)
        self.pid = self.process.pid
        deadline = time.monotonic() + timeout
        while True:
            found = READY.search(self.stderr())
            if found:
                self.url = found.group(1)
                return
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.process.kill()
                raise RuntimeError(f"nlptk serve did not start (exit {self.process.poll()}):\n{self.stderr()}")
            time.sleep(0.05)

    def stderr(self) -> str:
        return Path(self.log.name).read_text(encoding="utf-8", errors="replace")

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, then the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()

    def close(self) -> int:
        """Stop it (if running) and remove its log; the exit code."""
        code = self.stop()
        self.log.close()
        if os.path.exists(self.log.name):
            os.unlink(self.log.name)
        return code

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def rss_mb(pid: int) -> float:
    """Resident memory of a process (VmRSS in /proc/PID/status), in MB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used (/proc/PID/stat), all its threads."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Connection:
    """One keep-alive HTTP/1.1 connection for a load generator, written out by hand.

    httpx (used by the soak and the tests) spends 2-3 ms of CPU on a request,
    more than the server spends answering it; on two shared cores the load
    test would mostly measure its own client. This does the least HTTP/1.1
    that /predict needs: one request at a time, responses with Content-Length.
    """

    def __init__(self, url: str) -> None:
        host_port = url.split("://", 1)[1].rstrip("/")
        self.host, _, port = host_port.rpartition(":")
        self.port = int(port)
        self.reader: Optional[asyncio.StreamReader] = None
        self.writer: Optional[asyncio.StreamWriter] = None

    async def request(self, method: str, path: str, body: bytes = b"") -> Tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = (f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode("ascii")
        self.writer.write(head + body)
        raw = await self.reader.readuntil(b"\r\n\r\n")
        status = int(raw[9:12])
        headers = dict(line.split(b":", 1) for line in raw.split(b"\r\n")[1:] if b":" in line)
        headers = {k.strip().lower(): v.strip() for k, v in headers.items()}
        payload = await self.reader.readexactly(int(headers.get(b"content-length", b"0")))
        if headers.get(b"connection", b"").lower() == b"close":
            self.close()
        return status, payload

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.reader = self.writer = None
