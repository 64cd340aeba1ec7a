"""3D rotary position embedding over (t, h, w) token positions.

Each head's channels are split into a time part, a height part and a width part; each part
rotates interleaved channel pairs (x[2i], x[2i+1]) by position * theta^(-2i/part), the layout
of Wan and SANA-Video. Positions are given explicitly, so chunked generation passes growing
frame indices and the same token gets the same rotation whether it is computed whole or by chunk.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F


def default_axes_dim(head_dim: int) -> Tuple[int, int, int]:
    """Wan's split: height and width get 2 * (head_dim // 6) channels each, time the rest."""
    spatial = 2 * (head_dim // 6)
    return head_dim - 2 * spatial, spatial, spatial


def grid_positions(frames: int, height: int, width: int, frame_offset: int = 0,
                   device: Optional[torch.device] = None) -> torch.Tensor:
    """(frames * height * width, 3) integer (t, h, w) positions in raster order, frames first."""
    t = torch.arange(frame_offset, frame_offset + frames, device=device)
    h = torch.arange(height, device=device)
    w = torch.arange(width, device=device)
    return torch.stack(torch.meshgrid(t, h, w, indexing="ij"), dim=-1).reshape(-1, 3)


class Rope3D(nn.Module):
    """positions (N, 3) -> (cos, sin), each (N, rotated_dim / 2) in float32."""

    def __init__(self, head_dim: int, axes_dim: Optional[Sequence[int]] = None, theta: float = 10000.0):
        super().__init__()
        self.axes_dim = tuple(int(d) for d in axes_dim) if axes_dim else default_axes_dim(head_dim)
        if len(self.axes_dim) != 3 or any(d < 0 or d % 2 for d in self.axes_dim) or sum(self.axes_dim) > head_dim:
            raise ValueError(f"rope axes {self.axes_dim} must be three even sizes summing to at most {head_dim}")
        self.head_dim, self.theta = head_dim, theta

    def forward(self, positions: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        # float64 angles: frame indices keep growing in long generation, and float32 would lose the phase
        angles = []
        for axis, dim in enumerate(self.axes_dim):
            inv_freq = self.theta ** (-torch.arange(0, dim, 2, device=positions.device, dtype=torch.float64) / dim)
            angles.append(positions[:, axis, None].to(torch.float64) * inv_freq)
        angles = torch.cat(angles, dim=-1)
        return angles.cos().float(), angles.sin().float()


def rope_table(cos: torch.Tensor, sin: torch.Tensor, dim: int) -> torch.Tensor:
    """(N, R) cos and sin -> the (N, dim / 2) complex rotations of the channel pairs (1 past the R rotated)."""
    tail = dim // 2 - cos.shape[-1]
    return torch.complex(F.pad(cos, (0, tail), value=1.0), F.pad(sin, (0, tail)))


def rotate(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved channel pairs of x (..., N, D) by the complex `table` (N, D / 2), in fp32: one
    complex product, several times faster (with its backward) than cos/sin products on a swapped copy."""
    pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)).contiguous())
    return torch.view_as_real(pairs * table).flatten(-2).to(x.dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved channel pairs of x (..., N, D) by (cos, sin) (N, R); channels past 2R stay as they are."""
    return rotate(x, rope_table(cos, sin, x.shape[-1]))
