"""The shapes world: procedural captioned clips whose labels can be read back exactly.

The rules are specified in WORLD.md; reel.data.oracle scores clips against them.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from tqdm import tqdm

from reel.data.video_io import to_tensor, write_video
from reel.errors import ReelError

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40),
    "green": (40, 200, 70),
    "blue": (40, 90, 240),
    "yellow": (235, 215, 40),
    "cyan": (40, 210, 220),
    "magenta": (220, 50, 210),
}
SHAPES = ("circle", "square", "triangle")
DIRECTIONS = ("left", "right", "up", "down")

# Every template must read well for all four directions ("moves to the up" does not).
TEMPLATES = (
    "a {color} {shape} moving {direction}",
    "a {color} {shape} going {direction}",
    "{color} {shape}, moving {direction}",
    "a {color} {shape} that moves {direction}",
)

SIZE_FRACTION = 0.28  # s = round(0.28 * min(H, W) * u)
SIZE_JITTER = 0.1  # u ~ U[1 - 0.1, 1 + 0.1]
TRAVEL_FRACTION = 0.4  # the centre moves 0.4 * W (or H) from the first frame to the last
BASE_RANGE = (10, 60)  # background base colour, per channel
GRADIENT_MAX = 20  # background gradient amplitude, per channel
SUPERSAMPLING = 4  # 4 x 4 samples per pixel for anti-aliased edges
MIN_SIDE = 8


@dataclass
class ShapesClip:
    frames: np.ndarray  # uint8 (T, H, W, 3)
    caption: str
    labels: dict  # color, shape, direction, seed, index (and objects, when there are several)


@dataclass
class ObjectLayout:
    """Where one object is in every frame: its box centre per frame and its side."""

    color: str
    shape: str
    direction: str
    size: int
    centers: np.ndarray  # float (T, 2): x, y of the centre of the s x s box, in pixels


def caption(color: str, shape: str, direction: str, template: int = 0) -> str:
    return TEMPLATES[template % len(TEMPLATES)].format(color=color, shape=shape, direction=direction)


def all_label_combos() -> list[dict]:
    """The 72 colour x shape x direction combinations, colour-major."""
    return [
        {"color": color, "shape": shape, "direction": direction}
        for color in COLORS
        for shape in SHAPES
        for direction in DIRECTIONS
    ]


def render_clip(
    seed: int,
    index: int,
    height: int,
    width: int,
    num_frames: int,
    num_objects: int = 1,
    labels: Optional[dict] = None,
    turn_prob: float = 0.0,
    turn_every: int = 4,
) -> ShapesClip:
    """Clip `index` of the world `seed`; `labels` may force color, shape and/or direction. With turn_prob > 0
    (training data for prompt switches, outside the scored world) the labelled object may turn: see _turn."""
    template, background, objects = _sample_clip(seed, index, height, width, num_frames, num_objects, labels)
    turn = None
    if turn_prob > 0:
        turn, objects[0] = _turn(seed, index, objects[0], height, width, num_frames, turn_prob, turn_every)
    frames = np.repeat(background[None], num_frames, axis=0)
    # Extra objects first, so the labelled one is drawn on top and never hidden.
    for obj in reversed(objects):
        _paint(frames, obj)
    frames = np.round(frames).astype(np.uint8)

    main = objects[0]
    clip_labels = {"color": main.color, "shape": main.shape, "direction": main.direction,
                   "seed": int(seed), "index": int(index)}
    if turn_prob > 0:  # in every clip of a turning world, so batches collate: 0 = no turn
        clip_labels["turn_frame"] = turn["frame"] if turn else 0
        clip_labels["direction_before"] = turn["before"] if turn else main.direction
    if num_objects > 1:
        clip_labels["objects"] = [{"color": o.color, "shape": o.shape, "direction": o.direction} for o in objects]
    return ShapesClip(frames=frames, caption=caption(main.color, main.shape, main.direction, template),
                      labels=clip_labels)


def layout_clip(seed: int, index: int, height: int, width: int, num_frames: int,
                num_objects: int = 1, labels: Optional[dict] = None) -> list[ObjectLayout]:
    """The objects render_clip draws for the same arguments (the first is the labelled one)."""
    return _sample_clip(seed, index, height, width, num_frames, num_objects, labels)[2]


def _sample_clip(seed, index, height, width, num_frames, num_objects, labels):
    """Every random choice of a clip, drawn in a fixed order from a generator seeded by (seed, index)."""
    _check_canvas(height, width, num_frames, num_objects)
    rng = np.random.default_rng([int(seed), int(index)])
    template = int(rng.integers(len(TEMPLATES)))
    background = _background(rng, height, width)
    objects = _layout_objects(rng, height, width, num_frames, num_objects, labels)
    return template, background, objects


def _check_canvas(height: int, width: int, num_frames: int, num_objects: int) -> None:
    if height < MIN_SIDE or width < MIN_SIDE:
        raise ReelError(f"shapes world: canvas {height}x{width} is too small (at least {MIN_SIDE}x{MIN_SIDE})")
    if num_frames < 1:
        raise ReelError(f"shapes world: num_frames must be at least 1, got {num_frames}")
    if not 1 <= num_objects <= len(COLORS):
        raise ReelError(f"shapes world: num_objects must be 1 to {len(COLORS)} (one colour each), got {num_objects}")


def _check_labels(labels: dict) -> None:
    vocabulary = {"color": tuple(COLORS), "shape": SHAPES, "direction": DIRECTIONS}
    for key, value in labels.items():
        if key in vocabulary and value not in vocabulary[key]:
            raise ReelError(f"shapes world: {key} '{value}' is not one of {', '.join(vocabulary[key])}")


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Float (H, W, 3): base colour plus a linear gradient, max(R, G, B) <= 60 + 20."""
    base = rng.integers(BASE_RANGE[0], BASE_RANGE[1] + 1, size=3).astype(np.float64)
    amplitude = rng.uniform(0.0, GRADIENT_MAX, size=3)
    angle = rng.uniform(0.0, 2.0 * math.pi)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64) + 0.5
    projection = xs * math.cos(angle) + ys * math.sin(angle)
    span = projection.max() - projection.min()
    ramp = (projection - projection.min()) / max(span, 1e-9)  # 0 .. 1 across the canvas
    return base + ramp[..., None] * amplitude


def _layout_objects(rng: np.random.Generator, height: int, width: int, num_frames: int,
                    num_objects: int, labels: Optional[dict]) -> list[ObjectLayout]:
    forced = dict(labels or {})
    _check_labels(forced)
    used_colors: list[str] = []
    objects = []
    for k in range(num_objects):
        # Draw every label even when forced, so forcing one label never changes the rest of the clip.
        free_colors = [c for c in COLORS if c not in used_colors]
        color = free_colors[int(rng.integers(len(free_colors)))]
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        direction = DIRECTIONS[int(rng.integers(len(DIRECTIONS)))]
        if k == 0:
            color = forced.get("color", color)
            shape = forced.get("shape", shape)
            direction = forced.get("direction", direction)
        used_colors.append(color)
        size = int(round(SIZE_FRACTION * min(height, width) * rng.uniform(1 - SIZE_JITTER, 1 + SIZE_JITTER)))
        centers = _trajectory(rng, height, width, num_frames, size, direction)
        objects.append(ObjectLayout(color, shape, direction, size, centers))
    return objects


def _trajectory(rng: np.random.Generator, height: int, width: int, num_frames: int,
                size: int, direction: str) -> np.ndarray:
    """Constant-velocity centres (T, 2) keeping the whole s x s box inside the canvas."""
    horizontal = direction in ("left", "right")
    moving_extent, still_extent = (width, height) if horizontal else (height, width)
    travel = TRAVEL_FRACTION * moving_extent
    half = size / 2
    sign = 1.0 if direction in ("right", "down") else -1.0
    # The start is sampled so that the end of the path is inside the canvas too.
    low, high = (half, moving_extent - half - travel) if sign > 0 else (half + travel, moving_extent - half)
    start = rng.uniform(low, high)
    still = rng.uniform(half, still_extent - half)
    progress = np.arange(num_frames) / max(num_frames - 1, 1)
    moving = start + sign * travel * progress
    still = np.full(num_frames, still)
    xs, ys = (moving, still) if horizontal else (still, moving)
    return np.stack([xs, ys], axis=1)


TURN_STREAM = 7919  # turns draw from their own generator, so a clip that does not turn is the world's clip


def _turn(seed: int, index: int, obj: ObjectLayout, height: int, width: int, num_frames: int,
          turn_prob: float, turn_every: int) -> tuple[Optional[dict], ObjectLayout]:
    """With probability turn_prob, the object moves in another direction (uniform over the three) up to frame
    k (a multiple of turn_every, with at least turn_every frames on each side) and in its labelled direction
    from k on, at the world's speed, the whole path inside the canvas. Returns ({frame, before} or None,
    the object)."""
    if num_frames - 1 < 2 * turn_every:
        raise ReelError(f"shapes world: turns need num_frames - 1 >= 2 * turn_every, got {num_frames} frames and "
                        f"turn_every={turn_every}")
    rng = np.random.default_rng([int(seed), int(index), TURN_STREAM])
    if rng.random() >= turn_prob:
        return None, obj
    frame = turn_every * int(rng.integers(1, (num_frames - 1 - turn_every) // turn_every + 1))
    before = [d for d in DIRECTIONS if d != obj.direction][int(rng.integers(3))]
    steps = np.arange(num_frames, dtype=np.float64)
    offsets = np.zeros((num_frames, 2))
    for direction, moving in ((before, np.minimum(steps, frame)), (obj.direction, np.maximum(steps - frame, 0))):
        axis = 0 if direction in ("left", "right") else 1
        speed = TRAVEL_FRACTION * (width, height)[axis] / max(num_frames - 1, 1)
        offsets[:, axis] += (1.0 if direction in ("right", "down") else -1.0) * speed * moving
    half = obj.size / 2
    start = [rng.uniform(half - offsets[:, a].min(), extent - half - offsets[:, a].max())
             for a, extent in enumerate((width, height))]
    return {"frame": frame, "before": before}, ObjectLayout(obj.color, obj.shape, obj.direction, obj.size,
                                                            np.asarray(start)[None, :] + offsets)


def context_latent_frames(turn_frame: int, temporal_factor: int) -> int:
    """Frames 0..turn_frame of a turning clip are context: 1 + turn_frame / temporal_factor latent frames (0 when
    the clip does not turn)."""
    return 1 + turn_frame // temporal_factor if turn_frame else 0


def _paint(frames: np.ndarray, obj: ObjectLayout) -> None:
    """Alpha-blend the object's solid colour into float frames (T, H, W, 3), in place."""
    color = np.asarray(COLORS[obj.color], dtype=np.float64)
    height, width = frames.shape[1:3]
    for t, (cx, cy) in enumerate(obj.centers):
        (y0, y1, x0, x1), coverage = _coverage(obj.shape, obj.size, cx, cy, height, width)
        window = frames[t, y0:y1, x0:x1]
        window += coverage[..., None] * (color - window)


def _coverage(shape: str, size: int, cx: float, cy: float, height: int, width: int):
    """Fraction of each pixel inside the shape, on the pixel window around its box."""
    half = size / 2
    x0, x1 = max(math.floor(cx - half), 0), min(math.ceil(cx + half), width)
    y0, y1 = max(math.floor(cy - half), 0), min(math.ceil(cy + half), height)
    n = SUPERSAMPLING
    # Pixel (i, j) spans [j, j + 1) x [i, i + 1); samples sit at the centres of an n x n grid in it.
    dx = x0 + (np.arange((x1 - x0) * n) + 0.5) / n - cx
    dy = y0 + (np.arange((y1 - y0) * n) + 0.5) / n - cy
    inside = _inside(shape, half, dx[None, :], dy[:, None])
    coverage = inside.reshape(y1 - y0, n, x1 - x0, n).mean(axis=(1, 3))
    return (y0, y1, x0, x1), coverage


def _inside(shape: str, half: float, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Whether offsets (dx, dy) from the centre of the s x s box fall inside the shape."""
    if shape == "circle":
        return dx * dx + dy * dy <= half * half
    if shape == "square":
        return (np.abs(dx) <= half) & (np.abs(dy) <= half)
    if shape == "triangle":
        # Apex at (0, -half), base from (-half, half) to (half, half): the half-width grows by 1/2 per row.
        return (dy <= half) & (np.abs(dx) <= (dy + half) / 2)
    raise ReelError(f"shapes world: shape '{shape}' is not one of {', '.join(SHAPES)}")


class ShapesDataset(torch.utils.data.Dataset):
    """An epoch of `num_clips` clips rendered on the fly; item i is always the same clip."""

    def __init__(self, seed: int, num_clips: int, height: int, width: int, num_frames: int,
                 num_objects: int = 1, turn_prob: float = 0.0, turn_every: int = 4):
        _check_canvas(height, width, num_frames, num_objects)
        if num_clips < 1:
            raise ReelError(f"data.shapes.num_clips must be at least 1, got {num_clips}")
        self.seed = int(seed)
        self.num_clips = int(num_clips)
        self.height, self.width, self.num_frames = int(height), int(width), int(num_frames)
        self.num_objects = int(num_objects)
        self.turn_prob, self.turn_every = float(turn_prob), int(turn_every)

    @classmethod
    def from_config(cls, data_cfg) -> "ShapesDataset":
        shapes = data_cfg.shapes
        return cls(seed=shapes.seed, num_clips=shapes.num_clips, height=data_cfg.height,
                   width=data_cfg.width, num_frames=data_cfg.num_frames, num_objects=shapes.num_objects,
                   turn_prob=shapes.turn_prob, turn_every=shapes.turn_every)

    def __len__(self) -> int:
        return self.num_clips

    def __getitem__(self, i: int) -> dict:
        if not -self.num_clips <= i < self.num_clips:
            raise IndexError(f"clip {i} out of range for {self.num_clips} clips")
        i = i % self.num_clips
        clip = render_clip(self.seed, i, self.height, self.width, self.num_frames, self.num_objects,
                           turn_prob=self.turn_prob, turn_every=self.turn_every)
        return {"video": to_tensor(clip.frames), "caption": clip.caption, "labels": clip.labels, "index": i}


def make_shapes(out_dir, num_clips: int, height: int, width: int, num_frames: int, seed: int = 0,
                fps: float = 8.0, progress: bool = True, one_per_combo: bool = False) -> Path:
    """Write clips/NNNNNN.mp4 (each with its caption in NNNNNN.txt, which `reel data scan` reads)
    and metadata.jsonl under out_dir; returns the metadata file's path."""
    if num_clips < 1:
        raise ReelError(f"make-shapes: num_clips must be at least 1, got {num_clips}")
    out_dir = Path(out_dir)
    combos = all_label_combos()
    rows = []
    for index in tqdm(range(num_clips), desc="shapes", unit="clip", disable=not progress):
        forced = combos[index % len(combos)] if one_per_combo else None
        clip = render_clip(seed, index, height, width, num_frames, labels=forced)
        relative = Path("clips") / f"{index:06d}.mp4"
        write_video(out_dir / relative, clip.frames, fps)
        _write_text_atomically((out_dir / relative).with_suffix(".txt"), clip.caption + "\n")
        rows.append({"path": relative.as_posix(), "caption": clip.caption, "color": clip.labels["color"],
                     "shape": clip.labels["shape"], "direction": clip.labels["direction"],
                     "num_frames": num_frames, "fps": float(fps), "height": height, "width": width,
                     "seed": int(seed), "index": index})
    metadata = out_dir / "metadata.jsonl"
    _write_text_atomically(metadata, "".join(json.dumps(row) + "\n" for row in rows))
    return metadata


def _write_text_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
