"""Feed-forward layers of the DiT: Mix-FFN (GLU with depthwise convolutions over the token grid) and a plain MLP.

Activations stay channels-last, (B, T, H, W, C), the token layout itself: the spatial depthwise
conv runs as a channels-last Conv2d over frames, and temporal mixing as shifted frames, which on
CPU is several times faster than a 3D convolution and its backward.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from reel.models.cache import FrameHistory
from reel.models.fused_ffn import SiluDepthwiseConv2d, SiluGate, fused_enabled
from reel.models.tokens import TokenGrid

TEMPORAL_MIXING = ("depthwise", "dense", "none")


class MixFFN(nn.Module):
    """1x1 expand -> SiLU -> depthwise 3x3 per frame -> temporal mixing -> GLU -> 1x1 project
    (Sana's GLUMBConv, made video).

    Temporal mixing over k frames:
    - `depthwise`: a depthwise temporal kernel right after the spatial one (together a separable 3D
      depthwise conv); it starts as the identity, so the layer starts as the image model's;
    - `dense`: after the projection, a residual full-channel temporal conv (SANA-Video's layout),
      also starting as the identity;
    - `none`: spatial only.
    In block-causal mode the temporal padding is causal (the past only), so no frame sees a later one.
    With `recompute`, training keeps the expansion's output and recomputes the SiLU, the depthwise
    convolutions and the gate in backward rather than storing them (most of the layer's activations).
    """

    def __init__(self, dim: int, mlp_ratio: float, temporal: str = "depthwise", temporal_kernel: int = 3,
                 recompute: bool = False):
        super().__init__()
        self.recompute = recompute
        if temporal not in TEMPORAL_MIXING:
            raise ValueError(f"unknown temporal mixing {temporal!r}")
        hidden = round(dim * mlp_ratio)
        self.temporal = temporal
        self.time_kernel = 1 if temporal == "none" else temporal_kernel
        self.expand = nn.Linear(dim, 2 * hidden)
        self.spatial = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden)
        if temporal == "depthwise":
            self.time_depthwise = nn.Conv2d(2 * hidden, 2 * hidden, (self.time_kernel, 1), groups=2 * hidden,
                                            bias=False)
            self.reset_temporal()
        self.project = nn.Linear(hidden, dim, bias=False)
        if temporal == "dense":
            # weight[o, j * dim + i] is SANA-Video's conv_temp.weight[o, i, j]
            self.temporal_mix = nn.Linear(self.time_kernel * dim, dim, bias=False)

    def forward(self, x: torch.Tensor, grid: TokenGrid, cache: Optional[FrameHistory] = None,
                update_cache: bool = False) -> torch.Tensor:
        x = self.expand(x)
        if self.recompute and cache is None and torch.is_grad_enabled():
            x = checkpoint(self._mix, x, grid, use_reentrant=False)
        else:
            x = self._mix(x, grid, cache, update_cache)
        x = self.project(x)
        if self.temporal == "dense":
            padded = self.pad_time(x, grid, cache, update_cache)
            shifted = torch.cat([padded[:, j:j + grid.frames] for j in range(self.time_kernel)], dim=-1)
            x = x + self.temporal_mix(shifted)
        return x.flatten(1, 3)

    def _mix(self, x: torch.Tensor, grid: TokenGrid, cache: Optional[FrameHistory] = None,
             update_cache: bool = False) -> torch.Tensor:
        """SiLU -> depthwise spatial (and temporal) -> GLU: (B, N, 2 hidden) -> (B, T, H, W, hidden)."""
        frames = x.shape[0] * grid.frames
        lean = fused_enabled(x)  # SiLUs recomputed in backward rather than stored
        x = x.view(frames, grid.height, grid.width, -1).permute(0, 3, 1, 2)
        if lean:
            x = SiluDepthwiseConv2d.apply(x, self.spatial.weight, self.spatial.bias, self.spatial.padding[0])
        else:
            x = self.spatial(F.silu(x))
        x = x.permute(0, 2, 3, 1)
        x = x.reshape(-1, grid.frames, grid.height, grid.width, x.shape[-1])
        if self.temporal == "depthwise":
            padded = self.pad_time(x, grid, cache, update_cache).flatten(2, 3)  # (B, T + k - 1, H*W, C)
            x = self.time_depthwise(padded.permute(0, 3, 1, 2)).permute(0, 2, 3, 1).reshape(x.shape)
        if lean:
            return SiluGate.apply(x)
        x, gate = x.chunk(2, dim=-1)
        return x * F.silu(gate)

    def reset_temporal(self) -> None:
        """Temporal mixing starts as the identity (the image model's Mix-FFN)."""
        if self.temporal == "depthwise":
            nn.init.zeros_(self.time_depthwise.weight)
            nn.init.ones_(self.time_depthwise.weight[:, :, self.time_kernel // 2])
        if self.temporal == "dense":
            nn.init.zeros_(self.temporal_mix.weight)

    def pad_time(self, x: torch.Tensor, grid: TokenGrid, cache: Optional[FrameHistory],
                 update_cache: bool) -> torch.Tensor:
        """k - 1 frames around x (B, T, H, W, C): zeros at both ends of the video, or in block-causal
        mode the cached past on the left and nothing on the right.

        A sequence-parallel slice gets its halo from the neighbouring slices instead.
        """
        k = self.time_kernel
        if k == 1:
            return x
        if grid.parallel is not None:
            return grid.parallel.pad_time(x, k, grid.causal)
        if not grid.causal:
            return F.pad(x, (0, 0, 0, 0, 0, 0, k // 2, k // 2))
        if cache is not None and cache.frames is not None:
            x = torch.cat((cache.frames, x), dim=1)
        if update_cache:  # the history ends at the last committed frame
            cache.frames = x[:, :x.shape[1] - grid.frames + grid.committed_frames][:, -(k - 1):]
        return F.pad(x, (0, 0, 0, 0, 0, 0, max(0, k - 1 - (x.shape[1] - grid.frames)), 0))


class MLP(nn.Module):
    """Linear -> GELU (tanh) -> Linear, Wan's feed-forward."""

    def __init__(self, dim: int, mlp_ratio: float):
        super().__init__()
        hidden = round(dim * mlp_ratio)
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, grid: TokenGrid = None, cache=None, update_cache: bool = False) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))
