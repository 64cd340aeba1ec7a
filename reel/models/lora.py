"""Low-rank adapters (LoRA) on a model's linear layers, attached by forward hooks.

For each targeted nn.Linear W: y = W x + (alpha / rank) B A x, with A (rank x in) random and B
(out x rank) zero, so training starts from the base model exactly. The base weights keep their
names and stay frozen; the adapters live in `model.lora` (keys `lora.<module path with dots as
__>.A/B`), so a LoRA file holds only them. `merge_lora` folds them into the base weights.
"""
from __future__ import annotations

import fnmatch
import math
from typing import Dict, Iterable, Optional, Sequence

import torch
import torch.nn as nn

from reel.errors import ReelError

DEFAULT_TARGETS = ("*.attn.qkv", "*.attn.out", "*.cross_attn.q", "*.cross_attn.kv", "*.cross_attn.out",
                   "*.ffn.expand", "*.ffn.project")
PREFIX = "lora."


class LoRAAdapter(nn.Module):
    def __init__(self, linear: nn.Linear, rank: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        self.rank, self.scale = rank, alpha / rank
        self.A = nn.Parameter(torch.empty(rank, linear.in_features, dtype=linear.weight.dtype,
                                          device=linear.weight.device))
        self.B = nn.Parameter(torch.zeros(linear.out_features, rank, dtype=linear.weight.dtype,
                                          device=linear.weight.device))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        return (self.dropout(x) @ self.A.t().to(x.dtype)) @ (self.B.t().to(x.dtype) * self.scale)


def _key(name: str) -> str:
    return name.replace(".", "__")


def target_modules(model: nn.Module, patterns: Sequence[str]) -> Dict[str, nn.Linear]:
    """The nn.Linear layers whose names match any pattern (fnmatch); at least one per pattern."""
    found = {}
    for pattern in patterns:
        matches = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)
                   and fnmatch.fnmatchcase(name, pattern) and not name.startswith(PREFIX)}
        if not matches:
            raise ReelError(f"train.lora.targets: {pattern!r} matches no linear layer of the model")
        found.update(matches)
    return dict(sorted(found.items()))


def add_lora(model: nn.Module, rank: int, alpha: Optional[float] = None, targets: Iterable[str] = DEFAULT_TARGETS,
             dropout: float = 0.0, freeze_base: bool = True) -> nn.Module:
    """Attach adapters to `model` in place; with `freeze_base`, only they train."""
    if rank < 1:
        raise ReelError(f"train.lora.rank={rank}: must be at least 1 (0 turns LoRA off)")
    if getattr(model, "lora", None) is not None:
        raise ReelError("the model already has LoRA adapters")
    if freeze_base:
        model.requires_grad_(False)
    layers = target_modules(model, list(targets))
    model.lora = nn.ModuleDict({_key(name): LoRAAdapter(layer, rank, float(alpha or rank), dropout)
                                for name, layer in layers.items()})
    model.lora_config = {"rank": int(rank), "alpha": float(alpha or rank), "targets": list(targets)}
    for name, layer in layers.items():
        layer.register_forward_hook(_LoRAHook(model.lora[_key(name)]))
    return model


class _LoRAHook:
    """An object, not a closure: a deep copy of the model (its EMA) then carries hooks on its own adapters."""

    def __init__(self, adapter: LoRAAdapter):
        self.adapter = adapter

    def __call__(self, module, inputs, output):
        return output + self.adapter.delta(inputs[0])


def lora_state_dict(model: nn.Module) -> Dict[str, torch.Tensor]:
    return {name: t for name, t in model.state_dict().items() if name.startswith(PREFIX)}


def base_state_dict(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    return {name: t for name, t in state.items() if not name.startswith(PREFIX)}


def merged_state_dict(model: nn.Module) -> Dict[str, torch.Tensor]:
    """The base weights with every adapter folded in (W + scale B A), adapters left out."""
    return merge_into(base_state_dict(model.state_dict()), lora_state_dict(model), model.lora_config["alpha"]
                      / model.lora_config["rank"])


def merge_into(state: Dict[str, torch.Tensor], adapters: Dict[str, torch.Tensor], scale: float) -> Dict[str, torch.Tensor]:
    """Fold adapter tensors (lora.<key>.A / .B) into a base state dict with `scale` = alpha / rank."""
    merged = dict(state)
    keys = sorted({name[len(PREFIX):].rsplit(".", 1)[0] for name in adapters})
    for key in keys:
        a, b = adapters[f"{PREFIX}{key}.A"].float(), adapters[f"{PREFIX}{key}.B"].float()
        name = key.replace("__", ".") + ".weight"
        if name not in merged:
            raise ReelError(f"LoRA adapter {key}: the base model has no {name}")
        merged[name] = (merged[name].float() + scale * (b @ a)).to(merged[name].dtype)
    return merged
