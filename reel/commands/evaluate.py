"""`reel eval ...`: score outputs against what was asked."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from omegaconf import MISSING

from reel.commands import Command


@dataclass
class EvalWorldArgs:
    manifest: str = MISSING  # manifest .jsonl, a `reel sample` folder, or a make-shapes folder
    out: Optional[str] = None  # also write the full report (with per-clip results) here
    per_clip: bool = False  # print per-clip results too


def eval_world_command(cfg, args: EvalWorldArgs) -> int:
    from reel.data.oracle import score_manifest

    report = score_manifest(args.manifest)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2))
    shown = report if args.per_clip else {k: v for k, v in report.items() if k != "clips"}
    print(json.dumps(shown))
    return 0


COMMANDS = [
    Command(("eval", "world"), "score clips against their prompts with the shapes-world oracle",
            eval_world_command, EvalWorldArgs,
            doc="Prints per-attribute (color, shape, direction) and joint accuracy as JSON."),
]
