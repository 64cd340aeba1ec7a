"""Noise -> latents with a DiT, a solver and classifier-free guidance."""
from __future__ import annotations

from typing import Optional

import torch

from reel.sample.guidance import guided_velocity
from reel.sample.image_condition import set_prefix, with_clean_prefix
from reel.sample.solvers import SOLVERS
from reel.sample.timesteps import sampling_times


def initial_noise(shape: tuple, seeds: list[int], device="cpu", dtype=torch.float32) -> torch.Tensor:
    """One independent noise draw per seed (CPU generator, so a seed gives the same noise on any device)."""
    draws = [torch.randn(shape, generator=torch.Generator().manual_seed(int(seed))) for seed in seeds]
    return torch.stack(draws).to(device, dtype)


@torch.no_grad()
def sample_latents(model, text_emb: torch.Tensor, text_mask: Optional[torch.Tensor], negative_emb: torch.Tensor,
                   negative_mask: Optional[torch.Tensor], noise: torch.Tensor, steps: int, guidance: float,
                   shift: float = 1.0, solver: str = "euler", progress=None,
                   known: Optional[torch.Tensor] = None, temporal_patch: int = 1) -> torch.Tensor:
    """Latents from noise; `known` (B or 1, C, k, h, w) holds the first k latent frames clean (image-to-video)."""
    if known is not None:
        model = with_clean_prefix(model, known, temporal_patch)
    velocity = guided_velocity(model, text_emb, text_mask, negative_emb, negative_mask, guidance)
    latents = SOLVERS[solver](velocity, set_prefix(noise, known), sampling_times(steps, shift), progress=progress)
    return set_prefix(latents, known)
