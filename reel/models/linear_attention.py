"""ReLU kernel linear attention (SANA), O(N) through a (D x E) state per head.

    out_i = rope(phi(q_i)) . sum_j rope(phi(k_j))^T v_j  /  (phi(q_i) . sum_j phi(k_j) + eps),   phi = ReLU

RoPE enters the numerator only: rotated products can be negative, so a normaliser built from
them could vanish or change sign, while the un-rotated one is a sum of non-negative terms.
The math is split into state and apply, so a sequence-parallel wrapper can all-reduce
(non-causal) or prefix-scan (block-causal) the states in between. States are fp32 whatever
the autocast: K^T V sums thousands of products.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from reel.models.cache import LinearStateCache
from reel.models.rope import rotate
from reel.models.tokens import TokenGrid

State = Tuple[torch.Tensor, torch.Tensor]


def _fp32(x: torch.Tensor):
    return torch.autocast(device_type=x.device.type, enabled=False)


def linear_state(k_rot: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> State:
    """Sums over the token axis (-2): kv = sum_j k_rot_j^T v_j (..., D, E) and ksum = sum_j k_j (..., D).

    Inputs are already phi'd (and k_rot rotated); (B, H, N, D) gives one state per head,
    (B, H, T, S, D) one per frame.
    """
    with _fp32(k):
        return k_rot.float().transpose(-1, -2) @ v.float(), k.float().sum(dim=-2)


def linear_apply(q_rot: torch.Tensor, q: torch.Tensor, kv: torch.Tensor, ksum: torch.Tensor,
                 eps: float = 1e-6) -> torch.Tensor:
    """Queries (B, H, N, D) against a state: (B, H, D, E) serves every query; a per-frame state
    (B, H, T, D, E) serves the queries of frame t. Returns (B, H, N, E) in fp32."""
    per_frame = kv.dim() == 5
    if per_frame:
        frames = kv.shape[2]
        q_rot, q = q_rot.unflatten(2, (frames, -1)), q.unflatten(2, (frames, -1))
    with _fp32(q):
        out = (q_rot.float() @ kv) / (q.float() @ ksum.unsqueeze(-1) + eps)
    return out.flatten(2, 3) if per_frame else out


def add_states(a: Optional[State], b: Optional[State]) -> Optional[State]:
    if a is None or b is None:
        return a if b is None else b
    return a[0] + b[0], a[1] + b[1]


def block_causal_states(frame_kv: torch.Tensor, frame_ksum: torch.Tensor, chunk_end: torch.Tensor,
                        prefix: Optional[State] = None) -> State:
    """Per-frame states (B, H, T, D, E), (B, H, T, D) -> for each frame the sum over every frame up to
    the end of its chunk (a token sees its own chunk and earlier ones), plus `prefix`: the state of
    everything before this sequence (committed chunks, earlier sequence-parallel ranks)."""
    kv = frame_kv.cumsum(2).index_select(2, chunk_end)
    ksum = frame_ksum.cumsum(2).index_select(2, chunk_end)
    if prefix is not None:
        kv, ksum = kv + prefix[0].unsqueeze(2), ksum + prefix[1].unsqueeze(2)
    return kv, ksum


class LinearAttention(nn.Module):
    """Core of a linear self-attention layer: projected q, k, v (B, H, N, D) -> (B, H, N, D)."""

    def __init__(self, eps: float = 1e-6):
        super().__init__()
        self.eps = eps

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, grid: TokenGrid,
                cache: Optional[LinearStateCache] = None, update_cache: bool = False) -> torch.Tensor:
        q, k = F.relu(q), F.relu(k)
        table = grid.rope_table
        q_rot, k_rot = rotate(q, table), rotate(k, table)
        if not grid.causal:
            kv, ksum = self.reduce_states(*linear_state(k_rot, k, v))
            return linear_apply(q_rot, q, kv, ksum, self.eps).to(v.dtype)
        frame_kv, frame_ksum = linear_state(*(x.unflatten(2, (grid.frames, -1)) for x in (k_rot, k, v)))
        total = frame_kv.sum(2), frame_ksum.sum(2)
        prefix = add_states(cache.state if cache is not None else None, self.earlier_ranks_state(*total))
        kv, ksum = block_causal_states(frame_kv, frame_ksum, grid.chunk_end(), prefix)
        if update_cache:
            kept = grid.committed_frames
            cache.add(frame_kv[:, :, :kept].sum(2), frame_ksum[:, :, :kept].sum(2))
        return linear_apply(q_rot, q, kv, ksum, self.eps).to(v.dtype)

    # Sequence-parallel hooks, the identity on one process: a wrapper replaces them with an
    # all-reduce of the slice states, and with the exclusive prefix-scan of earlier slices' totals.
    def reduce_states(self, kv: torch.Tensor, ksum: torch.Tensor) -> State:
        return kv, ksum

    def earlier_ranks_state(self, kv: torch.Tensor, ksum: torch.Tensor) -> Optional[State]:
        return None
