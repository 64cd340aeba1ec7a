"""Bucketing clips by (height, width, num_frames) so a batch never mixes shapes."""
from __future__ import annotations

from typing import NamedTuple, Optional

from reel.errors import ReelError


class Bucket(NamedTuple):
    height: int
    width: int
    num_frames: int
    batch_size: Optional[int] = None  # None: the run's train.batch_size

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, self.num_frames)

    def __str__(self) -> str:
        return f"{self.height}x{self.width}x{self.num_frames}"


def parse_bucket(text: str, key: str = "data.buckets") -> Bucket:
    """'64x112x17' -> Bucket(64, 112, 17); '64x112x17:8' also sets the bucket's batch size."""
    size, _, batch = str(text).lower().partition(":")
    try:
        h, w, t = (int(p) for p in size.split("x"))
        b = int(batch) if batch else None
    except ValueError:
        raise ReelError(f"{key}: bucket '{text}' must be HEIGHTxWIDTHxFRAMES or HEIGHTxWIDTHxFRAMES:BATCH, "
                        "e.g. 64x64x17:4") from None
    if min(h, w, t) <= 0 or (b is not None and b <= 0):
        raise ReelError(f"{key}: bucket '{text}' must have positive sizes")
    return Bucket(h, w, t, b)
