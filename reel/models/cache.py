"""State carried between chunks in block-causal generation.

A chunk is run many times while it is denoised (read-only), then once more with its final
latents to commit it (`update_cache=True`), which is when these containers grow.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple, Union

import torch


class LinearStateCache:
    """Sums over every committed token of rope(phi(k))^T v (B, H, D, E) and of phi(k) (B, H, D), in fp32.

    Constant size however long the video grows.
    """

    def __init__(self):
        self.kv: Optional[torch.Tensor] = None
        self.ksum: Optional[torch.Tensor] = None

    @property
    def state(self) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
        return None if self.kv is None else (self.kv, self.ksum)

    def add(self, kv: torch.Tensor, ksum: torch.Tensor) -> None:
        if self.kv is None:
            self.kv, self.ksum = kv, ksum
        else:
            self.kv, self.ksum = self.kv + kv, self.ksum + ksum


class KVCache:
    """Rotated keys and values of committed tokens, as entries along dim 2 (B, H, entries, tokens, D).

    An entry is a frame of tokens (softmax layers) or a tile (sparse layers), labelled by its first
    absolute frame; `extras` hold per-entry metadata (tile coordinates, valid tokens). With
    `window_frames`, only the latest frames and the first `sink_frames` (the attention sink) are kept.
    """

    def __init__(self, window_frames: Optional[int] = None, sink_frames: int = 0):
        self.window_frames, self.sink_frames = window_frames, sink_frames
        self.k: Optional[torch.Tensor] = None
        self.v: Optional[torch.Tensor] = None
        self.frames: Optional[torch.Tensor] = None
        self.extras: Dict[str, torch.Tensor] = {}

    def __len__(self) -> int:
        return 0 if self.k is None else self.k.shape[2]

    def extended(self, k: torch.Tensor, v: torch.Tensor, frames: torch.Tensor, **extras: torch.Tensor):
        """The cached entries followed by new ones, without storing them: (k, v, frames, extras)."""
        if self.k is None:
            return k, v, frames, extras
        joined = {name: torch.cat((self.extras[name], value)) for name, value in extras.items()}
        return (torch.cat((self.k, k), dim=2), torch.cat((self.v, v), dim=2),
                torch.cat((self.frames, frames)), joined)

    def append(self, k: torch.Tensor, v: torch.Tensor, frames: torch.Tensor, **extras: torch.Tensor) -> None:
        self.k, self.v, self.frames, self.extras = self.extended(k, v, frames, **extras)
        if self.window_frames is not None:
            newest = int(self.frames.max()) + 1
            self.keep((self.frames >= newest - self.window_frames) | (self.frames < self.sink_frames))

    def keep(self, entries: torch.Tensor) -> None:
        index = entries.nonzero().squeeze(1)
        self.k, self.v = self.k.index_select(2, index), self.v.index_select(2, index)
        self.frames = self.frames[index]
        self.extras = {name: value[index] for name, value in self.extras.items()}


class FrameHistory:
    """The last frames (B, C, k-1, H, W) of a causal temporal convolution's input."""

    def __init__(self):
        self.frames: Optional[torch.Tensor] = None


AttentionCache = Union[LinearStateCache, KVCache]


@dataclass
class BlockCache:
    attn: AttentionCache
    ffn: FrameHistory = field(default_factory=FrameHistory)

    def snapshot(self) -> "BlockCache":
        """The cache as it is now, for a read-only pass recomputed later (gradient checkpointing): commits
        replace the containers' tensors rather than change them in place, so shallow copies stay as they were."""
        return BlockCache(copy.copy(self.attn), copy.copy(self.ffn))


@dataclass
class DiTCache:
    """Per-block caches and the number of latent frames committed so far (the next chunk's offset)."""

    blocks: List[BlockCache]
    frames: int = 0

    def detach_(self) -> "DiTCache":
        """Cut the autograd history (self-forcing keeps gradients only through the last chunks)."""
        for block in self.blocks:
            attn = block.attn
            if isinstance(attn, LinearStateCache) and attn.kv is not None:
                attn.kv, attn.ksum = attn.kv.detach(), attn.ksum.detach()
            if isinstance(attn, KVCache) and attn.k is not None:
                attn.k, attn.v = attn.k.detach(), attn.v.detach()
            if block.ffn.frames is not None:
                block.ffn.frames = block.ffn.frames.detach()
        return self
