"""Full softmax self-attention with 3D RoPE (scaled_dot_product_attention), block-causal and cached."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from reel.models.cache import KVCache
from reel.models.rope import rotate
from reel.models.tokens import TokenGrid


def block_causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, query_chunks: torch.Tensor,
                           key_chunks: torch.Tensor, tokens_per_frame: int) -> torch.Tensor:
    """q (B, H, T*S, D) attends to the keys (B, H, K*S, D) of its own chunk and earlier ones.

    `query_chunks` (T,) and `key_chunks` (K,) give each frame's chunk, keys in frame order, so a
    query chunk sees a prefix of the keys: one SDPA per chunk on that prefix, never an N x N mask.
    """
    chunks, counts = torch.unique_consecutive(query_chunks, return_counts=True)
    outputs, start = [], 0
    for chunk, count in zip(chunks.tolist(), counts.tolist()):
        stop = start + count * tokens_per_frame
        visible = int((key_chunks <= chunk).sum()) * tokens_per_frame
        outputs.append(F.scaled_dot_product_attention(q[:, :, start:stop], k[:, :, :visible], v[:, :, :visible]))
        start = stop
    return torch.cat(outputs, dim=2)


class SoftmaxAttention(nn.Module):
    """Core of a softmax self-attention layer: projected q, k, v (B, H, N, D) -> (B, H, N, D).

    The cache holds rotated keys and values frame by frame, so a long video with a window evicts whole frames.
    """

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, grid: TokenGrid,
                cache: Optional[KVCache] = None, update_cache: bool = False) -> torch.Tensor:
        table = grid.rope_table
        q, k = rotate(q, table), rotate(k, table)
        if not grid.causal:
            return F.scaled_dot_product_attention(q, k, v)
        per_frame = (grid.frames, grid.tokens_per_frame)
        k, v, frames = k.unflatten(2, per_frame), v.unflatten(2, per_frame), grid.frame_index()
        keys, values, key_frames = k, v, frames
        if cache is not None:
            keys, values, key_frames, _ = cache.extended(k, v, frames)
        out = block_causal_attention(q, keys.flatten(2, 3), values.flatten(2, 3), grid.chunk_index(),
                                     key_frames // grid.causal_chunk, grid.tokens_per_frame)
        if update_cache:
            kept = grid.committed_frames
            cache.append(k[:, :, :kept], v[:, :, :kept], frames[:kept])
        return out
