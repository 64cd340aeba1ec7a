"""Chunk-causal time: the lone first frame, then chunks of equal length, each seeing only its past.

A clip of T frames is cut into [first frame | chunk | chunk | ... | shorter last chunk]. Within a
chunk the temporal convolutions see both sides; across chunks only the past: a chunk's left
temporal padding is the previous chunk's last input frames at that layer, its right padding is
zeros, and the very first chunk's left padding is zeros. So the first frame is encoded exactly as
an image, and a chunk's output never depends on a later chunk.

Equal-length chunks are folded into the batch dimension and run in one call: each chunk's left
context is its predecessor's tail inside the fold, and the first one's comes from a `ChunkCache`
that holds what the earlier calls left behind. Streaming is the same call with one chunk at a time.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn as nn
from einops import rearrange


class ChunkCache:
    """What the next chunk needs from the chunks before it: every chunk-causal layer's last input frames."""

    def __init__(self, batch_size: int, context_dropout: float = 0.0):
        self.batch_size = batch_size
        self.first_frame = True  # the chunk being run is the lone first frame (no chunks seen yet)
        self.tails: Dict[nn.Module, torch.Tensor] = {}
        # training only: the fraction of (sample, chunk) pairs whose past context is zeroed in every
        # layer, so each chunk must be rebuilt from its own input (its latent) alone
        self.context_dropout = context_dropout
        self.keep_context: Optional[torch.Tensor] = None  # (B, n) of 0/1, drawn once per call

    def _drop_context(self, left: torch.Tensor) -> torch.Tensor:
        if self.context_dropout <= 0:
            return left
        if self.keep_context is None:  # run_chunk clears it, so each call draws one mask for all its layers
            self.keep_context = (torch.rand(left.shape[:2], device=left.device) >= self.context_dropout)
        return left * self.keep_context.to(left.dtype).view(*left.shape[:2], 1, 1, 1, 1)

    def pad_time(self, layer: nn.Module, x: torch.Tensor, pad: int) -> torch.Tensor:
        """Pad the folded chunks of x (B*n, C, t, H, W) in time: `pad` past frames left, zeros right."""
        bn, c, t, h, w = x.shape
        if t < pad:
            raise ValueError(f"a chunk of {t} frames is shorter than the temporal padding {pad}")
        chunks = x.reshape(self.batch_size, bn // self.batch_size, c, t, h, w)
        tails = chunks[:, :, :, t - pad:]
        before = self.tails.get(layer)
        if before is None:
            before = x.new_zeros(self.batch_size, 1, c, pad, h, w)
        left = self._drop_context(torch.cat([before, tails[:, :-1]], dim=1))
        right = x.new_zeros(self.batch_size, chunks.shape[1], c, pad, h, w)
        self.tails[layer] = tails[:, -1:].clone()  # a copy, so the chunk's activations can be freed
        return torch.cat([left, chunks, right], dim=3).view(bn, c, t + 2 * pad, h, w)


def run_chunk(net: Callable, x: torch.Tensor, cache: ChunkCache) -> torch.Tensor:
    """One call of a chunk-causal network on folded chunks; later calls are no longer the first frame."""
    y = net(x, cache)
    cache.first_frame = False
    cache.keep_context = None  # the next call draws its own context mask
    return y


def chunk_layout(num_frames: int, chunk_frames: int) -> List[Tuple[int, int, int]]:
    """(start, chunk length, number of chunks) of each run of equal chunks, first frame first."""
    layout = [(0, 1, 1)]
    full, rest = divmod(num_frames - 1, chunk_frames)
    if full:
        layout.append((1, chunk_frames, full))
    if rest:
        layout.append((1 + full * chunk_frames, rest, 1))
    return layout


def fold_chunks(x: torch.Tensor, num_chunks: int) -> torch.Tensor:
    """(B, C, n*t, H, W) -> (B*n, C, t, H, W), batch-major so each sample's chunks are adjacent."""
    return rearrange(x, "b c (n t) h w -> (b n) c t h w", n=num_chunks)


def unfold_chunks(x: torch.Tensor, batch_size: int) -> torch.Tensor:
    return rearrange(x, "(b n) c t h w -> b c (n t) h w", b=batch_size)


def run_whole_clip(net: Callable, x: torch.Tensor, chunk_frames: int,
                   cache: Optional[ChunkCache] = None) -> torch.Tensor:
    """Run a chunk-causal network over a whole clip: at most three calls (first frame, full chunks, rest)."""
    cache = cache or ChunkCache(x.shape[0])
    outputs = []
    for start, length, count in chunk_layout(x.shape[2], chunk_frames):
        part = fold_chunks(x[:, :, start:start + length * count], count)
        outputs.append(unfold_chunks(run_chunk(net, part, cache), x.shape[0]))
    return torch.cat(outputs, dim=2)


def pack_time_space(x: torch.Tensor, time_factor: int, space_factor: int, first_frame: bool) -> torch.Tensor:
    """Time- and space-to-channel within each chunk; the lone first frame is paired with copies of itself."""
    if first_frame and time_factor > 1:
        x = x.repeat_interleave(time_factor, dim=2)
    return rearrange(x, "n c (t a) (h b) (w d) -> n (c a b d) t h w",
                     a=time_factor, b=space_factor, d=space_factor)


def unpack_time_space(x: torch.Tensor, time_factor: int, space_factor: int, first_frame: bool) -> torch.Tensor:
    """Channel-to-time and -space within each chunk; the first frame keeps the mean of the frames it makes."""
    x = rearrange(x, "n (c a b d) t h w -> n c (t a) (h b) (w d)",
                  a=time_factor, b=space_factor, d=space_factor)
    if first_frame and time_factor > 1:
        x = x.mean(dim=2, keepdim=True)
    return x
