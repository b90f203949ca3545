"""Multi-process training on torch.distributed, with torchrun's conventions.

`nlptk run R --nproc N` starts N copies of itself through ``torch.distributed.run``
(the module behind ``torchrun``); each copy finds RANK, WORLD_SIZE and
LOCAL_RANK in its environment, joins the process group (gloo on CPU, NCCL on
GPU), and trains a DistributedDataParallel model on its share of every global
batch. Only rank 0 writes the run folder. On several machines, start
``torchrun --nnodes ... -m nlptoolkit.cli run R`` on each yourself.
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from typing import List

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
    """Run `nlptk <cli_args>` in ``nproc`` processes on this machine; return the exit code."""
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
        "-m", "nlptoolkit.cli", *cli_args,
    ]
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")  # N processes share the cores
    return subprocess.call(command, env=env)


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
