"""`reel info`: what a checkpoint holds, or what the configured models would be."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from omegaconf import OmegaConf

from reel.commands import Command
from reel.errors import ReelError


@dataclass
class InfoArgs:
    checkpoint: Optional[str] = None  # a DiT or autoencoder folder, or a training run; none: the configured models


def _autoencoder_info(path: Path) -> dict:
    from reel.autoencoders import autoencoder_summary, load_autoencoder, read_extra_info

    model = load_autoencoder(path)
    dtypes = sorted({str(v.dtype).replace("torch.", "") for v in _stored_tensors(path).values()})
    return {"checkpoint": str(path), **autoencoder_summary(model), "stored_dtypes": dtypes,
            "latent_stats": bool((model.latent_std != 1).any() or (model.latent_mean != 0).any()),
            "training": read_extra_info(path)}


def _diffusers_autoencoder_info(path: Path) -> dict:
    from reel.autoencoders import load_autoencoder
    from reel.autoencoders.checkpoint import autoencoder_identity

    return {"checkpoint": str(path), **load_autoencoder(path).summary(), "identity": autoencoder_identity(path)}


def _dit_info(path: Path) -> dict:
    from reel.models.dit import dit_summary
    from reel.models.dit_checkpoint import load_dit, read_dit_extra_info

    model, cfg = load_dit(path)
    dtypes = sorted({str(v.dtype).replace("torch.", "") for v in _stored_tensors(path).values()})
    return {"checkpoint": str(path), "kind": "dit", "model": cfg.model.name,
            "attention": model.attention_kinds, "causal_chunk": cfg.model.causal_chunk,
            "params": dit_summary(model), "stored_dtypes": dtypes,
            "latent_space": {"autoencoder": cfg.autoencoder.name, "checkpoint": cfg.autoencoder.checkpoint,
                             "latent_channels": cfg.dit.latent_channels},
            "text_encoder": {"name": cfg.text_encoder.name, "dim": cfg.dit.text_dim},
            "clip": {k: cfg.data[k] for k in ("height", "width", "num_frames", "fps")},
            "training": read_dit_extra_info(path)}


def _stored_tensors(path: Path) -> dict:
    from reel.checkpoint_folder import load_weights

    return load_weights(path)


def _run_info(path: Path) -> dict:
    from reel.commands.export import model_kind
    from reel.train.checkpoint import load_training_checkpoint

    ckpt = load_training_checkpoint(path)
    kind, cfg, state = model_kind(ckpt.ema), ckpt.config, ckpt.trainer_state
    info = {"checkpoint": str(ckpt.path), "kind": f"training run ({kind})", "step": ckpt.step,
            "params": sum(v.numel() for v in ckpt.ema.values()),
            "ema_dtypes": sorted({str(v.dtype).replace("torch.", "") for v in ckpt.ema.values()}),
            "run": {k: state.get(k) for k in ("world_size", "dp_size", "zero_stage", "precision", "batch_size",
                                               "grad_accum")},
            "data": cfg.data.name}
    if kind == "dit":
        info["model"] = {"name": cfg.model.name, "attention": cfg.model.attention,
                         "causal_chunk": cfg.model.causal_chunk}
        info["latent_space"] = {"autoencoder": cfg.autoencoder.name, "checkpoint": cfg.autoencoder.checkpoint}
    else:
        info["autoencoder"] = cfg.autoencoder.name
    return info


def _configured_models(cfg) -> dict:
    from reel.autoencoders import autoencoder_summary, build_autoencoder
    from reel.models.dit import build_dit, dit_summary

    text_dim = cfg.text_encoder.dim or 384
    with torch.device("meta"):  # parameter counts without allocating research-scale weights
        ae = build_autoencoder(cfg.autoencoder)
        dit = build_dit(cfg.model, cfg.autoencoder.latent_channels, text_dim)
    return {"autoencoder": {"name": cfg.autoencoder.name, **autoencoder_summary(ae)},
            "model": {"name": cfg.model.name, "text_dim": text_dim, "params": dit_summary(dit)}}


def info_command(cfg, args: InfoArgs) -> int:
    if args.checkpoint is None:
        print(json.dumps(_configured_models(cfg), indent=2))
        return 0
    from reel.assets import resolve_checkpoint_path

    path = resolve_checkpoint_path(args.checkpoint)
    if not path.exists():
        raise ReelError(f"checkpoint={path}: no such file or folder")
    from reel.autoencoders.diffusers_backend import is_diffusers_folder
    from reel.checkpoint_folder import weights_path

    is_folder = weights_path(path).is_file() and (path / "config.yaml").is_file()
    if is_diffusers_folder(path):
        print(json.dumps(_diffusers_autoencoder_info(path), indent=2))
    elif is_folder and "dit" in OmegaConf.load(path / "config.yaml"):
        print(json.dumps(_dit_info(path), indent=2))
    elif is_folder and not (path / "MANIFEST.json").exists():
        print(json.dumps(_autoencoder_info(path), indent=2))
    else:
        print(json.dumps(_run_info(path), indent=2))
    return 0


COMMANDS = [
    Command(("info",), "describe a checkpoint, or the configured models (parameter counts)", info_command,
            InfoArgs, doc="Examples: reel info autoencoder=dc-ae-v-f32t4c32\n          reel info checkpoint=DIR"),
]
