"""ODE solvers for flow-matching velocity models, integrating from t = 1 (noise) to t = 0 (data)."""
from __future__ import annotations

import torch

from reel.sample.guidance import Velocity


@torch.no_grad()
def euler(velocity: Velocity, noise: torch.Tensor, times: torch.Tensor, progress=None) -> torch.Tensor:
    """x_{t'} = x_t + (t' - t) v(x_t, t) over the grid `times` (descending, from sampling_times)."""
    x = noise
    for t, t_next in zip(times[:-1], times[1:]):
        v = velocity(x, t.to(noise.device, torch.float32).reshape(1))
        x = x + (t_next - t).item() * v
        if progress is not None:
            progress.update(1)
    return x


SOLVERS = {"euler": euler}
