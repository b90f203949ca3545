"""Multi-process training on torch.distributed, with torchrun's conventions.

`nlptk run R --nproc N` starts N copies of itself with torchrun's environment
variables (see :func:`launch`); each copy finds RANK, WORLD_SIZE and
LOCAL_RANK in its environment, joins the process group (gloo on CPU, NCCL on
GPU), and trains a DistributedDataParallel model on its share of every global
batch. Only rank 0 writes the run folder. On several machines, start
``torchrun --nnodes ... -m nlptoolkit.cli run R`` on each yourself.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import List, Optional

import torch
import torch.distributed as dist


@dataclass
class ProcessInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launch(nproc: int, cli_args: List[str]) -> int:
    """Run `nlptk <cli_args>` in ``nproc`` processes on this machine; return their exit code.

    The processes find each other through torchrun's environment variables
    (MASTER_ADDR/PORT, RANK, WORLD_SIZE, LOCAL_RANK). torchrun's own launcher is not
    used for this: on Ctrl-C or SIGTERM it ends with a traceback and exit code 1
    even when the workers stopped cleanly, and a terminal's Ctrl-C reaches the
    workers twice (directly and forwarded). Here the workers run in their own
    session, get each SIGINT/SIGTERM exactly once, forwarded from this process,
    and their exit code is ours: 0, 130/143 after a signal, 2 for a user error.
    """
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), WORLD_SIZE=str(nproc), LOCAL_WORLD_SIZE=str(nproc))
    env.setdefault("OMP_NUM_THREADS", "1")  # N processes share the cores
    command = [sys.executable, "-m", "nlptoolkit.cli", *cli_args]
    workers = [
        subprocess.Popen(command, env=dict(env, RANK=str(rank), LOCAL_RANK=str(rank)), start_new_session=True)
        for rank in range(nproc)
    ]

    def forward(signum: int, frame: object) -> None:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signum)

    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {s: signal.signal(s, forward) for s in handled}
    try:
        return wait_for(workers)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()


CLEAN_EXITS = (0, 130, 143)  # finished, or stopped by SIGINT/SIGTERM after saving last.pt
FAILURE_GRACE_SECONDS = 10.0


def wait_for(workers: List[subprocess.Popen]) -> int:
    """Wait for every worker; the first failure's exit code, else rank 0's.

    A worker that fails leaves the others waiting in a collective for ever: they
    get FAILURE_GRACE_SECONDS to end on their own (most fail the same way), then
    are killed.
    """
    failed_at: Optional[float] = None
    while any(w.poll() is None for w in workers):
        if failed_at is None and any(w.poll() not in (None, *CLEAN_EXITS) for w in workers):
            failed_at = time.monotonic()
        if failed_at is not None and time.monotonic() - failed_at > FAILURE_GRACE_SECONDS:
            for w in workers:
                if w.poll() is None:
                    w.kill()
        time.sleep(0.05)
    codes = [w.returncode if w.returncode >= 0 else 128 - w.returncode for w in workers]  # -9 -> 137
    return next((c for c in codes if c not in CLEAN_EXITS), codes[0])


def free_port() -> int:
    """A TCP port that is free on this machine now, for the processes' rendezvous."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def init_from_env() -> ProcessInfo:
    """Join the process group if torchrun started us; otherwise a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return ProcessInfo()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    return ProcessInfo(dist.get_rank(), dist.get_world_size(), local_rank)


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
