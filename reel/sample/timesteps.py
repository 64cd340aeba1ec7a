"""Flow-matching time: x_t = (1 - t) x_0 + t noise, so t = 1 is pure noise and t = 0 is data."""
from __future__ import annotations

import torch


def shift_time(t: torch.Tensor, shift: float) -> torch.Tensor:
    """The resolution shift of SD3/Sana: t -> shift t / (1 + (shift - 1) t). shift > 1 moves time
    toward noise, where large latents still hold their coarse structure."""
    if shift == 1.0:
        return t
    return shift * t / (1.0 + (shift - 1.0) * t)


def sampling_times(steps: int, shift: float = 1.0) -> torch.Tensor:
    """steps + 1 times from 1 down to 0 (float64 so every solver sees the same grid)."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    return shift_time(torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64), shift)
