"""DC-AE-V: a chunk-causal deep-compression video autoencoder, built from `autoencoder.arch`.

Clips (B, 3, T, H, W) in [-1, 1] with T = 1 + tf*k encode to latents (B, C, 1 + k, H/f, W/f);
`encode` returns latents normalised by per-channel statistics stored with the weights.
"""
from __future__ import annotations

from fractions import Fraction
from typing import Any, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from reel.autoencoders.arch import KIND, DcAeVArch, resolve_arch
from reel.autoencoders.blocks import (ChunkCausalConv3d, DownBlock, FromLatent, ToLatent, ToPixels, UpBlock,
                                      build_block)
from reel.autoencoders.chunks import ChunkCache, run_whole_clip
from reel.autoencoders.streaming import StreamingDecoder, StreamingEncoder
from reel.autoencoders.tiling import tiled_apply
from reel.errors import ReelError


class Encoder(nn.Module):
    def __init__(self, arch: DcAeVArch, in_channels: int = 3):
        super().__init__()
        widths = arch.width_list
        self.stem = ChunkCausalConv3d(in_channels, widths[0])
        layers = []
        for i, (width, depth, kind) in enumerate(zip(widths, arch.depth_list, arch.block_types)):
            layers += [build_block(kind, width, arch.norm, arch.expand_ratio, arch.head_dim) for _ in range(depth)]
            if i + 1 < len(widths):
                layers.append(DownBlock(width, widths[i + 1], time_factor=2 if i in arch.temporal_downs else 1))
        self.layers = nn.ModuleList(layers)
        self.head = ToLatent(widths[-1], arch.latent_channels, arch.norm)

    def forward(self, x: torch.Tensor, cache: ChunkCache) -> torch.Tensor:
        x = self.stem(x, cache)
        for layer in self.layers:
            x = layer(x, cache)
        return self.head(x, cache)


class Decoder(nn.Module):
    def __init__(self, arch: DcAeVArch, out_channels: int = 3):
        super().__init__()
        widths = arch.decoder_width_list
        self.stem = FromLatent(arch.latent_channels, widths[-1])
        layers = []
        for i in reversed(range(len(widths))):
            kind = arch.decoder_block_types[i]
            layers += [build_block(kind, widths[i], arch.norm, arch.expand_ratio, arch.head_dim)
                       for _ in range(arch.decoder_depth_list[i])]
            if i > 0:
                layers.append(UpBlock(widths[i], widths[i - 1], time_factor=2 if i - 1 in arch.temporal_downs else 1,
                                      kernel_size=arch.up_kernel))
        self.layers = nn.ModuleList(layers)
        self.head = ToPixels(widths[0], arch.norm, out_channels)

    def forward(self, z: torch.Tensor, cache: ChunkCache) -> torch.Tensor:
        x = self.stem(z, cache)
        for layer in self.layers:
            x = layer(x, cache)
        return self.head(x, cache)


class AutoencoderBase(nn.Module):
    """What every autoencoder reel loads shares: its factors, shape checks and per-channel latent normalisation.

    chunk_frames: pixel frames per chunk after the lone first frame (the unit of streaming).
    """

    def __init__(self, spatial_factor: int, temporal_factor: int, latent_channels: int, chunk_frames: int):
        super().__init__()
        self.spatial_factor = spatial_factor
        self.temporal_factor = temporal_factor
        self.latent_channels = latent_channels
        self.chunk_frames = chunk_frames
        self.register_buffer("latent_mean", torch.zeros(latent_channels))
        self.register_buffer("latent_std", torch.ones(latent_channels))

    # --- shapes -------------------------------------------------------------------------------
    def latent_shape(self, num_frames: int, height: int, width: int) -> Tuple[int, int, int, int]:
        f, tf = self.spatial_factor, self.temporal_factor
        return self.latent_channels, 1 + (num_frames - 1) // tf, height // f, width // f

    def check_frames(self, x: torch.Tensor, whole_clip: bool = True) -> None:
        f, tf = self.spatial_factor, self.temporal_factor
        if x.dim() != 5 or x.shape[1] != 3:
            raise ReelError(f"autoencoder input must be a clip (B, 3, T, H, W), got shape {tuple(x.shape)}")
        if x.shape[3] % f or x.shape[4] % f:
            raise ReelError(f"autoencoder input frames are {x.shape[3]}x{x.shape[4]}: height and width must be "
                            f"divisible by the spatial factor {f}")
        if whole_clip and (x.shape[2] - 1) % tf:
            raise ReelError(f"autoencoder input has {x.shape[2]} frames: must be 1 + {tf}k")

    def check_latents(self, z: torch.Tensor) -> None:
        if z.dim() != 5 or z.shape[1] != self.latent_channels:
            raise ReelError(f"latents must be (B, {self.latent_channels}, T, h, w), got shape {tuple(z.shape)}")

    # --- latent statistics --------------------------------------------------------------------
    def normalise_latents(self, z_raw: torch.Tensor) -> torch.Tensor:
        shape = (1, -1, 1, 1, 1)
        return ((z_raw - self.latent_mean.view(shape)) / self.latent_std.view(shape)).to(z_raw.dtype)

    def denormalise_latents(self, z: torch.Tensor) -> torch.Tensor:
        shape = (1, -1, 1, 1, 1)
        return (z * self.latent_std.view(shape) + self.latent_mean.view(shape)).to(z.dtype)

    def encode(self, x: torch.Tensor, chunked: bool = False, tile_size: Optional[int] = None,
               tile_overlap: int = 0) -> torch.Tensor:
        """(B, 3, 1 + tf*k, H, W) in [-1, 1] -> normalised latents (B, C, 1 + k, H/f, W/f)."""
        return self.normalise_latents(self.encode_raw(x, chunked, tile_size, tile_overlap))

    def decode(self, z: torch.Tensor, chunked: bool = False, tile_size: Optional[int] = None,
               tile_overlap: int = 0) -> torch.Tensor:
        """Normalised latents (B, C, 1 + k, h, w) -> clip (B, 3, 1 + tf*k, h*f, w*f) (reel's AE: not clamped)."""
        self.check_latents(z)
        return self.decode_raw(self.denormalise_latents(z), chunked, tile_size, tile_overlap)


class VideoAutoencoder(AutoencoderBase):
    """encode(x) -> normalised latents, decode(z) -> clip; whole clip, chunk by chunk, or tiled."""

    def __init__(self, arch: DcAeVArch):
        super().__init__(arch.spatial_factor, arch.temporal_factor, arch.latent_channels, arch.chunk_frames)
        self.arch = arch
        self.encoder = Encoder(arch)
        self.decoder = Decoder(arch)

    def check_tiling(self, tile_size: Optional[int], tile_overlap: int) -> None:
        if tile_size is None:
            return
        f = self.spatial_factor
        if tile_size <= 0 or tile_size % f or tile_overlap < 0 or tile_overlap % f:
            raise ReelError(f"tile_size={tile_size}, tile_overlap={tile_overlap}: both must be multiples of the "
                            f"spatial factor {f} (tile_size positive)")
        if 2 * tile_overlap > tile_size:
            raise ReelError(f"tile_overlap={tile_overlap}: must be at most half of tile_size={tile_size}")

    # --- latent statistics --------------------------------------------------------------------
    def set_latent_stats(self, mean: Union[torch.Tensor, Sequence[float]],
                         std: Union[torch.Tensor, Sequence[float]]) -> None:
        mean = torch.as_tensor(mean, dtype=torch.float32).flatten()
        std = torch.as_tensor(std, dtype=torch.float32).flatten()
        if mean.numel() != self.latent_channels or std.numel() != self.latent_channels:
            raise ReelError(f"latent stats need {self.latent_channels} values each, got mean {mean.numel()} "
                            f"and std {std.numel()}")
        if not torch.isfinite(mean).all() or not (std > 0).all():
            raise ReelError("latent stats must be finite, with a positive std")
        self.latent_mean.copy_(mean)
        self.latent_std.copy_(std)

    # --- encode / decode ----------------------------------------------------------------------
    def encode_raw(self, x: torch.Tensor, chunked: bool = False, tile_size: Optional[int] = None,
                   tile_overlap: int = 0) -> torch.Tensor:
        """Latents before normalisation. chunked: one chunk at a time (memory bounded by the chunk)."""
        self.check_frames(x)
        self.check_tiling(tile_size, tile_overlap)
        if chunked:
            stream = StreamingEncoder(self, tile_size, tile_overlap, normalise=False)
            return torch.cat([stream.push(x), stream.flush()], dim=2)
        return tiled_apply(lambda _, tile: run_whole_clip(self.encoder, tile, self.chunk_frames), x,
                           tile_size or max(x.shape[-2:]), tile_overlap, Fraction(1, self.spatial_factor))

    def decode_raw(self, z_raw: torch.Tensor, chunked: bool = False, tile_size: Optional[int] = None,
                   tile_overlap: int = 0) -> torch.Tensor:
        self.check_latents(z_raw)
        self.check_tiling(tile_size, tile_overlap)
        if chunked:
            stream = StreamingDecoder(self, tile_size, tile_overlap, normalised=False)
            return torch.cat([stream.push(z_raw), stream.flush()], dim=2)
        f, latent_chunk = self.spatial_factor, self.chunk_frames // self.temporal_factor
        latent_tile = tile_size // f if tile_size else max(z_raw.shape[-2:])
        return tiled_apply(lambda _, tile: run_whole_clip(self.decoder, tile, latent_chunk),
                           z_raw, latent_tile, tile_overlap // f, Fraction(f))

    def streaming_encoder(self, tile_size: Optional[int] = None, tile_overlap: int = 0) -> StreamingEncoder:
        return StreamingEncoder(self, tile_size, tile_overlap)

    def streaming_decoder(self, tile_size: Optional[int] = None, tile_overlap: int = 0) -> StreamingDecoder:
        return StreamingDecoder(self, tile_size, tile_overlap)

    def forward(self, x: Optional[torch.Tensor], context_dropout: float = 0.0, latent_noise: float = 0.0,
                latents: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Training pass over whole clips: (reconstruction, raw latents). context_dropout: the fraction
        of (clip, chunk) pairs the decoder rebuilds without the previous chunks (see ChunkCache).
        latent_noise: the decoder sees the latents plus Gaussian noise whose std, in units of the latent
        std, is drawn per clip from U(0, latent_noise), so it learns to draw clean shapes from the
        imperfect latents a diffusion model produces. `latents` (normalised, instead of x): decode
        these, the encoder unused."""
        if latents is not None:
            self.check_latents(latents)
            z_raw = self.denormalise_latents(latents)
        else:
            z_raw = self.encode_raw(x)
        z_in = z_raw
        if latent_noise > 0:
            scale = torch.rand(z_raw.shape[0], 1, 1, 1, 1, dtype=z_raw.dtype, device=z_raw.device) * latent_noise
            std = self.latent_std.view(1, -1, 1, 1, 1).to(z_raw.dtype)
            z_in = z_raw + scale * std * torch.randn_like(z_raw)
        latent_chunk = self.chunk_frames // self.temporal_factor
        cache = ChunkCache(z_raw.shape[0], context_dropout)
        return run_whole_clip(self.decoder, z_in, latent_chunk, cache), z_raw


def build_autoencoder(cfg_autoencoder: Any) -> VideoAutoencoder:
    """A randomly initialised autoencoder from an `autoencoder` config node (its `arch` with defaults)."""
    return VideoAutoencoder(resolve_arch(cfg_autoencoder))


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def autoencoder_summary(model: VideoAutoencoder) -> dict:
    """The facts `reel info` prints about an autoencoder."""
    f, tf, c = model.spatial_factor, model.temporal_factor, model.latent_channels
    return {
        "kind": KIND,
        "params": count_parameters(model),
        "encoder_params": count_parameters(model.encoder),
        "decoder_params": count_parameters(model.decoder),
        "spatial_factor": f,
        "temporal_factor": tf,
        "latent_channels": c,
        "chunk_frames": model.chunk_frames,
        "compression_ratio": f * f * tf * 3 / c,  # pixel values per latent value
    }
