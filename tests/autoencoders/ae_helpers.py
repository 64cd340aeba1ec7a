"""Shared helpers of the autoencoder tests (a uniquely named module: tests/ has several conftest.py)."""
from pathlib import Path

import torch
from omegaconf import OmegaConf

from reel.autoencoders import build_autoencoder
from reel.config.schema import AutoencoderConfig

PRESETS = Path(__file__).resolve().parents[2] / "configs" / "autoencoder"


def preset(name: str, **arch_overrides):
    """An autoencoder config node from configs/autoencoder/NAME.yaml, with arch keys replaced."""
    cfg = OmegaConf.merge(OmegaConf.structured(AutoencoderConfig), OmegaConf.load(PRESETS / f"{name}.yaml"))
    for key, value in arch_overrides.items():
        cfg.arch[key] = value
    return cfg


def build(cfg, seed: int = 0):
    torch.manual_seed(seed)
    return build_autoencoder(cfg).eval()


def clip(frames: int, size: int = 32, batch: int = 2, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, frames, size, size, generator=generator) * 2 - 1
