"""Noise -> latents with a DiT, a solver and classifier-free guidance."""
from __future__ import annotations

from typing import Optional

import torch

from reel.sample.guidance import guided_velocity
from reel.sample.solvers import SOLVERS
from reel.sample.timesteps import sampling_times


def initial_noise(shape: tuple, seeds: list[int], device="cpu", dtype=torch.float32) -> torch.Tensor:
    """One independent noise draw per seed (CPU generator, so a seed gives the same noise on any device)."""
    draws = [torch.randn(shape, generator=torch.Generator().manual_seed(int(seed))) for seed in seeds]
    return torch.stack(draws).to(device, dtype)


@torch.no_grad()
def sample_latents(model, text_emb: torch.Tensor, text_mask: Optional[torch.Tensor], negative_emb: torch.Tensor,
                   negative_mask: Optional[torch.Tensor], noise: torch.Tensor, steps: int, guidance: float,
                   shift: float = 1.0, solver: str = "euler", progress=None) -> torch.Tensor:
    velocity = guided_velocity(model, text_emb, text_mask, negative_emb, negative_mask, guidance)
    return SOLVERS[solver](velocity, noise, sampling_times(steps, shift), progress=progress)
