"""Start `nlptk serve` as a subprocess, and read its memory: shared by bench_serve.py, soak_serve.py and the tests."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, Optional, Sequence

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

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        os.unlink(self.log.name)


def rss_mb(pid: int) -> float:
    """Resident memory of a process (VmRSS in /proc/PID/status), in MB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")
