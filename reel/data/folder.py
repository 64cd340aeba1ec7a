"""Clips from a folder of videos (listed by a metadata file), read with decord.

Each clip is assigned to a bucket (height, width, num_frames) once, at construction; an item is
that many frames at the clip's stride, resized to cover the bucket and cropped to it, in [-1, 1].
A clip that cannot be read gives None, which `collate_skip_bad` drops and `BadClipCounter` tallies.
"""
from __future__ import annotations

import warnings
from typing import Any, NamedTuple, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, default_collate

from reel.data.buckets import Bucket, assign_bucket
from reel.data.scan import probe_clip, short_reason
from reel.data.video_io import decode_frames
from reel.errors import ReelError

CLIP_INFO = ("num_frames", "fps", "height", "width")


class BadClipWarning(UserWarning):
    """A clip was skipped because it could not be read."""


class SkippedClip(NamedTuple):
    """Stands in for an unreadable clip inside a batch, so the collate can report its path."""
    path: str
    reason: str


def stride_for(src_fps: Optional[float], frame_stride: int, target_fps: Optional[float]) -> int:
    """Source frames between output frames: from target_fps when both rates are known."""
    if target_fps and src_fps:
        return max(1, round(src_fps / target_fps))
    return frame_stride


def frames_needed(num_frames: int, stride: int) -> int:
    return (num_frames - 1) * stride + 1


def resize_to_cover(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(T, C, h, w) scaled so both sides cover height x width, keeping the aspect ratio."""
    h, w = frames.shape[-2:]
    scale = max(height / h, width / w)
    new_h, new_w = max(height, round(h * scale)), max(width, round(w * scale))
    if (new_h, new_w) == (h, w):
        return frames
    return F.interpolate(frames, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)


class VideoFolderDataset(Dataset):
    """Bucketed clips from metadata rows (dicts with path, caption, and optionally the clip's
    num_frames, fps, height, width; missing ones are probed with decord)."""

    def __init__(self, rows: Sequence[dict], height: int, width: int, num_frames: int,
                 frame_stride: int = 1, target_fps: Optional[float] = None, start: str = "random",
                 crop: str = "random", buckets: Optional[Sequence[Bucket]] = None, seed: int = 0):
        if start not in ("random", "center"):
            raise ReelError(f"start={start}: must be random or center")
        if crop not in ("random", "center"):
            raise ReelError(f"crop={crop}: must be random or center")
        if frame_stride < 1:
            raise ReelError(f"frame_stride={frame_stride}: must be positive")
        self.frame_stride = frame_stride
        self.target_fps = target_fps
        self.start = start
        self.crop = crop
        self.seed = seed
        self.epoch = 0
        self.buckets = list(buckets) if buckets else [Bucket(height, width, num_frames)]
        self.rows: list[dict] = []
        self.bucket_of: list[Bucket] = []
        self.strides: list[int] = []
        self.excluded: list[str] = []  # too short for every bucket
        self.unreadable: list[tuple[str, str]] = []  # (path, reason) when probed at construction
        self.bad_clips: list[tuple[str, str]] = []  # (path, reason) met by __getitem__ in this process
        for row in rows:
            self._add(row)

    @property
    def num_too_short(self) -> int:
        return len(self.excluded)

    def _with_clip_info(self, row: dict) -> Optional[dict]:
        if all(row.get(key) for key in CLIP_INFO):
            return row
        try:
            return {**row, **probe_clip(row["path"])}
        except Exception as error:  # decord raises several types for corrupt files
            self.unreadable.append((row["path"], short_reason(error)))
            warnings.warn(f"skipping unreadable clip {row['path']}: {short_reason(error)}", BadClipWarning)
            return None

    def _add(self, row: dict) -> None:
        row = self._with_clip_info(row)
        if row is None:
            return
        stride = stride_for(row["fps"], self.frame_stride, self.target_fps)
        available = (row["num_frames"] - 1) // stride + 1
        bucket = assign_bucket(row["height"], row["width"], available, self.buckets)
        if bucket is None:
            self.excluded.append(row["path"])
            return
        self.rows.append(row)
        self.bucket_of.append(bucket)
        self.strides.append(stride)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.rows)

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index])

    def _frame_indices(self, num_source: int, bucket: Bucket, stride: int, rng: np.random.Generator) -> list[int]:
        last_start = num_source - frames_needed(bucket.num_frames, stride)
        first = int(rng.integers(0, last_start + 1)) if self.start == "random" else last_start // 2
        return list(range(first, first + frames_needed(bucket.num_frames, stride), stride))

    def _read_frames(self, path: str, bucket: Bucket, stride: int, rng: np.random.Generator) -> np.ndarray:
        """(T, H, W, 3) uint8 frames; raises ValueError when the clip cannot supply them."""
        import decord

        reader = decord.VideoReader(path, num_threads=1)
        num_source = len(reader)
        if num_source < frames_needed(bucket.num_frames, stride):
            raise ValueError(f"has {num_source} frames, needs {frames_needed(bucket.num_frames, stride)} "
                             f"for {bucket.num_frames} at stride {stride}")
        indices = self._frame_indices(num_source, bucket, stride, rng)
        frames = decode_frames(reader, indices)
        # decord can return fewer frames than asked for from a truncated file
        if frames.shape[0] != len(indices):
            raise ValueError(f"decoded {frames.shape[0]} of {len(indices)} frames")
        return frames

    def _crop(self, frames: torch.Tensor, height: int, width: int, rng: np.random.Generator) -> torch.Tensor:
        h, w = frames.shape[-2:]
        if self.crop == "random":
            top, left = int(rng.integers(0, h - height + 1)), int(rng.integers(0, w - width + 1))
        else:
            top, left = (h - height) // 2, (w - width) // 2
        return frames[..., top:top + height, left:left + width]

    def _to_clip(self, frames: np.ndarray, bucket: Bucket, rng: np.random.Generator) -> torch.Tensor:
        video = torch.from_numpy(frames).permute(0, 3, 1, 2).float()  # (T, 3, h, w)
        video = resize_to_cover(video, bucket.height, bucket.width)
        video = self._crop(video, bucket.height, bucket.width, rng)
        video = video.clamp(0, 255) / 127.5 - 1
        return video.permute(1, 0, 2, 3).contiguous()  # (3, T, H, W)

    def load(self, index: int) -> dict | SkippedClip:
        """The item, or a SkippedClip naming the path and why it could not be read."""
        row, bucket = self.rows[index], self.bucket_of[index]
        rng = self._rng(index)
        try:
            frames = self._read_frames(row["path"], bucket, self.strides[index], rng)
        except Exception as error:  # decord raises several types for corrupt files
            skipped = SkippedClip(row["path"], short_reason(error))
            self.bad_clips.append(tuple(skipped))
            warnings.warn(f"skipping unreadable clip {skipped.path}: {skipped.reason}", BadClipWarning)
            return skipped
        return {"video": self._to_clip(frames, bucket, rng), "caption": row["caption"],
                "path": row["path"], "index": index, "bucket": str(bucket)}

    def __getitem__(self, index: int) -> Optional[dict]:
        item = self.load(index)
        return None if isinstance(item, SkippedClip) else item

    def __getitems__(self, indices: Sequence[int]) -> list[dict | SkippedClip]:
        # DataLoader fetches whole batches through this, so skipped paths reach the collate
        return [self.load(i) for i in indices]


def collate_skip_bad(batch: Sequence[Any]) -> Optional[dict]:
    """Collate the readable items; None when none was. Adds num_skipped and skipped_paths."""
    good = [item for item in batch if isinstance(item, dict)]
    skipped_paths = [item.path for item in batch if isinstance(item, SkippedClip)]
    if not good:
        return None
    collated = default_collate(good)
    collated["num_skipped"] = len(batch) - len(good)
    collated["skipped_paths"] = skipped_paths
    return collated


class BadClipCounter:
    """Tallies unreadable clips and stops the run when too large a fraction of them fail."""

    MAX_PATHS_KEPT = 100

    def __init__(self, max_bad_fraction: float, min_seen: int = 20):
        self.max_bad_fraction = max_bad_fraction
        self.min_seen = min_seen
        self.seen = 0
        self.skipped = 0
        self.paths: list[str] = []

    def update(self, num_ok: int, num_bad: int, paths: Sequence[str] = ()) -> None:
        self.seen += num_ok + num_bad
        self.skipped += num_bad
        self.paths += list(paths)[: self.MAX_PATHS_KEPT - len(self.paths)]
        if self.seen >= self.min_seen:
            self._check()

    def finish(self) -> None:
        if self.seen:
            self._check()

    def _check(self) -> None:
        if self.skipped / self.seen <= self.max_bad_fraction:
            return
        first = f"; first: {self.paths[0]}" if self.paths else ""
        raise ReelError(f"too many unreadable clips: {self.skipped} of {self.seen} "
                        f"({100 * self.skipped / self.seen:.1f}%) exceed "
                        f"data.max_bad_fraction={self.max_bad_fraction}{first}")

    def summary(self) -> dict:
        return {"seen": self.seen, "skipped": self.skipped, "paths": list(self.paths)}
