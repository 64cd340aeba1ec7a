"""Spatial tiling: run a function on overlapping tiles of a frame and cross-fade the results.

Tiles start every (tile - overlap) pixels and the last one is flush with the frame's edge, so every
tile has the full size. In each overlap the two tiles' outputs are blended with linear weights;
the weights are normalised by their sum, so any number of tiles meeting at a point still averages.
"""
from __future__ import annotations

from fractions import Fraction
from typing import Callable, List

import torch


def tile_starts(size: int, tile: int, overlap: int) -> List[int]:
    if tile >= size:
        return [0]
    starts = list(range(0, size - tile, tile - overlap))
    return starts + [size - tile]


def _ramp(length: int, left: int, right: int) -> torch.Tensor:
    """Blend weights along one axis of a tile: linear up over the left overlap, down over the right."""
    position = torch.arange(length, dtype=torch.float32) + 0.5
    weight = torch.ones(length)
    if left > 0:
        weight = torch.minimum(weight, position / left)
    if right > 0:
        weight = torch.minimum(weight, (length - position) / right)
    return weight


def _overlaps(starts: List[int], tile: int, scale: Fraction) -> List[tuple]:
    left = [0] + [int((prev + tile - cur) * scale) for prev, cur in zip(starts, starts[1:])]
    return list(zip(left, left[1:] + [0]))


def tiled_apply(fn: Callable[[int, torch.Tensor], torch.Tensor], x: torch.Tensor, tile: int, overlap: int,
                scale: Fraction) -> torch.Tensor:
    """fn(tile_index, x_tile) on overlapping tiles of x's last two dims; its output is `scale` times larger."""
    height, width = x.shape[-2:]
    if tile >= height and tile >= width:
        return fn(0, x)
    rows, cols = tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)
    tile_h, tile_w = min(tile, height), min(tile, width)
    row_ramps = [_ramp(int(tile_h * scale), *o) for o in _overlaps(rows, tile_h, scale)]
    col_ramps = [_ramp(int(tile_w * scale), *o) for o in _overlaps(cols, tile_w, scale)]
    out = total = None
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            y = fn(i * len(cols) + j, x[..., r:r + tile_h, c:c + tile_w])
            if out is None:
                out = torch.zeros(*y.shape[:-2], int(height * scale), int(width * scale), device=y.device)
                total = torch.zeros(out.shape[-2:], device=y.device)
            weight = (row_ramps[i][:, None] * col_ramps[j][None, :]).to(y.device)
            top, left = int(r * scale), int(c * scale)
            out[..., top:top + y.shape[-2], left:left + y.shape[-1]] += y.float() * weight
            total[top:top + y.shape[-2], left:left + y.shape[-1]] += weight
    return (out / total).to(y.dtype)
