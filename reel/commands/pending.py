"""Entry points whose implementations land with later work. They already compose and
validate the full config, so presets and overrides can be checked today."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from reel.commands import Command, NotAvailable


@dataclass
class ExportArgs:
    checkpoint: Optional[str] = None
    out: Optional[str] = None
    weights: str = "ema"
    dtype: str = "fp16"


def _not_yet(what: str):
    def handler(cfg, args):
        raise NotAvailable(f"{what}; the config is valid (print it with --cfg job)")

    return handler


COMMANDS = [
    Command(("export",), "export a checkpoint to safetensors", _not_yet(
        "reel export: no checkpoints exist in this version"), ExportArgs),
]
