"""diffusers autoencoder folders (AutoencoderKLWan, AutoencoderDC) behind reel's autoencoder contract.

A diffusers folder is config.json, whose "_class_name" names the class, and
diffusion_pytorch_model.safetensors (or its shards). encode returns the posterior mean normalised per
channel the way the diffusers pipelines normalise it: Wan with the config's latents_mean and latents_std
((z - mean) / std), DC-AE with its scaling_factor (z * scaling_factor); decode undoes that and calls
diffusers' decode, which clamps Wan's output to [-1, 1] and leaves DC-AE's as it is.

Wan is causal in time: it encodes the lone first frame, then 4 frames at a time, and decodes one latent
frame at a time, each causal conv carrying its last input frames to the next call in diffusers' feature
cache (a list the encoder and decoder take as `feat_cache`). Streaming runs those same calls as latents
or frames arrive, so a stream equals the whole clip up to float rounding (the 1x1x1 quant convs see
shorter inputs). DC-AE is an image autoencoder, applied to each frame (temporal_factor 1).
"""
from __future__ import annotations

import hashlib
import json
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn as nn
from einops import rearrange

from reel.autoencoders.model import AutoencoderBase, count_parameters
from reel.autoencoders.streaming import ChunkStream, DecoderSide, EncoderSide
from reel.checkpoint_folder import weights_digest, weights_path
from reel.errors import ReelError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"
NORMALISATION_KEYS = ("latents_mean", "latents_std", "scaling_factor")


def is_diffusers_folder(path: Path) -> bool:
    """A folder with diffusers' config.json and no reel config.yaml."""
    return (path / CONFIG_FILE).is_file() and not (path / "config.yaml").is_file()


def read_diffusers_config(path: Path) -> dict:
    """config.json of a diffusers autoencoder folder whose _class_name reel supports."""
    try:
        config = json.loads((path / CONFIG_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise ReelError(f"{path / CONFIG_FILE}: not a readable JSON config ({exc})") from None
    name = config.get("_class_name") if isinstance(config, dict) else None
    if name not in BACKENDS:
        raise ReelError(f"{path}: config.json has _class_name={name!r}, not a diffusers autoencoder reel loads "
                        f"(supported: {', '.join(sorted(BACKENDS))})")
    return config


def load_diffusers_autoencoder(path: Path, device: Any = "cpu", dtype: torch.dtype = torch.float32
                               ) -> "DiffusersAutoencoder":
    """The autoencoder of a diffusers folder (diffusers' from_pretrained, safetensors only), wrapped, in eval mode."""
    config = read_diffusers_config(path)
    weights = weights_path(path, WEIGHTS_FILE)
    if not weights.is_file():
        raise ReelError(f"{path}: {WEIGHTS_FILE} is missing (a diffusers autoencoder folder holds {CONFIG_FILE} and "
                        f"its safetensors weights; reel never reads pickled .bin weights)")
    import diffusers

    name = config["_class_name"]
    try:
        vae = getattr(diffusers, name).from_pretrained(str(path), use_safetensors=True, low_cpu_mem_usage=False)
    except (OSError, ValueError, RuntimeError, TypeError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ReelError(f"{path}: diffusers cannot load it as {name} ({first})") from None
    return BACKENDS[name](vae, path).to(device=device, dtype=dtype).eval()


def diffusers_identity(path: Path) -> str:
    """The class, and a hash of the weights and the normalisation: latents are only comparable under one identity."""
    config = read_diffusers_config(path)
    digest = hashlib.sha256(weights_digest(path, WEIGHTS_FILE).encode())
    digest.update(json.dumps({key: config.get(key) for key in NORMALISATION_KEYS}, sort_keys=True).encode())
    return f"{config['_class_name']}-{digest.hexdigest()[:16]}"


class _CachedStream(ChunkStream):
    """One chunk at a time through step(chunk, cache, first), which carries the network's cache between chunks."""

    def __init__(self, step: Callable, new_cache: Callable, chunk_frames: int, out_channels: int, scale: Fraction):
        super().__init__(step, chunk_frames, out_channels, scale, None, 0)
        self.new_cache, self.cache = new_cache, None

    def _run(self, chunk: torch.Tensor) -> torch.Tensor:
        first = not self.started
        if first:
            self.cache = self.new_cache()
        self.started = True
        return self.net(chunk, self.cache, first)


class DiffusersStreamingEncoder(EncoderSide, _CachedStream):
    """push(pixel frames (B, 3, t, H, W)) -> latent frames (normalised unless normalise=False), chunk by chunk."""

    def __init__(self, model: "DiffusersAutoencoder", normalise: bool = True):
        super().__init__(model.encode_chunk, model.new_encoder_cache, model.chunk_frames, model.latent_channels,
                         Fraction(1, model.spatial_factor))
        self.model, self.normalise = model, normalise


class DiffusersStreamingDecoder(DecoderSide, _CachedStream):
    """push(latent frames (B, C, t, h, w), normalised unless normalised=False) -> pixel frames, one latent frame
    at a time. Run it under torch.no_grad(): with autograd on, every chunk's graph stays alive through the cache."""

    def __init__(self, model: "DiffusersAutoencoder", normalised: bool = True):
        super().__init__(model.decode_chunk, model.new_decoder_cache, model.chunk_frames // model.temporal_factor,
                         3, Fraction(model.spatial_factor))
        self.model, self.normalised = model, normalised


class DiffusersAutoencoder(AutoencoderBase):
    """A diffusers autoencoder (self.vae) with reel's encode / decode / streaming interface.

    Subclasses give the whole-clip calls (encode_whole, decode_whole) and the chunk calls the streams make
    (encode_chunk, decode_chunk, with the caches new_encoder_cache / new_decoder_cache make).
    """

    def __init__(self, vae: nn.Module, folder: Path, spatial_factor: int, temporal_factor: int, latent_channels: int,
                 chunk_frames: int, latent_mean: Sequence[float], latent_std: Sequence[float]):
        super().__init__(spatial_factor, temporal_factor, latent_channels, chunk_frames)
        self.vae, self.folder = vae, Path(folder)
        mean = torch.as_tensor(latent_mean, dtype=torch.float32).flatten()
        std = torch.as_tensor(latent_std, dtype=torch.float32).flatten()
        if mean.numel() != latent_channels or std.numel() != latent_channels:
            raise ReelError(f"{self.folder / CONFIG_FILE}: the latent normalisation has {mean.numel()} means and "
                            f"{std.numel()} stds for {latent_channels} latent channels")
        if not torch.isfinite(mean).all() or not (std > 0).all():
            raise ReelError(f"{self.folder / CONFIG_FILE}: the latent normalisation must be finite with a positive std")
        self.latent_mean.copy_(mean)
        self.latent_std.copy_(std)

    # --- what each class provides ---------------------------------------------------------------
    def encode_whole(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def decode_whole(self, z_raw: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def new_encoder_cache(self) -> Any:
        return None

    def new_decoder_cache(self) -> Any:
        return None

    def encode_chunk(self, x: torch.Tensor, cache: Any, first: bool) -> torch.Tensor:
        raise NotImplementedError

    def decode_chunk(self, z_raw: torch.Tensor, cache: Any, first: bool) -> torch.Tensor:
        raise NotImplementedError

    # --- reel's interface -----------------------------------------------------------------------
    def check_tiling(self, tile_size: Optional[int], tile_overlap: int = 0) -> None:
        if tile_size is not None:
            raise ReelError(f"tile_size={tile_size}: reel does not tile the diffusers autoencoder {self.folder}; "
                            f"leave tile_size unset")

    def encode_raw(self, x: torch.Tensor, chunked: bool = False, tile_size: Optional[int] = None,
                   tile_overlap: int = 0) -> torch.Tensor:
        """The posterior mean before normalisation. chunked: one chunk at a time (memory bounded by the chunk)."""
        self.check_frames(x)
        self.check_tiling(tile_size, tile_overlap)
        if chunked:
            stream = DiffusersStreamingEncoder(self, normalise=False)
            return torch.cat([stream.push(x), stream.flush()], dim=2)
        return self.encode_whole(x)

    def decode_raw(self, z_raw: torch.Tensor, chunked: bool = False, tile_size: Optional[int] = None,
                   tile_overlap: int = 0) -> torch.Tensor:
        self.check_latents(z_raw)
        self.check_tiling(tile_size, tile_overlap)
        if chunked:
            stream = DiffusersStreamingDecoder(self, normalised=False)
            return torch.cat([stream.push(z_raw), stream.flush()], dim=2)
        return self.decode_whole(z_raw)

    def streaming_encoder(self, tile_size: Optional[int] = None, tile_overlap: int = 0) -> DiffusersStreamingEncoder:
        self.check_tiling(tile_size, tile_overlap)
        return DiffusersStreamingEncoder(self)

    def streaming_decoder(self, tile_size: Optional[int] = None, tile_overlap: int = 0) -> DiffusersStreamingDecoder:
        self.check_tiling(tile_size, tile_overlap)
        return DiffusersStreamingDecoder(self)

    def summary(self) -> dict:
        """The facts `reel info` prints about it."""
        f, tf, c = self.spatial_factor, self.temporal_factor, self.latent_channels
        return {"kind": f"diffusers:{type(self.vae).__name__}", "params": count_parameters(self.vae),
                "spatial_factor": f, "temporal_factor": tf, "latent_channels": c, "chunk_frames": self.chunk_frames,
                "compression_ratio": f * f * tf * 3 / c,
                "latent_mean": [round(v, 6) for v in self.latent_mean.tolist()],
                "latent_std": [round(v, 6) for v in self.latent_std.tolist()]}


class WanAutoencoder(DiffusersAutoencoder):
    """AutoencoderKLWan (Wan 2.1: 8x space, 4x time, 16 channels; Wan 2.2 TI2V: 2x2 patches, 16x space, 48)."""

    def __init__(self, vae: nn.Module, folder: Path):
        config = vae.config
        downs = list(config.temperal_downsample)[:len(config.dim_mult) - 1]  # a flag per spatial down block
        temporal_factor = 2 ** sum(bool(down) for down in downs)
        if temporal_factor != 4:  # diffusers' Wan encode cuts time into the first frame and chunks of 4
            raise ReelError(f"{Path(folder) / CONFIG_FILE}: temperal_downsample={list(config.temperal_downsample)} "
                            f"compresses time {temporal_factor}x; reel loads Wan autoencoders with 4x")
        patch = config.patch_size or 1  # Wan 2.2 folds 2x2 pixels into channels before its 8x encoder
        super().__init__(vae, folder, 2 ** (len(config.dim_mult) - 1) * patch, temporal_factor, config.z_dim,
                         temporal_factor, config.latents_mean, config.latents_std)
        self.patch = patch
        from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d

        # a cache slot per causal conv, as diffusers' clear_cache makes them
        self.cache_slots = {part: sum(isinstance(m, WanCausalConv3d) for m in getattr(vae, part).modules())
                            for part in ("encoder", "decoder")}

    def encode_whole(self, x: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(x).latent_dist.mode()

    def decode_whole(self, z_raw: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(z_raw).sample

    def new_encoder_cache(self) -> list:
        return [None] * self.cache_slots["encoder"]

    def new_decoder_cache(self) -> list:
        return [None] * self.cache_slots["decoder"]

    def encode_chunk(self, x: torch.Tensor, cache: list, first: bool) -> torch.Tensor:
        from diffusers.models.autoencoders.autoencoder_kl_wan import patchify
        from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

        x = patchify(x, patch_size=self.patch)
        moments = self.vae.quant_conv(self.vae.encoder(x, feat_cache=cache, feat_idx=[0]))
        return DiagonalGaussianDistribution(moments).mode()

    def decode_chunk(self, z_raw: torch.Tensor, cache: list, first: bool) -> torch.Tensor:
        from diffusers.models.autoencoders.autoencoder_kl_wan import unpatchify

        out = self.vae.decoder(self.vae.post_quant_conv(z_raw), feat_cache=cache, feat_idx=[0], first_chunk=first)
        return unpatchify(out, patch_size=self.patch).clamp(-1.0, 1.0)  # as diffusers' decode


class DcAutoencoder(DiffusersAutoencoder):
    """AutoencoderDC (DC-AE, SANA's image autoencoder) applied frame by frame: temporal_factor 1."""

    def __init__(self, vae: nn.Module, folder: Path):
        channels, scale = vae.config.latent_channels, float(vae.config.scaling_factor)
        if not scale > 0:
            raise ReelError(f"{Path(folder) / CONFIG_FILE}: scaling_factor={scale} must be positive")
        super().__init__(vae, folder, vae.spatial_compression_ratio, 1, channels, 1, [0.0] * channels,
                         [1.0 / scale] * channels)

    def encode_whole(self, x: torch.Tensor) -> torch.Tensor:
        frames = rearrange(x, "b c t h w -> (b t) c h w")
        return rearrange(self.vae.encode(frames).latent, "(b t) c h w -> b c t h w", b=x.shape[0])

    def decode_whole(self, z_raw: torch.Tensor) -> torch.Tensor:
        frames = rearrange(z_raw, "b c t h w -> (b t) c h w")
        return rearrange(self.vae.decode(frames).sample, "(b t) c h w -> b c t h w", b=z_raw.shape[0])

    def encode_chunk(self, x: torch.Tensor, cache: None, first: bool) -> torch.Tensor:
        return self.encode_whole(x)

    def decode_chunk(self, z_raw: torch.Tensor, cache: None, first: bool) -> torch.Tensor:
        return self.decode_whole(z_raw)


BACKENDS = {"AutoencoderKLWan": WanAutoencoder, "AutoencoderDC": DcAutoencoder}
