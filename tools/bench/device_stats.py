"""Timing and memory helpers every benchmark here uses."""
from __future__ import annotations

import resource

import torch


def peak_mb(device: str) -> float:
    """Peak memory so far: max allocated on CUDA, the process's max RSS on CPU."""
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()
