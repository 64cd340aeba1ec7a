"""Sequence parallelism for the DiT: every rank of a group holds a contiguous range of frames.

Tokens are ordered frames first, so a rank's slice of the sequence is a range of (patched) frames.
The slice length is the same on every rank: the video is padded with zero frames at its end up to
sp_size x slice (a whole number of causal chunks per slice in block-causal mode, so no chunk
straddles two ranks), and padded frames are kept out of every attention, convolution and loss.

Per layer kind:
- linear self-attention: each rank sums its slice's state (K^T V and K); non-causal layers
  all-reduce it (heads x D x E numbers, whatever the sequence length), block-causal layers add
  the exclusive prefix of earlier ranks' totals. No all-to-all.
- softmax and sparse self-attention: Ulysses. An all-to-all trades heads for sequence, the
  unchanged core runs on the whole (unpadded) video for H / sp_size heads, and a second all-to-all
  trades back; sliding tiles see their exact neighbourhood across slice boundaries.
- Mix-FFN's temporal convolution: a halo of neighbouring frames from the adjacent ranks (only the
  left one in block-causal mode).
- cross-attention and everything per token: unchanged, every rank holds all text tokens.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from reel.errors import ReelError
from reel.models.linear_attention import LinearAttention, State
from reel.parallel.collectives import all_reduce_sum, all_to_all, exclusive_prefix_sum, gather_along, halo_exchange


@dataclass(frozen=True)
class SequenceParallel:
    """This rank's place in its sequence-parallel group."""

    group: Any
    rank: int
    size: int

    def split(self, frames: int, multiple: int = 1) -> "FrameSplit":
        per_rank = math.ceil(frames / (self.size * multiple)) * multiple
        start = self.rank * per_rank
        return FrameSplit(frames, per_rank, start, max(0, min(per_rank, frames - start)))


@dataclass(frozen=True)
class FrameSplit:
    total: int  # real frames of the whole video
    per_rank: int  # frames of every slice, padding included
    start: int  # this slice's first frame
    valid: int  # its real frames (the rest is padding)


@dataclass(eq=False)
class SequenceSlice:
    """What the layers of one forward call need to know about the slice they run on."""

    sp: SequenceParallel
    split: FrameSplit
    full_grid: Any  # TokenGrid of the whole video (its real frames), for Ulysses cores

    @property
    def padded(self) -> bool:
        return self.split.valid < self.split.per_rank

    def frame_mask(self, like: torch.Tensor) -> torch.Tensor:
        """(T_local,) 1 on real frames, 0 on padding, in `like`'s dtype and device."""
        frames = torch.arange(self.split.per_rank, device=like.device)
        return (frames < self.split.valid).to(like.dtype)

    def zero_padding_frames(self, x: torch.Tensor, frame_dim: int) -> torch.Tensor:
        if not self.padded:
            return x
        shape = [1] * x.dim()
        shape[frame_dim] = self.split.per_rank
        return x * self.frame_mask(x).view(shape)

    def pad_time(self, x: torch.Tensor, kernel: int, causal: bool) -> torch.Tensor:
        """x (B, T_local, H, W, C) with its temporal halo: k - 1 frames before it in block-causal mode,
        k // 2 on each side otherwise (zeros beyond the video, as one process pads)."""
        x = self.zero_padding_frames(x, 1)
        left, right = (kernel - 1, 0) if causal else (kernel // 2, kernel // 2)
        before, after = halo_exchange(x, left, right, self.sp.group)
        return torch.cat((before, x, after), dim=1)

    @cached_property
    def full_tokens(self) -> int:
        return self.full_grid.num_tokens


class SequenceParallelLinearAttention(LinearAttention):
    """Linear attention over a slice: states all-reduced (non-causal) or prefix-scanned (causal)."""

    def __init__(self, sp: SequenceParallel, eps: float = 1e-6):
        super().__init__(eps)
        self.sp = sp

    def forward(self, q, k, v, grid, cache=None, update_cache: bool = False):
        if cache is not None:
            raise NotImplementedError("cached chunk-by-chunk generation runs on one process, not sequence-parallel")
        tokens = (grid.frames, grid.tokens_per_frame)
        # padding tokens carry no key and no value, so they add nothing to any state
        k = grid.parallel.zero_padding_frames(k.unflatten(2, tokens), 2).flatten(2, 3)
        v = grid.parallel.zero_padding_frames(v.unflatten(2, tokens), 2).flatten(2, 3)
        return super().forward(q, k, v, grid)

    def reduce_states(self, kv: torch.Tensor, ksum: torch.Tensor) -> State:
        return all_reduce_sum(kv, self.sp.group), all_reduce_sum(ksum, self.sp.group)

    def earlier_ranks_state(self, kv: torch.Tensor, ksum: torch.Tensor) -> Optional[State]:
        return exclusive_prefix_sum(kv, self.sp.group), exclusive_prefix_sum(ksum, self.sp.group)


class UlyssesAttention(nn.Module):
    """Wraps a softmax or sparse core: heads scattered and sequence gathered, the core on the whole
    video, then back. q, k, v (B, H, N_local, D) -> (B, H, N_local, D)."""

    def __init__(self, core: nn.Module, sp: SequenceParallel):
        super().__init__()
        self.core, self.sp = core, sp

    def forward(self, q, k, v, grid, cache=None, update_cache: bool = False):
        if cache is not None:
            raise NotImplementedError("cached chunk-by-chunk generation runs on one process, not sequence-parallel")
        if q.shape[1] % self.sp.size:
            raise ValueError(f"{q.shape[1]} heads cannot be split over distributed.sp_size={self.sp.size} ranks")
        group, real = self.sp.group, grid.parallel.full_tokens
        q, k, v = (all_to_all(x, 1, 2, group)[:, :, :real] for x in (q, k, v))
        out = self.core(q, k, v, grid.parallel.full_grid)
        out = F.pad(out, (0, 0, 0, grid.num_tokens * self.sp.size - real))
        return all_to_all(out, 2, 1, group)


def enable_sequence_parallel(model: nn.Module, sp: SequenceParallel) -> nn.Module:
    """Make a DiT run sequence-parallel over `sp` (in place; the weights are untouched, so a model
    loaded from any checkpoint works, and the state dict keeps its keys)."""
    from reel.models.linear_attention import LinearAttention as Linear

    for block in model.blocks:
        core = block.attn.core
        if isinstance(core, (SequenceParallelLinearAttention, UlyssesAttention)):
            continue
        if isinstance(core, Linear):
            block.attn.core = SequenceParallelLinearAttention(sp, core.eps)
        else:
            if model.config.num_heads % sp.size:
                raise ReelError(f"distributed.sp_size={sp.size} must divide model.num_heads="
                                 f"{model.config.num_heads} (softmax/sparse layers scatter heads)")
            block.attn.core = UlyssesAttention(core, sp)
    model.sequence_parallel = sp
    return model


def gather_frames(x: torch.Tensor, split: FrameSplit, sp: SequenceParallel, frame_dim: int = 2,
                  frames_per_slice_frame: int = 1) -> torch.Tensor:
    """Every rank's slice of x along `frame_dim`, concatenated and cut to the real frames."""
    full = gather_along(x, frame_dim, sp.group)
    return full.narrow(frame_dim, 0, split.total * frames_per_slice_frame)
