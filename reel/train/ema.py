"""Exponential moving average of a model's weights, in fp32, held by rank 0 only.

Under ZeRO-3 each rank holds a slice of every weight, so all ranks gather the weights together
(a few at a time, to bound memory) and rank 0 folds them into its copy.
"""
from __future__ import annotations

import copy
from typing import Iterator

import torch
from torch import nn

# Weights gathered at once under ZeRO-3 (elements): a few hundred MB in fp32.
GATHER_CHUNK_NUMEL = 64 * 2**20


def is_zero3_param(param: torch.Tensor) -> bool:
    return hasattr(param, "ds_id")


def _numel(param: torch.Tensor) -> int:
    return getattr(param, "ds_numel", param.numel())


def _param_chunks(params: list[tuple[str, nn.Parameter]]) -> Iterator[list[tuple[str, nn.Parameter]]]:
    chunk, size = [], 0
    for item in params:
        chunk.append(item)
        size += _numel(item[1])
        if size >= GATHER_CHUNK_NUMEL:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def gathered_named_parameters(module: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, full weight) for every parameter; a collective under ZeRO-3, so every rank must iterate."""
    params = list(module.named_parameters())
    if not any(is_zero3_param(p) for _, p in params):
        yield from params
        return
    from deepspeed.runtime.zero.partition_parameters import GatheredParameters

    for chunk in _param_chunks(params):
        with GatheredParameters([p for _, p in chunk], modifier_rank=None):
            yield from chunk


def full_state_dict(module: nn.Module, keep: bool = True) -> dict[str, torch.Tensor]:
    """fp32 copies of every weight and persistent buffer (a collective under ZeRO-3); empty where not `keep`."""
    state = {}
    for name, param in gathered_named_parameters(module):
        if keep:
            state[name] = param.detach().float().cpu().clone()
    if keep:
        buffer_names = set(module.state_dict().keys()) - set(dict(module.named_parameters()).keys())
        for name, buffer in module.named_buffers():
            if name in buffer_names:
                state[name] = buffer.detach().cpu().clone()
    return state


class ModelEMA:
    """EMA weights as a module (so previews can run it); `module` is None on ranks other than 0."""

    def __init__(self, model: nn.Module, decay: float, keep: bool):
        self.decay = float(decay)
        self.module = copy.deepcopy(model).float().eval().requires_grad_(False) if keep else None

    def to(self, device: torch.device) -> "ModelEMA":
        if self.module is not None:
            self.module.to(device)
        return self

    @torch.no_grad()
    def update(self, live: nn.Module) -> None:
        """Fold the live weights in; every rank must call it (weights are gathered under ZeRO-3)."""
        ema_params = dict(self.module.named_parameters()) if self.module is not None else {}
        for name, param in gathered_named_parameters(live):
            if self.module is not None:
                ema_params[name].lerp_(param.detach().float(), 1.0 - self.decay)
        if self.module is not None:
            ema_buffers = dict(self.module.named_buffers())
            for name, buffer in live.named_buffers():
                ema_buffers[name].copy_(buffer)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().float().cpu().clone() if v.is_floating_point() else v.detach().cpu().clone()
                for k, v in self.module.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor], strict: bool = True) -> None:
        missing, unexpected = self.module.load_state_dict(state, strict=strict)
        if unexpected:
            raise KeyError(f"EMA state has {unexpected[0]}, which the model does not")
