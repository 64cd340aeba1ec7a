"""A distilled few-step generator's rollout: Euler on its own grid, with gradients where training wants them.

The same Euler steps `reel sample` takes with the student (guidance 1, one conditional pass a
step), so what distillation trains is what sampling runs. Training a generator through its own
rollout needs a choice of where gradients flow: DMD2's backward simulation runs the earlier
steps without a graph and backpropagates through the last one only.

`few_step_rollout` generates the whole clip at once; `causal_few_step_rollout` generates a
block-causal model's clip chunk by chunk against its cache, as `reel sample long=true` does
(self-forcing: the student is trained on its own cached rollouts, not on clean context).
"""
from __future__ import annotations

import contextlib
from typing import Optional, Sequence

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


def causal_few_step_rollout(model, noise: torch.Tensor, text_emb: torch.Tensor, text_mask: Optional[torch.Tensor],
                            times: torch.Tensor, grad_last_only: bool = True,
                            stop_steps: Optional[Sequence[int]] = None) -> torch.Tensor:
    """A block-causal model's clip (B, C, T, H, W), chunk by chunk as inference makes it: each chunk of
    `noise` takes the Euler steps of `times` against the cache of the chunks before it, and its result
    is committed to the cache at t = 0 (detached: the cache carries no gradient, as in Self Forcing,
    Huang et al. 2025).

    `stop_steps` (one per chunk, backward simulation) stops chunk k's rollout at grid step
    stop_steps[k] and takes its x0 prediction there, x - t v (None: every chunk runs the whole grid).
    With `grad_last_only`, only the last evaluation of each chunk has a graph; otherwise every step
    within a chunk does. The whole cache is kept (the clip is a training clip, and the teacher and
    critic see all of it). `model` is a DiT or a wrapper of one (the DeepSpeed engine): chunks run
    through its __call__ with `cache=`.
    """
    if len(times) < 2:
        raise ValueError(f"a rollout needs at least two times, got {len(times)}")
    module = getattr(model, "module", model)
    chunk = module.config.causal_chunk
    if chunk is None:
        raise ValueError("causal_few_step_rollout needs a block-causal model (model.causal_chunk)")
    frames = noise.shape[2]
    starts = range(0, frames, chunk)
    if stop_steps is None:
        stop_steps = [len(times) - 2] * len(starts)
    if len(stop_steps) != len(starts) or not all(0 <= s <= len(times) - 2 for s in stop_steps):
        raise ValueError(f"stop_steps={list(stop_steps)}: need one step in [0, {len(times) - 2}] for each of the "
                         f"{len(starts)} chunks")
    cache = module.init_cache()
    batch = noise.shape[0]
    chunks = []
    for start, stop in zip(starts, stop_steps):
        grid = torch.cat([times[:stop + 1], times.new_zeros(1)])
        x = noise[:, :, start:start + chunk]
        for i, (t, t_next) in enumerate(zip(grid[:-1], grid[1:])):
            frozen = grad_last_only and i < stop
            with torch.no_grad() if frozen else contextlib.nullcontext():
                t_batch = t.to(device=x.device, dtype=x.dtype).expand(batch)
                v = model(x, t_batch, text_emb, text_mask, cache=cache, frame_offset=start)
                x = x + (t_next - t).item() * v
        chunks.append(x)
        with torch.no_grad():
            clean = x.new_zeros(batch)
            model(x.detach(), clean, text_emb, text_mask, cache=cache, frame_offset=start, update_cache=True)
    return torch.cat(chunks, dim=2)
