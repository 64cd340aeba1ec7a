"""DiT checkpoint folders: model.safetensors and config.yaml.

config.yaml holds what it takes to use the model, not only to build it: the `model` node, the
latent space it was trained in (`autoencoder`, with its checkpoint), the `text_encoder`, the
default `sample` settings and the clip size it was trained at (`data`), plus `dit` with the
widths it was built for. `reel sample checkpoint=DIR` and `reel export` read these folders.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Union

import torch
from omegaconf import DictConfig, OmegaConf

from reel.assets import resolve_checkpoint_path
from reel.atomic import atomic_folder
from reel.checkpoint_folder import (CONFIG_FILE, EXTRA_INFO_KEY, load_weights, read_extra_info, require_folder,
                                    save_weights, weight_shapes, weights_path)
from reel.errors import ReelError
from reel.models.dit import DiT

KIND = "dit"
GROUPS = ("model", "autoencoder", "text_encoder", "sample")
DATA_KEYS = ("height", "width", "num_frames", "fps")


def dit_config_dict(cfg: Any, latent_channels: int, text_dim: int) -> dict:
    """The part of a full reel config a DiT folder keeps."""
    full = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    kept = {group: full[group] for group in GROUPS}
    kept["data"] = {key: full["data"][key] for key in DATA_KEYS}
    kept["dit"] = {"kind": KIND, "latent_channels": int(latent_channels), "text_dim": int(text_dim)}
    return kept


def save_dit(model: DiT, path: Union[str, Path], cfg: Any, dtype: torch.dtype = torch.float32,
             extra_info: Optional[dict] = None, max_shard_bytes: Optional[int] = None) -> Path:
    """Write `path/` = model.safetensors (or shards above `max_shard_bytes`) + config.yaml atomically;
    `cfg` is the full config that built it."""
    tensors = {name: (t.detach().to("cpu", dtype) if t.is_floating_point() else t.detach().cpu()).contiguous()
               for name, t in model.state_dict().items()}
    metadata = {"format": "pt", "kind": KIND}
    if extra_info:
        metadata[EXTRA_INFO_KEY] = json.dumps(extra_info, default=str)
    with atomic_folder(path) as tmp:
        save_weights(tmp, tensors, metadata, max_shard_bytes)
        OmegaConf.save(OmegaConf.create(dit_config_dict(cfg, model.latent_channels, model.text_dim)),
                       tmp / CONFIG_FILE)
    return Path(path)


def read_dit_config(path: Union[str, Path]) -> DictConfig:
    path = resolve_checkpoint_path(path)
    require_folder(path, "checkpoint", "a DiT folder")
    cfg = OmegaConf.load(path / CONFIG_FILE)
    if cfg.get("dit", {}).get("kind") != KIND:
        raise ReelError(f"{path / CONFIG_FILE}: not a DiT checkpoint (no dit.kind={KIND}); "
                        f"is it an autoencoder or a training run folder?")
    return cfg


def read_dit_extra_info(path: Union[str, Path]) -> dict:
    return read_extra_info(resolve_checkpoint_path(path))


def load_dit(path: Union[str, Path], device: Union[str, torch.device] = "cpu",
             dtype: torch.dtype = torch.float32) -> tuple[DiT, DictConfig]:
    """(model in eval mode, the folder's config)."""
    path = resolve_checkpoint_path(path)
    cfg = read_dit_config(path)
    with torch.device("meta"):
        model = DiT(cfg.model, cfg.dit.latent_channels, cfg.dit.text_dim)
    weights = weights_path(path)
    stored = weight_shapes(path)
    expected = model.state_dict()
    for name, tensor in expected.items():
        if name not in stored:
            raise ReelError(f"{weights}: {name} is missing (the config builds it)")
        if stored[name] != tuple(tensor.shape):
            raise ReelError(f"{weights}: {name} has shape {list(stored[name])}, the config builds "
                            f"{list(tensor.shape)}")
    unexpected = sorted(set(stored) - set(expected))
    if unexpected:
        raise ReelError(f"{weights}: {unexpected[0]} is not in the model the config builds")
    state = load_weights(path, device)
    model.load_state_dict(state, assign=True)
    return model.to(device=device, dtype=dtype).eval(), cfg
