"""A PNG overview of clips: one row of frames per clip, its caption under the row."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

_PAD = 4
_TEXT_HEIGHT = 16


def _pick_frames(frames: np.ndarray, max_frames: int) -> np.ndarray:
    idx = np.linspace(0, len(frames) - 1, num=min(max_frames, len(frames))).round().astype(int)
    return frames[idx]


def write_contact_sheet(path: str | os.PathLike, clips: Sequence[np.ndarray], captions: Sequence[str],
                        max_frames: int = 8, min_frame_size: int = 96) -> Path:
    """clips: uint8 arrays (T, H, W, 3); frames are upscaled (nearest) to at least min_frame_size."""
    if len(clips) != len(captions):
        raise ValueError(f"{len(clips)} clips but {len(captions)} captions")
    if not clips:
        raise ValueError("no clips for a contact sheet")
    rows = [_pick_frames(np.asarray(c), max_frames) for c in clips]
    h = max(r.shape[1] for r in rows)
    w = max(r.shape[2] for r in rows)
    scale = max(1, -(-min_frame_size // min(h, w)))
    fh, fw = h * scale, w * scale
    cols = max(len(r) for r in rows)
    sheet = Image.new("RGB", (_PAD + cols * (fw + _PAD), _PAD + len(rows) * (fh + _TEXT_HEIGHT + _PAD)),
                      (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for r, (frames, caption) in enumerate(zip(rows, captions)):
        top = _PAD + r * (fh + _TEXT_HEIGHT + _PAD)
        for c, frame in enumerate(frames):
            tile = Image.fromarray(frame).resize((frame.shape[1] * scale, frame.shape[0] * scale), Image.NEAREST)
            sheet.paste(tile, (_PAD + c * (fw + _PAD), top))
        draw.text((_PAD, top + fh + 2), caption, fill=(0, 0, 0), font=font)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    sheet.save(tmp, format="PNG")
    os.replace(tmp, path)
    return path
