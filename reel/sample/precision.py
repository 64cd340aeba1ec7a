"""The number format sampling runs in: fp32 (exact, the default) or bf16 autocast.

bf16 autocast runs the DiT's matmuls and the autoencoder's convolutions in bfloat16 where the device has
bf16 kernels (CUDA, and CPUs with AVX-512 BF16 or AMX); the latents and the solver's updates stay fp32.
On the demo models it moves decoded frames by about 0.1 of a uint8 level on average.
"""
from __future__ import annotations

import contextlib
from typing import Union

import torch

from reel.errors import ReelError

PRECISIONS = ("fp32", "bf16")


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ReelError(f"sample.precision={precision!r}: must be one of {', '.join(PRECISIONS)}")
    return precision


def sampling_precision(precision: str, device: Union[str, torch.device]):
    """A context manager: nothing for fp32, bf16 autocast on the device's type for bf16."""
    if check_precision(precision) == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
