"""Attention layers of the DiT: projections and QK-norm around a per-kind core.

The core (linear, softmax or sparse) takes already projected q, k, v (B, H, N, D) and the token
grid, so sequence parallelism can wrap or replace it from outside (`layer.core = Wrapper(layer.core)`).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from reel.models.linear_attention import LinearAttention
from reel.models.softmax_attention import SoftmaxAttention
from reel.models.sparse_attention import SlidingTileAttention
from reel.models.tokens import TokenGrid

QK_NORMS = ("rms_across_heads", "rms_per_head", "none")


def make_attention_core(kind: str, sparse_tile: Sequence[int] = (1, 2, 2), sparse_window: Sequence[int] = (3, 3, 3),
                        sparse_backend: str = "gather", linear_eps: float = 1e-6) -> nn.Module:
    if kind == "linear":
        return LinearAttention(linear_eps)
    if kind == "softmax":
        return SoftmaxAttention()
    if kind == "sparse":
        return SlidingTileAttention(sparse_tile, sparse_window, sparse_backend)
    raise ValueError(f"unknown attention kind {kind!r}")


class RMSNorm(nn.RMSNorm):
    """RMSNorm computed in fp32 whatever the activations' dtype (bf16 would take the unfused path)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x.float(), self.normalized_shape, self.weight.float(), self.eps).to(x.dtype)


class HeadSplit(nn.Module):
    """(B, N, H*D) -> (B, H, N, D), with RMS QK-norm over all heads' channels (SANA-Video, Wan) or per head."""

    def __init__(self, dim: int, heads: int, norm: str = "none", eps: float = 1e-6):
        super().__init__()
        self.heads, self.norm_kind = heads, norm
        if norm not in QK_NORMS:
            raise ValueError(f"unknown qk norm {norm!r}")
        self.norm = RMSNorm(dim if norm == "rms_across_heads" else dim // heads, eps=eps) if norm != "none" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm_kind == "rms_across_heads":
            x = self.norm(x)
        x = x.unflatten(-1, (self.heads, -1))
        if self.norm_kind == "rms_per_head":
            x = self.norm(x)
        return x.transpose(1, 2)


class SelfAttention(nn.Module):
    """qkv projection -> QK-norm and head split -> core -> output projection.

    With `recompute`, training keeps only the qkv projection's output for backward and recomputes the
    norms and the core (elementwise work and, for linear attention, two small matmuls per head) instead
    of storing their intermediates: the same values and gradients in a fraction of the memory.
    """

    def __init__(self, dim: int, heads: int, core: nn.Module, qkv_bias: bool = False, qk_norm: str = "rms_across_heads",
                 qk_norm_eps: float = 1e-6, recompute: bool = False):
        super().__init__()
        self.heads, self.recompute = heads, recompute
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.split_q = HeadSplit(dim, heads, qk_norm, qk_norm_eps)
        self.split_k = HeadSplit(dim, heads, qk_norm, qk_norm_eps)
        self.split_v = HeadSplit(dim, heads)
        self.core = core
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, grid: TokenGrid, cache=None, update_cache: bool = False) -> torch.Tensor:
        qkv = self.qkv(x)
        if self.recompute and cache is None and torch.is_grad_enabled():
            out = checkpoint(self._attend, qkv, grid, use_reentrant=False)
        else:
            out = self._attend(qkv, grid, cache, update_cache)
        return self.out(out)

    def _attend(self, qkv: torch.Tensor, grid: TokenGrid, cache=None, update_cache: bool = False) -> torch.Tensor:
        q, k, v = qkv.chunk(3, dim=-1)
        out = self.core(self.split_q(q), self.split_k(k), self.split_v(v), grid, cache, update_cache)
        return out.transpose(1, 2).flatten(2)


class CrossAttention(nn.Module):
    """Softmax attention from video tokens to text tokens, masked by the text mask."""

    def __init__(self, dim: int, heads: int, qk_norm: str = "rms_across_heads", qk_norm_eps: float = 1e-6):
        super().__init__()
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.split_q = HeadSplit(dim, heads, qk_norm, qk_norm_eps)
        self.split_k = HeadSplit(dim, heads, qk_norm, qk_norm_eps)
        self.split_v = HeadSplit(dim, heads)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, text: torch.Tensor, text_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        k, v = self.kv(text).chunk(2, dim=-1)
        q, k, v = self.split_q(self.q(x)), self.split_k(k), self.split_v(v)
        if text_mask is None:
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            # a caption with no tokens (an empty or dropped prompt) attends to nothing and adds
            # zero; left as is, its all-masked softmax rows would be NaN
            has_text = text_mask.any(dim=-1)
            mask = (text_mask | ~has_text[:, None])[:, None, None, :]
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            out = out * has_text[:, None, None, None].to(out.dtype)
        return self.out(out.transpose(1, 2).flatten(2))
