"""3D sliding-tile attention (FastVideo's STA idea): tokens grouped into (t, h, w) tiles, each query
tile attending only to the key tiles within a centred window of tiles.

Tokens are regrouped tile-major so a tile is contiguous, then either
- `gather`: each query tile gathers its window's key tiles and runs SDPA on them (compute and
  memory grow with window x tokens, not tokens^2; no compilation, any device), or
- `flex`: compiled flex_attention with a BlockMask whose blocks are the tiles (the kernel skips the
  rest); meant for GPUs, where tiles of a multiple of 16 tokens suit its kernels (on CPU, torch 2.13's
  compiled flex_attention has no backward and rejects the mask's captured tensors).
Windows are truncated at the video's borders rather than shifted inward, so the neighbourhood of a
tile depends only on relative positions: the same whole or chunk by chunk, however long the video.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.attention.flex_attention import BlockMask, flex_attention
from torch.utils.checkpoint import checkpoint

from reel.models.cache import KVCache
from reel.models.rope import grid_positions, rotate
from reel.models.tokens import TokenGrid

_compiled_flex = None


class TileLayout:
    """(B, H, N, D) raster tokens <-> (B, H, tiles, tile_tokens, D) tiles; the grid is zero-padded to whole
    tiles, tiles in (t, h, w) raster order, tokens inside a tile too."""

    def __init__(self, grid: TokenGrid, tile: Sequence[int]):
        self.grid, self.tile = grid, tuple(tile)
        if grid.frame_offset % self.tile[0]:
            raise ValueError(f"a grid starting at frame {grid.frame_offset} splits a tile of {self.tile[0]} frames")
        self.counts = tuple(math.ceil(n / t) for n, t in zip((grid.frames, grid.height, grid.width), self.tile))

    @property
    def num_tiles(self) -> int:
        return math.prod(self.counts)

    def to_tiles(self, x: torch.Tensor) -> torch.Tensor:
        (nt, nh, nw), (tt, th, tw), g = self.counts, self.tile, self.grid
        b, h, _, d = x.shape
        x = x.view(b, h, g.frames, g.height, g.width, d)
        x = F.pad(x, (0, 0, 0, nw * tw - g.width, 0, nh * th - g.height, 0, nt * tt - g.frames))
        x = x.view(b, h, nt, tt, nh, th, nw, tw, d).permute(0, 1, 2, 4, 6, 3, 5, 7, 8)
        return x.reshape(b, h, nt * nh * nw, tt * th * tw, d)

    def from_tiles(self, x: torch.Tensor) -> torch.Tensor:
        (nt, nh, nw), (tt, th, tw), g = self.counts, self.tile, self.grid
        b, h, _, _, d = x.shape
        x = x.view(b, h, nt, nh, nw, tt, th, tw, d).permute(0, 1, 2, 5, 3, 6, 4, 7, 8)
        x = x.reshape(b, h, nt * tt, nh * th, nw * tw, d)[:, :, :g.frames, :g.height, :g.width]
        return x.reshape(b, h, g.num_tokens, d)

    def coords(self) -> torch.Tensor:
        """(tiles, 3) absolute tile coordinates (the time coordinate counts from frame 0 of the video)."""
        axes = [torch.arange(n, device=self.grid.device) for n in self.counts]
        coords = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)
        return coords + torch.tensor([self.grid.frame_offset // self.tile[0], 0, 0], device=coords.device)

    def valid(self) -> torch.Tensor:
        """(tiles, tile_tokens) True on real tokens, False on padding."""
        ones = torch.ones(1, 1, self.grid.num_tokens, 1, device=self.grid.device)
        return self.to_tiles(ones)[0, 0, :, :, 0] > 0


def _window_offsets(window: Sequence[int], device) -> torch.Tensor:
    ranges = [torch.arange(-(w // 2), w // 2 + 1, device=device) for w in window]
    return torch.stack(torch.meshgrid(*ranges, indexing="ij"), dim=-1).reshape(-1, 3)


def tile_neighbours(query_coords: torch.Tensor, key_coords: torch.Tensor, window: Sequence[int],
                    chunk_rows: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """For each query tile, the key tiles of its window: (index (Q, M), kept (Q, M)), M = prod(window).

    Key tiles are looked up by coordinate in a dense volume, so the cost is Q x M, not Q x K. With
    `chunk_rows` (tile rows per causal chunk), tiles of later chunks are dropped.
    """
    low = key_coords.min(dim=0).values
    size = key_coords.max(dim=0).values - low + 1
    volume = torch.full(size.tolist(), -1, dtype=torch.long, device=key_coords.device)
    rel = key_coords - low
    volume[rel[:, 0], rel[:, 1], rel[:, 2]] = torch.arange(len(key_coords), device=key_coords.device)
    offsets = _window_offsets(window, key_coords.device)
    candidates = query_coords[:, None] + offsets[None]  # (Q, M, 3)
    rel = candidates - low
    inside = ((rel >= 0) & (rel < size)).all(dim=-1)
    rel = torch.minimum(rel.clamp(min=0), size - 1)
    index = volume[rel[..., 0], rel[..., 1], rel[..., 2]]
    kept = inside & (index >= 0)
    if chunk_rows is not None:
        kept &= candidates[..., 0] // chunk_rows <= query_coords[:, None, 0] // chunk_rows
    return index.clamp(min=0), kept


def _attend_gathered(q_tiles: torch.Tensor, k_tiles: torch.Tensor, v_tiles: torch.Tensor, index: torch.Tensor,
                     kept: torch.Tensor, key_valid: torch.Tensor) -> torch.Tensor:
    b, h, q, length, d = q_tiles.shape
    keys = k_tiles[:, :, index].flatten(3, 4).flatten(1, 2)  # (B, H*Q, M*L, D)
    values = v_tiles[:, :, index].flatten(3, 4).flatten(1, 2)
    mask = (kept[:, :, None] & key_valid[index]).flatten(1)  # (Q, M*L)
    mask = mask.expand(h, -1, -1).reshape(1, h * q, 1, -1)
    out = F.scaled_dot_product_attention(q_tiles.flatten(1, 2), keys, values, attn_mask=mask)
    return out.view(b, h, q, length, d)


def gathered_tile_attention(q_tiles: torch.Tensor, k_tiles: torch.Tensor, v_tiles: torch.Tensor,
                            index: torch.Tensor, kept: torch.Tensor, key_valid: torch.Tensor,
                            max_gathered: int = 2**24) -> torch.Tensor:
    """q_tiles (B, H, Q, L, D) against the window tiles `index` (Q, M) of k/v_tiles (B, H, K, L, D).

    The gathered keys and values are window-size times the sequence, so query tiles go in groups of
    at most `max_gathered` gathered elements; under autograd each group is recomputed in backward
    instead of kept, so memory stays at one group's worth however long the video (same result).
    """
    b, h, q, _, d = q_tiles.shape
    per_tile = b * h * index.shape[1] * k_tiles.shape[3] * d
    group = max(1, max_gathered // per_tile)
    if q <= group:
        return _attend_gathered(q_tiles, k_tiles, v_tiles, index, kept, key_valid)
    recompute = torch.is_grad_enabled() and any(x.requires_grad for x in (q_tiles, k_tiles, v_tiles))
    outs = []
    for start in range(0, q, group):
        part = (q_tiles[:, :, start:start + group], k_tiles, v_tiles, index[start:start + group],
                kept[start:start + group], key_valid)
        outs.append(checkpoint(_attend_gathered, *part, use_reentrant=False) if recompute
                    else _attend_gathered(*part))
    return torch.cat(outs, dim=2)


def tile_block_mask(index: torch.Tensor, kept: torch.Tensor, query_coords: torch.Tensor, key_coords: torch.Tensor,
                    key_valid: torch.Tensor, window: Sequence[int], chunk_rows: Optional[int]) -> BlockMask:
    """A flex_attention BlockMask with one block per tile: only the kept tiles are computed, and the
    mask_mod (exact per token) covers padding and runs eager flex_attention exactly too."""
    tile_tokens = key_valid.shape[1]
    order = kept.to(torch.int8).argsort(dim=1, descending=True, stable=True)
    # flex derives the query-block lists assuming one column per key block (the kept ones are unique, first)
    kv_indices = index.gather(1, order).to(torch.int32)[:, :len(key_coords)]
    kv_indices = F.pad(kv_indices, (0, len(key_coords) - kv_indices.shape[1]))[None, None]
    kv_num_blocks = kept.sum(dim=1).to(torch.int32)[None, None]
    radius = [w // 2 for w in window]
    (qt, qh, qw), (kt, kh, kw) = query_coords.unbind(1), key_coords.unbind(1)
    valid = key_valid.flatten()

    def mask_mod(b, h, q_idx, kv_idx):
        qi, ki = q_idx // tile_tokens, kv_idx // tile_tokens
        near = ((qt[qi] - kt[ki]).abs() <= radius[0]) & ((qh[qi] - kh[ki]).abs() <= radius[1]) \
            & ((qw[qi] - kw[ki]).abs() <= radius[2]) & valid[kv_idx]
        if chunk_rows is not None:
            near = near & (kt[ki] // chunk_rows <= qt[qi] // chunk_rows)
        return near

    return BlockMask.from_kv_blocks(kv_num_blocks, kv_indices, BLOCK_SIZE=tile_tokens, mask_mod=mask_mod,
                                    seq_lengths=(len(query_coords) * tile_tokens, len(key_coords) * tile_tokens))


def flex_tile_attention(q_tiles: torch.Tensor, k_tiles: torch.Tensor, v_tiles: torch.Tensor, block_mask: BlockMask,
                        compiled: bool = True) -> torch.Tensor:
    global _compiled_flex
    if compiled and _compiled_flex is None:
        _compiled_flex = torch.compile(flex_attention, dynamic=False)
    attend = _compiled_flex if compiled else flex_attention
    out = attend(q_tiles.flatten(2, 3), k_tiles.flatten(2, 3), v_tiles.flatten(2, 3), block_mask=block_mask)
    return out.view(q_tiles.shape)


def sliding_tile_token_mask(grid: TokenGrid, tile: Sequence[int], window: Sequence[int]) -> torch.Tensor:
    """The (N, N) token mask sliding-tile attention equals (a reference for tests; quadratic memory)."""
    positions = grid_positions(grid.frames, grid.height, grid.width, grid.frame_offset, grid.device)
    tiles = positions // torch.tensor(tile, device=positions.device)
    radius = torch.tensor([w // 2 for w in window], device=positions.device)
    mask = ((tiles[:, None] - tiles[None]).abs() <= radius).all(dim=-1)
    if grid.causal:
        chunk = positions[:, 0] // grid.causal_chunk
        mask &= chunk[None] <= chunk[:, None]
    return mask


class SlidingTileAttention(nn.Module):
    """Core of a sparse self-attention layer: projected q, k, v (B, H, N, D) -> (B, H, N, D).

    The cache holds rotated keys and values tile by tile, with each tile's coordinates.
    """

    def __init__(self, tile: Sequence[int], window: Sequence[int], backend: str = "gather"):
        super().__init__()
        self.tile, self.window, self.backend = tuple(tile), tuple(window), backend

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, grid: TokenGrid,
                cache: Optional[KVCache] = None, update_cache: bool = False) -> torch.Tensor:
        table = grid.rope_table
        q, k = rotate(q, table), rotate(k, table)
        layout = TileLayout(grid, self.tile)
        q_tiles, k_tiles, v_tiles = layout.to_tiles(q), layout.to_tiles(k), layout.to_tiles(v)
        coords, valid = layout.coords(), layout.valid()
        keys, values, key_coords, key_valid = k_tiles, v_tiles, coords, valid
        if cache is not None:
            keys, values, _, extras = cache.extended(k_tiles, v_tiles, coords[:, 0] * self.tile[0],
                                                     coords=coords, valid=valid)
            key_coords, key_valid = extras["coords"], extras["valid"]
        chunk_rows = grid.causal_chunk // self.tile[0] if grid.causal else None
        index, kept = tile_neighbours(coords, key_coords, self.window, chunk_rows)
        if self.backend == "flex":
            mask = tile_block_mask(index, kept, coords, key_coords, key_valid, self.window, chunk_rows)
            out = flex_tile_attention(q_tiles, keys, values, mask)
        else:
            out = gathered_tile_attention(q_tiles, keys, values, index, kept, key_valid)
        if update_cache:
            starts = coords[:, 0] * self.tile[0]
            kept = (starts < grid.frame_offset + grid.committed_frames).nonzero().squeeze(1)
            cache.append(k_tiles.index_select(2, kept), v_tiles.index_select(2, kept), starts[kept],
                         coords=coords[kept], valid=valid[kept])
        return layout.from_tiles(out)
