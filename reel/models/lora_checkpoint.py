"""LoRA folders: lora.safetensors (the adapters only) + lora.yaml (rank, alpha, targets, and the base
DiT folder they were trained on)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import torch.nn as nn
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file, save_file

from reel.atomic import atomic_folder
from reel.errors import ReelError
from reel.models.lora import PREFIX, add_lora, lora_state_dict

LORA_FILE, LORA_CONFIG = "lora.safetensors", "lora.yaml"


def is_lora_folder(path: Union[str, Path]) -> bool:
    return (Path(path) / LORA_FILE).is_file()


def save_lora(model: nn.Module, path: Union[str, Path], base: Optional[str], extra: Optional[dict] = None) -> Path:
    tensors = {name: t.detach().float().cpu().contiguous() for name, t in lora_state_dict(model).items()}
    with atomic_folder(path) as tmp:
        save_file(tensors, str(tmp / LORA_FILE), metadata={"format": "pt", "kind": "lora"})
        OmegaConf.save(OmegaConf.create({**model.lora_config, "base": base, "training": extra or {}}),
                       tmp / LORA_CONFIG)
    return Path(path)


def read_lora(path: Union[str, Path]) -> tuple[dict, DictConfig]:
    path = Path(path)
    if not is_lora_folder(path) or not (path / LORA_CONFIG).is_file():
        raise ReelError(f"lora={path}: not a LoRA folder ({LORA_FILE} and {LORA_CONFIG})")
    return load_file(str(path / LORA_FILE)), OmegaConf.load(path / LORA_CONFIG)


def apply_lora(model: nn.Module, path: Union[str, Path], scale: float = 1.0) -> nn.Module:
    """Attach the adapters of a LoRA folder to `model` (unmerged), their output scaled by `scale`."""
    tensors, cfg = read_lora(path)
    add_lora(model, int(cfg.rank), float(cfg.alpha), list(cfg.targets), freeze_base=False)
    expected = set(lora_state_dict(model))
    if set(tensors) != expected:
        name = sorted(set(tensors) ^ expected)[0]
        raise ReelError(f"lora={path}: {name} does not fit the base model's layers")
    model.load_state_dict({**model.state_dict(), **tensors})
    for adapter in model.lora.values():
        adapter.scale *= float(scale)
    return model


__all__ = ["LORA_FILE", "LORA_CONFIG", "PREFIX", "apply_lora", "is_lora_folder", "read_lora", "save_lora"]
