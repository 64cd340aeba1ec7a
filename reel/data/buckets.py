"""Bucketing clips by (height, width, num_frames) so a batch never mixes shapes."""
from __future__ import annotations

import math
from typing import Iterator, NamedTuple, Optional, Sequence

import numpy as np
from torch.utils.data import Sampler

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


def assign_bucket(height: int, width: int, available_frames: int, buckets: Sequence[Bucket]) -> Optional[Bucket]:
    """The bucket for a clip of height x width that can supply `available_frames` output frames.

    Among the buckets the clip is long enough for, the closest aspect ratio (in log space, so 2:1
    and 1:2 are equally far from 1:1) wins; ties go to the bucket with more frames, then to the
    one listed first. None when the clip is too short for every bucket.
    """
    clip_aspect = math.log(height / width)
    fitting = [(i, b) for i, b in enumerate(buckets) if b.num_frames <= available_frames]
    if not fitting:
        return None

    def preference(item: tuple[int, Bucket]) -> tuple[float, int, int]:
        order, b = item
        aspect_gap = round(abs(math.log(b.height / b.width) - clip_aspect), 9)
        return (aspect_gap, -b.num_frames, order)

    return min(fitting, key=preference)[1]


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of dataset indices that all share one bucket shape.

    Each bucket uses its own batch size (or `default_batch_size`). Indices are shuffled within a
    bucket and batches are shuffled across buckets, deterministically from (seed, epoch). Batches
    are then dealt round-robin to `num_replicas` data-parallel ranks, each of which gets the same
    number of batches: with drop_last the leftover batches are dropped, otherwise the first
    batches are repeated to fill the last round. Sequence-parallel ranks of one group pass the same
    `rank`, so they see the same samples.
    """

    def __init__(self, bucket_of: Sequence[Bucket], default_batch_size: int, shuffle: bool = True,
                 drop_last: bool = False, seed: int = 0, num_replicas: int = 1, rank: int = 0):
        if default_batch_size <= 0:
            raise ReelError(f"batch size {default_batch_size} must be positive")
        if not 0 <= rank < num_replicas:
            raise ReelError(f"rank {rank} must be in [0, num_replicas={num_replicas})")
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self.indices_by_shape: dict[tuple[int, int, int], list[int]] = {}
        self.batch_size_by_shape: dict[tuple[int, int, int], int] = {}
        for index, bucket in enumerate(bucket_of):
            self.indices_by_shape.setdefault(bucket.shape, []).append(index)
            self.batch_size_by_shape.setdefault(bucket.shape, bucket.batch_size or default_batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _num_batches_in(self, shape: tuple[int, int, int]) -> int:
        size, batch = len(self.indices_by_shape[shape]), self.batch_size_by_shape[shape]
        return size // batch if self.drop_last else -(-size // batch)

    def _batches_per_rank(self, total_batches: int) -> int:
        if self.drop_last:
            return total_batches // self.num_replicas
        return -(-total_batches // self.num_replicas)

    def _all_batches(self) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        batches = []
        for shape in self.indices_by_shape:
            indices = list(self.indices_by_shape[shape])
            if self.shuffle:
                indices = [indices[k] for k in rng.permutation(len(indices))]
            batch = self.batch_size_by_shape[shape]
            batches += [indices[k:k + batch] for k in range(0, len(indices), batch)]
            if self.drop_last and batches and len(batches[-1]) < batch:
                batches.pop()
        if self.shuffle:
            batches = [batches[k] for k in rng.permutation(len(batches))]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._all_batches()
        if not batches:
            return iter(())
        needed = self._batches_per_rank(len(batches)) * self.num_replicas
        dealt = [batches[k % len(batches)] for k in range(needed)]
        return iter(dealt[self.rank::self.num_replicas])

    def __len__(self) -> int:
        total = sum(self._num_batches_in(shape) for shape in self.indices_by_shape)
        return self._batches_per_rank(total)
