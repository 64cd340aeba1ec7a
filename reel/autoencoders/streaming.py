"""Encode and decode as frames arrive, one chunk at a time, with a feature cache per tile.

Each push runs the network on one chunk at a time (the lone first frame, then chunk after chunk),
carrying every chunk-causal layer's last frames in a ChunkCache, so the result equals the
whole-clip path and peak memory depends on the chunk and tile, not on the clip length.
Frames that do not fill a chunk wait for the next push; flush() runs them as the clip's last chunk.
"""
from __future__ import annotations

from fractions import Fraction
from typing import TYPE_CHECKING, Callable, Dict, Optional

import torch

from reel.autoencoders.chunks import ChunkCache, run_chunk
from reel.autoencoders.tiling import tiled_apply
from reel.errors import ReelError

if TYPE_CHECKING:
    from reel.autoencoders.model import VideoAutoencoder


class ChunkStream:
    """Frames in along dim 2, the output of every chunk they complete out; `_run` runs one chunk through `net`
    (the lone first frame, then chunk_frames at a time)."""

    def __init__(self, net: Callable, chunk_frames: int, out_channels: int, scale: Fraction,
                 tile_size: Optional[int], tile_overlap: int):
        self.net, self.chunk_frames, self.out_channels, self.scale = net, chunk_frames, out_channels, scale
        self.tile_size, self.tile_overlap = tile_size, tile_overlap
        self.caches: Dict[int, ChunkCache] = {}
        self.pending: Optional[torch.Tensor] = None
        self.started = False
        self.frame_shape = None

    def _check(self, x: torch.Tensor) -> None:
        shape = (x.shape[0], x.shape[1], *x.shape[3:])
        if self.frame_shape is not None and shape != self.frame_shape:
            raise ReelError(f"a stream's chunks must keep their batch, channels and frame size: got {tuple(x.shape)} "
                            f"after {self.frame_shape}")
        self.frame_shape = shape

    def _run(self, chunk: torch.Tensor) -> torch.Tensor:
        def run_tile(index: int, tile: torch.Tensor) -> torch.Tensor:
            cache = self.caches.setdefault(index, ChunkCache(tile.shape[0]))
            return run_chunk(self.net, tile, cache)

        self.started = True
        tile = self.tile_size or max(chunk.shape[-2:])
        return tiled_apply(run_tile, chunk, tile, self.tile_overlap, self.scale)

    def _empty(self, like: torch.Tensor) -> torch.Tensor:
        b, _, _, h, w = like.shape
        return like.new_zeros(b, self.out_channels, 0, int(h * self.scale), int(w * self.scale))

    def _chunk_length(self) -> int:
        return self.chunk_frames if self.started else 1  # the lone first frame, then full chunks

    def push(self, x: torch.Tensor) -> torch.Tensor:
        """Take the next frames along dim 2; return the output of every chunk they complete."""
        self._check(x)
        pending = x if self.pending is None else torch.cat([self.pending, x], dim=2)
        outputs = []
        while pending.shape[2] >= self._chunk_length():
            length = self._chunk_length()
            outputs.append(self._run(pending[:, :, :length]))
            pending = pending[:, :, length:]
        self.pending = pending
        return torch.cat(outputs, dim=2) if outputs else self._empty(x)

    def flush(self) -> torch.Tensor:
        """Run the frames still waiting as the clip's last (shorter) chunk; the next push starts a new clip."""
        pending = self.pending
        if pending is None:
            return torch.zeros(0)  # nothing was pushed
        if pending.shape[2]:
            self._check_last_chunk(pending.shape[2])
        out = self._run(pending) if pending.shape[2] else self._empty(pending)
        self.caches, self.pending, self.started, self.frame_shape = {}, None, False, None
        return out

    def _check_last_chunk(self, frames: int) -> None:
        pass


class EncoderSide:
    """What every encoder stream adds to its ChunkStream: frames are checked, latents normalised, and a clip
    must end on a whole chunk. Needs `model` and `normalise`."""

    def _run(self, chunk: torch.Tensor) -> torch.Tensor:
        z = super()._run(chunk)
        return self.model.normalise_latents(z) if self.normalise else z

    def push(self, frames: torch.Tensor) -> torch.Tensor:
        self.model.check_frames(frames, whole_clip=False)
        return super().push(frames)

    def _check_last_chunk(self, frames: int) -> None:
        if frames % self.model.temporal_factor:
            raise ReelError(f"the clip ends with {frames} frames after its last full chunk; a clip must have "
                            f"1 + {self.model.temporal_factor}k frames")


class DecoderSide:
    """What every decoder stream adds to its ChunkStream: latents are checked and, when `normalised`,
    denormalised before decoding. Needs `model` and `normalised`."""

    def push(self, z: torch.Tensor) -> torch.Tensor:
        self.model.check_latents(z)
        return super().push(self.model.denormalise_latents(z) if self.normalised else z)


class StreamingEncoder(EncoderSide, ChunkStream):
    """push(pixel frames (B, 3, t, H, W)) -> normalised latent frames, chunk by chunk."""

    def __init__(self, model: "VideoAutoencoder", tile_size: Optional[int] = None, tile_overlap: int = 0,
                 normalise: bool = True):
        model.check_tiling(tile_size, tile_overlap)
        super().__init__(model.encoder, model.chunk_frames, model.latent_channels,
                         Fraction(1, model.spatial_factor), tile_size, tile_overlap)
        self.model, self.normalise = model, normalise


class StreamingDecoder(DecoderSide, ChunkStream):
    """push(latent frames (B, C, t, h, w)) -> pixel frames, one latent chunk at a time.

    The first latent frame decodes to the first pixel frame alone; each later latent chunk
    (chunk_frames / temporal_factor latent frames) to chunk_frames pixel frames. Run it under
    torch.no_grad(): with autograd on, every chunk's graph stays alive through the cache.
    """

    def __init__(self, model: "VideoAutoencoder", tile_size: Optional[int] = None, tile_overlap: int = 0,
                 normalised: bool = True):
        model.check_tiling(tile_size, tile_overlap)
        f = model.spatial_factor
        super().__init__(model.decoder, model.chunk_frames // model.temporal_factor, 3, Fraction(f),
                         tile_size // f if tile_size else None, tile_overlap // f)
        self.model, self.normalised = model, normalised
