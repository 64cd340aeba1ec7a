"""`reel data ...`: generate the shapes world, scan video folders, check a dataset."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional

from omegaconf import MISSING

from reel.commands import Command


@dataclass
class MakeShapesArgs:
    out_dir: str = MISSING
    num_clips: int = 64
    one_per_combo: bool = False  # cycle through the 72 colour x shape x direction combos


def make_shapes_command(cfg, args: MakeShapesArgs) -> int:
    from reel.data.shapes import make_shapes

    data = cfg.data
    path = make_shapes(args.out_dir, args.num_clips, data.height, data.width, data.num_frames,
                       seed=data.shapes.seed, fps=data.fps, progress=cfg.logging.progress,
                       one_per_combo=args.one_per_combo)
    print(json.dumps({"metadata": str(path), "num_clips": args.num_clips, "height": data.height,
                      "width": data.width, "num_frames": data.num_frames}))
    return 0


@dataclass
class ScanArgs:
    dir: str = MISSING
    out: str = MISSING


def scan_command(cfg, args: ScanArgs) -> int:
    from reel.data.scan import scan_folder

    report = scan_folder(args.dir, args.out, progress=cfg.logging.progress)
    print(json.dumps({"metadata": str(report.out_file), "readable": report.num_ok,
                      "unreadable": [{"path": str(p), "reason": r} for p, r in report.unreadable]}))
    return 0


@dataclass
class CheckArgs:
    batches: Optional[int] = None  # stop after this many batches (default: one epoch)
    contact_sheet: Optional[str] = None  # write a PNG of the first clips with their captions
    sheet_clips: int = 8


def check_command(cfg, args: CheckArgs) -> int:
    from reel.data.check import check_dataset

    summary = check_dataset(cfg, max_batches=args.batches, contact_sheet=args.contact_sheet,
                            sheet_clips=args.sheet_clips)
    print(json.dumps(summary))
    return 0


_SHAPE_ALIASES = {"height": "data.height", "width": "data.width", "num_frames": "data.num_frames",
                  "seed": "data.shapes.seed", "fps": "data.fps"}

COMMANDS = [
    Command(("data", "make-shapes"), "write shapes-world clips (mp4) and metadata.jsonl",
            make_shapes_command, MakeShapesArgs, aliases=_SHAPE_ALIASES,
            doc="Example: reel data make-shapes out_dir=shapes num_clips=72 one_per_combo=true"),
    Command(("data", "scan"), "probe a folder of videos and write its metadata file",
            scan_command, ScanArgs,
            doc="Unreadable files are listed (with the reason) and left out of the metadata."),
    Command(("data", "check"), "iterate a dataset the way training does; report counts and skips",
            check_command, CheckArgs,
            doc="Example: reel data check data=folder data.metadata=clips/metadata.jsonl "
                "data.buckets=[64x64x17:4,64x112x17:2] contact_sheet=sheet.png"),
]
