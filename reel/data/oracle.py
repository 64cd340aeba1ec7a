"""Reads colour, shape and direction back from a shapes-world clip, by the rules in WORLD.md."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional

import numpy as np

from reel.data.shapes import COLORS, DIRECTIONS, SHAPES
from reel.data.video_io import read_video
from reel.errors import ReelError

ATTRIBUTES = ("color", "shape", "direction")
PALETTE = np.array(list(COLORS.values()), dtype=np.float64)  # (6, 3), in COLORS order
COLOR_NAMES = tuple(COLORS)

MIN_BRIGHTNESS = 110  # max(R, G, B) of an object pixel
MIN_SATURATION = 0.45  # (max - min) / max of an object pixel
MIN_SHAPE_PIXELS = 20  # frames with fewer mask pixels do not vote on the shape
MIN_TRAVEL = 0.12  # of the axis's size
MIN_AXIS_DOMINANCE = 2.0  # the moving axis must travel at least twice as far as the other
MIN_FRAMES_WITH_MASK = 0.6


def score_frames(frames: np.ndarray) -> dict:
    """uint8 frames (T, H, W, 3) -> {"color", "shape", "direction"}, each a name or None."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ReelError(f"oracle: frames must be (T, H, W, 3), got {frames.shape}")
    nearest = _nearest_palette_index(frames)
    votes = np.bincount(nearest[nearest >= 0], minlength=len(COLOR_NAMES))
    if votes.sum() == 0:
        return {"color": None, "shape": None, "direction": None}
    winner = int(np.argmax(votes))  # a tie goes to the colour listed first in COLORS
    mask = nearest == winner
    return {"color": COLOR_NAMES[winner], "shape": _shape(mask), "direction": _direction(mask)}


def _nearest_palette_index(frames: np.ndarray) -> np.ndarray:
    """int (T, H, W): the nearest palette colour of each object pixel, -1 for the rest."""
    pixels = frames.astype(np.float64)
    brightest, darkest = pixels.max(axis=-1), pixels.min(axis=-1)
    saturation = (brightest - darkest) / np.maximum(brightest, 1.0)
    is_object = (brightest >= MIN_BRIGHTNESS) & (saturation >= MIN_SATURATION)
    nearest = np.full(frames.shape[:-1], -1, dtype=np.int64)
    distances = ((pixels[is_object][:, None, :] - PALETTE[None]) ** 2).sum(axis=-1)
    nearest[is_object] = distances.argmin(axis=1)
    return nearest


def _shape(mask: np.ndarray) -> Optional[str]:
    fills = [_bbox_fill(frame_mask) for frame_mask in mask if frame_mask.sum() >= MIN_SHAPE_PIXELS]
    if not fills:
        return None
    fill = float(np.median(fills))
    if fill > 0.9:
        return "square"
    if fill >= 0.65:
        return "circle"
    if fill >= 0.35:
        return "triangle"
    return None


def _bbox_fill(frame_mask: np.ndarray) -> float:
    """Mask area over the area of the mask's bounding box."""
    rows = np.flatnonzero(frame_mask.any(axis=1))
    cols = np.flatnonzero(frame_mask.any(axis=0))
    box_area = (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1)
    return float(frame_mask.sum()) / float(box_area)


def _direction(mask: np.ndarray) -> Optional[str]:
    # A frame "has a mask" with at least one mask pixel, and every such frame's centroid enters
    # the fit: the 20-pixel floor is only for the shape, where tiny masks give meaningless fills.
    num_frames, height, width = mask.shape
    areas = mask.sum(axis=(1, 2))
    present = np.flatnonzero(areas > 0)
    if len(present) < MIN_FRAMES_WITH_MASK * num_frames or len(present) < 2:
        return None
    ys, xs = np.arange(height), np.arange(width)
    # Pixel centres sit at +0.5; the offset cancels in a displacement, so it is left out.
    centroid_x = (mask[present].sum(axis=1) * xs).sum(axis=1) / areas[present]
    centroid_y = (mask[present].sum(axis=2) * ys).sum(axis=1) / areas[present]
    span = num_frames - 1  # from the first frame of the clip to the last
    dx = np.polyfit(present, centroid_x, 1)[0] * span
    dy = np.polyfit(present, centroid_y, 1)[0] * span
    if abs(dx) >= abs(dy):
        moved, other, size, names = dx, dy, width, ("left", "right")
    else:
        moved, other, size, names = dy, dx, height, ("up", "down")
    if abs(moved) < MIN_TRAVEL * size or abs(moved) < MIN_AXIS_DOMINANCE * abs(other):
        return None
    return names[1] if moved > 0 else names[0]


def labels_from_prompt(text: str) -> dict:
    """The first colour, shape and direction word in a prompt (None where there is none)."""
    words = re.findall(r"[a-z]+", str(text).lower())
    vocabulary = {"color": COLOR_NAMES, "shape": SHAPES, "direction": DIRECTIONS}
    return {attribute: next((w for w in words if w in names), None) for attribute, names in vocabulary.items()}


def score_manifest(path) -> dict:
    """Score every clip listed in a sample manifest or a make-shapes metadata file (or their folder)."""
    manifest = _find_manifest(Path(path))
    entries = _read_entries(manifest)
    clips = []
    for video_path, expected, row in entries:
        if row.get("segments"):
            clips.extend(_score_long_entry(manifest.parent, video_path, row))
        else:
            clips.append(_score_entry(manifest.parent, video_path, expected))
    accuracy = {a: float(np.mean([c["predicted"][a] == c["expected"][a] for c in clips])) for a in ATTRIBUTES}
    accuracy["joint"] = float(np.mean([c["correct"] for c in clips]))
    return {"manifest": str(manifest), "num_clips": len(clips), "accuracy": accuracy, "clips": clips}


def _find_manifest(path: Path) -> Path:
    if path.is_dir():
        for name in ("manifest.jsonl", "metadata.jsonl"):
            if (path / name).is_file():
                return path / name
        raise ReelError(f"{path}: folder has neither manifest.jsonl nor metadata.jsonl")
    if not path.is_file():
        raise ReelError(f"{path}: manifest not found")
    return path


def _read_entries(manifest: Path) -> list[tuple[str, dict]]:
    entries = []
    for number, line in enumerate(manifest.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ReelError(f"{manifest}:{number}: not valid JSON ({e.msg})") from None
        if not isinstance(row, dict) or not row.get("path"):
            raise ReelError(f"{manifest}:{number}: line has no 'path'")
        entries.append((str(row["path"]), _expected_labels(row, f"{manifest}:{number}"), row))
    if not entries:
        raise ReelError(f"{manifest}: manifest lists no clips")
    return entries


def _expected_labels(row: dict, where: str) -> dict:
    """Explicit color/shape/direction keys win; missing ones are read from the prompt or caption."""
    text = row.get("prompt") or row.get("caption")
    has_explicit = any(row.get(a) for a in ATTRIBUTES)
    if not has_explicit and not text:
        raise ReelError(f"{where}: line has no color/shape/direction labels and no prompt or caption")
    expected = labels_from_prompt(text or "")
    expected.update({a: row[a] for a in ATTRIBUTES if row.get(a)})
    missing = [a for a in ATTRIBUTES if expected[a] is None]
    if missing:
        raise ReelError(f"{where}: no {', '.join(missing)} in the labels or the prompt '{text}'")
    return expected


def _score_entry(root: Path, video_path: str, expected: dict) -> dict:
    resolved = Path(video_path) if Path(video_path).is_absolute() else root / video_path
    result = {"path": video_path, "expected": expected}
    try:
        predicted = score_frames(read_video(resolved))
    except ReelError as e:
        result["error"] = str(e)
        predicted = {a: None for a in ATTRIBUTES}
    result["predicted"] = predicted
    result["correct"] = "error" not in result and all(predicted[a] == expected[a] for a in ATTRIBUTES)
    return result


def _score_long_entry(root: Path, video_path: str, row: dict) -> list[dict]:
    """A long video (a manifest row with "segments" and "chunk_frames") scored chunk by chunk, in the windows
    a clip of the training length covers in latent frames: frames 0 to chunk_frames - 1 (the lone first frame
    and its chunks), then chunk_frames - 1 frames at a time (the same latent chunks without a lone first
    frame), each against the prompt of the segment it lies in; a window that straddles a prompt switch is
    left out. Segments of chunk_frames, then chunk_frames - 1, frames are scored window for window."""
    resolved = Path(video_path) if Path(video_path).is_absolute() else root / video_path
    length = int(row.get("chunk_frames") or 0)
    if length < 1:
        raise ReelError(f"{video_path}: a long-video manifest row needs chunk_frames (frames per scored chunk)")
    try:
        frames = read_video(resolved)
    except ReelError as e:
        return [{"path": video_path, "error": str(e), "correct": False,
                 "expected": _expected_labels(row, video_path), "predicted": {a: None for a in ATTRIBUTES}}]
    bounds, start = [], 0
    for segment in row["segments"]:
        bounds.append((start, start + int(segment["frames"]), segment["prompt"]))
        start += int(segment["frames"])
    results = []
    later = max(1, length - 1)
    windows = [(0, length)] + [(a, a + later) for a in range(length, len(frames) - later + 1, later)]
    for first, last in windows:
        if last > len(frames):
            continue
        inside = [prompt for lo, hi, prompt in bounds if lo <= first and last <= hi]
        if not inside:
            continue
        expected = _expected_labels({"prompt": inside[0]}, f"{video_path} frames {first}-{last - 1}")
        predicted = score_frames(frames[first:last])
        results.append({"path": f"{video_path}#{first}-{last - 1}", "expected": expected, "predicted": predicted,
                        "segment": inside[0],
                        "correct": all(predicted[a] == expected[a] for a in ATTRIBUTES)})
    return results
