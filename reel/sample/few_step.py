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
    Huang et al. 2025). The commit rides on the next chunk's first evaluation when that one runs without
    a graph (the clean chunk at t = 0 in front of it, DiT.forward_chunk's commit_frames), as in
    `reel sample`; before an evaluation with a graph it is a pass of its own, so no gradient reaches the
    cache. The last chunk is never committed (nothing reads the cache after it).

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
    batch, pt = noise.shape[0], module.patch_size[0]
    chunks = []
    for start, stop in zip(starts, stop_steps):
        grid = torch.cat([times[:stop + 1], times.new_zeros(1)])
        x = noise[:, :, start:start + chunk]
        previous = chunks[-1].detach() if chunks else None  # not yet in the cache
        for i, (t, t_next) in enumerate(zip(grid[:-1], grid[1:])):
            graph = torch.is_grad_enabled() and not (grad_last_only and i < stop)
            if previous is not None and graph:  # commit on its own: the cache must carry no gradient
                with torch.no_grad():
                    model(previous, previous.new_zeros(batch), text_emb, text_mask, cache=cache,
                          frame_offset=start - chunk, update_cache=True)
                previous = None
            with contextlib.nullcontext() if graph else torch.no_grad():
                t_batch = t.to(device=x.device, dtype=x.dtype).expand(batch)
                if previous is None:
                    v = model(x, t_batch, text_emb, text_mask, cache=cache, frame_offset=start)
                else:  # the previous chunk at t = 0 in front, committed by this same evaluation
                    frame_times = torch.cat([t_batch.new_zeros(batch, chunk // pt),
                                             t_batch[:, None].expand(-1, x.shape[2] // pt)], dim=1)
                    v = model(torch.cat([previous, x], dim=2), frame_times, text_emb, text_mask, cache=cache,
                              frame_offset=start - chunk, update_cache=True, commit_frames=chunk)[:, :, chunk:]
                    previous = None
                x = x + (t_next - t).item() * v
        chunks.append(x)
    return torch.cat(chunks, dim=2)
