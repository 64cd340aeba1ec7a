"""A distilled few-step generator's rollout: Euler on its own grid, with gradients where training wants them.

The same Euler steps `reel sample` takes with the student (guidance 1, one conditional pass a
step), so what distillation trains is what sampling runs. Training a generator through its own
rollout needs a choice of where gradients flow: DMD2's backward simulation runs the earlier
steps without a graph and backpropagates through the last one only.

This is whole-clip generation; a block-causal model would roll out chunk by chunk through
`forward_chunk` with the same signature.
"""
from __future__ import annotations

import contextlib
from typing import Optional

import torch


def few_step_rollout(model, noise: torch.Tensor, text_emb: torch.Tensor, text_mask: Optional[torch.Tensor],
                     times: torch.Tensor, grad_last_only: bool = True) -> torch.Tensor:
    """Euler from `noise` at times[0] over the descending grid `times`: x_{t'} = x_t + (t' - t) v(x_t, t).

    With `grad_last_only` every step but the last runs without a graph (the last step's input is a
    constant); otherwise gradients flow through every step. Outside autograd (torch.no_grad) the
    flag changes nothing.
    """
    if len(times) < 2:
        raise ValueError(f"a rollout needs at least two times, got {len(times)}")
    x = noise
    last = len(times) - 2
    for i, (t, t_next) in enumerate(zip(times[:-1], times[1:])):
        frozen = grad_last_only and i < last
        with torch.no_grad() if frozen else contextlib.nullcontext():
            t_batch = t.to(device=x.device, dtype=x.dtype).expand(x.shape[0])
            v = model(x, t_batch, text_emb, text_mask)
            x = x + (t_next - t).item() * v
    return x
