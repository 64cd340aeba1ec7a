"""Autoencoder checkpoint folders: model.safetensors (weights + latent stats) and config.yaml.

config.yaml is the `autoencoder` config node with its arch fully resolved, so a folder rebuilds
the same model even if the builder's defaults change later. Weights are read only through
safetensors. A folder is written under a temporary name and renamed into place.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Optional, Union

import torch
import torch.nn as nn
from omegaconf import OmegaConf

from reel.assets import resolve_checkpoint_path
from reel.atomic import atomic_folder
from reel.autoencoders.arch import KIND, autoencoder_config_dict, plain_config, resolve_arch
from reel.autoencoders.model import AutoencoderBase, VideoAutoencoder
from reel.checkpoint_folder import (CONFIG_FILE, EXTRA_INFO_KEY, load_weights, require_folder, save_weights,
                                    weight_shapes, weights_path)
from reel.checkpoint_folder import read_extra_info as read_folder_extra_info
from reel.config.schema import AutoencoderConfig
from reel.errors import ReelError

LATENT_STATS = ("latent_mean", "latent_std")  # kept in fp32 whatever the weights' dtype


def _unwrap(model: nn.Module) -> nn.Module:
    """The autoencoder inside a DDP/DeepSpeed (.module) or torch.compile (._orig_mod) wrapper."""
    while isinstance(getattr(model, "module", None), nn.Module) or isinstance(getattr(model, "_orig_mod", None),
                                                                              nn.Module):
        model = getattr(model, "module", None) or model._orig_mod
    return model


def save_autoencoder(model: nn.Module, path: Union[str, Path], cfg_autoencoder: Any,
                     dtype: torch.dtype = torch.float16, extra_info: Optional[dict] = None,
                     max_shard_bytes: Optional[int] = None) -> Path:
    """Write `path/` = model.safetensors + config.yaml atomically; returns the folder."""
    model = _unwrap(model)
    if not isinstance(model, VideoAutoencoder):
        raise TypeError(f"save_autoencoder needs a VideoAutoencoder, got {type(model).__name__}")
    arch = resolve_arch(cfg_autoencoder)
    if arch != model.arch:
        name = plain_config(cfg_autoencoder).get("name")
        raise ReelError(f"autoencoder config {name}: does not describe the model being saved (its resolved arch "
                        f"differs)")
    tensors = {name: t.detach().to("cpu", torch.float32 if name in LATENT_STATS or not t.is_floating_point()
                                   else dtype).contiguous()
               for name, t in model.state_dict().items()}
    metadata = {"format": "pt", "kind": KIND}
    if extra_info:
        metadata[EXTRA_INFO_KEY] = json.dumps(extra_info, default=str)

    with atomic_folder(path) as tmp:
        save_weights(tmp, tensors, metadata, max_shard_bytes)
        OmegaConf.save(OmegaConf.create(autoencoder_config_dict(cfg_autoencoder, arch)), tmp / CONFIG_FILE)
    return Path(path)


def read_autoencoder_config(path: Union[str, Path]):
    """The checked `autoencoder` config node stored in a checkpoint folder."""
    path = resolve_checkpoint_path(path)
    require_folder(path, "autoencoder checkpoint", "a checkpoint folder")
    try:
        stored = OmegaConf.load(path / CONFIG_FILE)
        return OmegaConf.merge(OmegaConf.structured(AutoencoderConfig), stored)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ReelError(f"{path / CONFIG_FILE}: not a valid autoencoder config ({first})") from None


def read_extra_info(path: Union[str, Path]) -> dict:
    """The `extra_info` given to save_autoencoder ({} if none)."""
    return read_folder_extra_info(resolve_checkpoint_path(path))


def _diffusers_backend(path: Path):
    """reel.autoencoders.diffusers_backend when `path` is a diffusers folder (imported only then: it needs
    diffusers), else None."""
    if (path / "model_index.json").is_file() and (path / "vae" / "config.json").is_file():
        raise ReelError(f"{path}: a diffusers pipeline folder; give its autoencoder, {path / 'vae'}")
    from reel.autoencoders import diffusers_backend

    return diffusers_backend if diffusers_backend.is_diffusers_folder(path) else None


def load_autoencoder(path: Union[str, Path], device: Union[str, torch.device] = "cpu",
                     dtype: torch.dtype = torch.float32) -> AutoencoderBase:
    """The autoencoder of a checkpoint folder in eval mode: a reel folder rebuilt from its config.yaml, or a
    diffusers folder (config.json naming AutoencoderKLWan or AutoencoderDC) wrapped behind the same interface."""
    path = resolve_checkpoint_path(path)
    backend = _diffusers_backend(path)
    if backend is not None:
        return backend.load_diffusers_autoencoder(path, device, dtype)
    cfg = read_autoencoder_config(path)
    weights = weights_path(path)
    with torch.device("meta"):
        model = VideoAutoencoder(resolve_arch(cfg))
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    stored = weight_shapes(path)
    for name, shape in expected.items():
        if name not in stored:
            raise ReelError(f"{weights}: weights do not match {path / CONFIG_FILE}: {name} is missing from the file")
        if stored[name] != shape:
            raise ReelError(f"{weights}: weights do not match {path / CONFIG_FILE}: {name} has shape "
                            f"{list(stored[name])} in the file, the config builds {list(shape)}")
    unexpected = [name for name in stored if name not in expected]
    if unexpected:
        raise ReelError(f"{weights}: weights do not match {path / CONFIG_FILE}: {unexpected[0]} is not in the model")
    model.load_state_dict(load_weights(path, device), assign=True)
    return model.to(device=device, dtype=dtype).eval()


def autoencoder_from_config(cfg_autoencoder: Any, device: Union[str, torch.device] = "cpu",
                            dtype: torch.dtype = torch.float32) -> AutoencoderBase:
    """The checkpoint at `autoencoder.checkpoint` when set (its factors must match the config), else a new model."""
    cfg = plain_config(cfg_autoencoder)
    if not cfg.get("checkpoint"):
        return VideoAutoencoder(resolve_arch(cfg)).to(device=device, dtype=dtype)
    model = load_autoencoder(cfg["checkpoint"], device, dtype)
    for key in ("spatial_factor", "temporal_factor", "latent_channels"):
        if cfg.get(key) != getattr(model, key):
            raise ReelError(f"autoencoder.{key}={cfg.get(key)}: the checkpoint {cfg['checkpoint']} has "
                            f"{key}={getattr(model, key)}")
    return model


LATENT_STATS = ("latent_mean", "latent_std")  # buffers of every reel autoencoder


def warm_start(model: VideoAutoencoder, path: Union[str, Path]) -> list:
    """Copy into `model` every tensor of the reel autoencoder at `path` with the same name and shape, except
    the latent statistics (they belong to a latent space; `reel autoencoder stats` writes the new one's).
    A new latent channel count keeps all but the encoder's head and the decoder's stem. Returns the names
    left at their fresh initialisation; an architecture sharing under half of them is an error."""
    path = resolve_checkpoint_path(path)
    if _diffusers_backend(path) is not None:
        raise ReelError(f"train.ae.warm_start={path}: a diffusers autoencoder; warm starts copy a reel DC-AE-V's "
                        "tensors")
    require_folder(path, "train.ae.warm_start", "an autoencoder folder")
    stored = load_weights(path)
    own = model.state_dict()
    kept = {name: t for name, t in stored.items()
            if name in own and name not in LATENT_STATS and tuple(t.shape) == tuple(own[name].shape)}
    wanted = len(own) - len(LATENT_STATS)
    if 2 * len(kept) < wanted:
        raise ReelError(f"train.ae.warm_start={path}: only {len(kept)} of {wanted} tensors match the configured "
                        f"autoencoder ({read_autoencoder_config(path).name} has another architecture)")
    with torch.no_grad():
        for name, t in kept.items():
            own[name].copy_(t)
    return [name for name in own if name not in kept]


def autoencoder_identity(path: Union[str, Path]) -> str:
    """The config name (a diffusers folder's class) and a hash of what makes the latents (a reel folder: every
    weight but the decoder's, the normalisation included): latents are only comparable under one identity, and
    a decoder fine-tuned with the encoder frozen keeps it."""
    path = resolve_checkpoint_path(path)
    backend = _diffusers_backend(path)
    if backend is not None:
        return backend.diffusers_identity(path)
    return f"{read_autoencoder_config(path).name}-{latent_space_digest(path)[:16]}"


def latent_space_digest(path: Path) -> str:
    """sha256 over the name, dtype, shape and bytes of every stored tensor outside the decoder, by name."""
    digest = hashlib.sha256()
    state = load_weights(path, keep=lambda name: not name.startswith("decoder."))
    for name in sorted(state):
        tensor = state[name].contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def same_latent_space(a: Union[str, Path], b: Union[str, Path]) -> bool:
    """Whether two autoencoder folders make the same latents: for reel folders, every stored tensor outside the
    decoder (the latent statistics included) equal in value, whatever precision each was saved in; for
    diffusers folders, the same identity."""
    a, b = resolve_checkpoint_path(a), resolve_checkpoint_path(b)
    if _diffusers_backend(a) is not None or _diffusers_backend(b) is not None:
        return autoencoder_identity(a) == autoencoder_identity(b)
    outside = lambda name: not name.startswith("decoder.")  # noqa: E731
    first, second = load_weights(a, keep=outside), load_weights(b, keep=outside)
    return first.keys() == second.keys() and all(
        first[k].shape == second[k].shape and torch.equal(first[k].float(), second[k].float()) for k in first)
