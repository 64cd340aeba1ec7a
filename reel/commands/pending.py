"""Entry points whose implementations land with later work. They already compose and
validate the full config, so presets and overrides can be checked today."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from reel.commands import Command, NotAvailable


@dataclass
class SampleArgs:
    checkpoint: Optional[str] = None
    prompt: Optional[str] = None
    prompts: Optional[str] = None
    out_dir: str = "samples"


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
    Command(("sample",), "sample videos from prompts", _not_yet(
        "reel sample: no DiT or sampler in this version"), SampleArgs,
        aliases={"num_frames": "sample.num_frames", "height": "sample.height", "width": "sample.width",
                 "steps": "sample.steps", "guidance": "sample.guidance", "seed": "sample.seed",
                 "solver": "sample.solver"}),
    Command(("export",), "export a checkpoint to safetensors", _not_yet(
        "reel export: no checkpoints exist in this version"), ExportArgs),
]
