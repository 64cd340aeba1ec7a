"""Process groups for whoever launches work: training or sampling.

One process with no launcher needs nothing. `torchrun` sets RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR and MASTER_PORT, and `init_distributed` joins that group (gloo on CPU, nccl on GPU).

Multi-node, with torchrun's rendezvous (run the same line on every node):
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d --rdzv_endpoint=HOST:29500 \
        --rdzv_id=RUN_NAME -m reel.cli train ...
or with the DeepSpeed launcher and a hostfile (`HOST slots=8` per line):
    deepspeed --hostfile hostfile --module reel.cli train ...
The run directory must be on a filesystem every node sees: all ranks write one checkpoint folder.

Ranks are split into data-parallel x sequence-parallel: the sp_size ranks of one sequence-parallel
group are consecutive (so they share a node where possible) and see the same samples.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist

from reel.errors import ReelError


@dataclass(frozen=True)
class ParallelRanks:
    rank: int
    world_size: int
    local_rank: int
    dp_rank: int
    dp_size: int
    sp_rank: int
    sp_size: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def default_backend() -> str:
    return "nccl" if torch.cuda.is_available() else "gloo"


def default_device(local_rank: int = 0) -> torch.device:
    return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")


def split_ranks(rank: int, world_size: int, sp_size: int = 1) -> tuple[int, int, int, int]:
    """(dp_rank, dp_size, sp_rank, sp_size) of `rank` when consecutive ranks form sp groups."""
    if sp_size < 1 or world_size % sp_size:
        raise ReelError(f"distributed.sp_size={sp_size}: must divide the number of processes ({world_size})")
    return rank // sp_size, world_size // sp_size, rank % sp_size, sp_size


def _current_rank_and_size() -> tuple[int, int, int]:
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    else:
        rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    return rank, world, int(os.environ.get("LOCAL_RANK", 0))


def parallel_ranks(sp_size: int = 1) -> ParallelRanks:
    rank, world, local_rank = _current_rank_and_size()
    dp_rank, dp_size, sp_rank, sp_size = split_ranks(rank, world, sp_size)
    return ParallelRanks(rank, world, local_rank, dp_rank, dp_size, sp_rank, sp_size)


def init_distributed(sp_size: int = 1, backend: Optional[str] = None) -> ParallelRanks:
    """Join the launcher's process group; for one process without a launcher, do nothing."""
    if launched_by_torchrun() and not dist.is_initialized():
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend or default_backend())
    return parallel_ranks(sp_size)


def init_single_process_group(backend: Optional[str] = None) -> None:
    """A group of one, for libraries (DeepSpeed) that insist on a process group.

    An in-memory store needs no port, so parallel runs on one machine never collide.
    """
    if dist.is_initialized():
        return
    os.environ.setdefault("LOCAL_RANK", "0")  # DeepSpeed reads it; RANK stays unset, so no launcher is implied
    dist.init_process_group(backend=backend or default_backend(), store=dist.HashStore(), rank=0, world_size=1)


def barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def broadcast_object(obj, src: int = 0):
    """`obj` from rank `src` on every rank."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
