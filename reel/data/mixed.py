"""Several datasets drawn in fixed proportions, e.g. the shapes world plus a few real clips."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from torch.utils.data import Dataset

from reel.data.buckets import Bucket

_KEPT = ("video", "caption")  # the keys every source has, so batches collate across sources


class MixedDataset(Dataset):
    """Item i comes from source k with probability weights[k] (a fixed, seeded draw per index),
    and within it from index i mod len(source)."""

    def __init__(self, sources: Sequence[Dataset], names: Sequence[str], weights: Sequence[float],
                 length: int, seed: int = 0):
        probabilities = np.asarray(weights, dtype=np.float64) / float(np.sum(weights))
        self.sources, self.names = list(sources), list(names)
        self.source_of = np.random.default_rng([seed, 7]).choice(len(sources), size=length, p=probabilities)
        self.bucket_of: list[Bucket] = [self.sources[k].bucket_of[i % len(self.sources[k])]
                                        for i, k in enumerate(self.source_of)]

    def __len__(self) -> int:
        return len(self.source_of)

    def set_epoch(self, epoch: int) -> None:
        for source in self.sources:
            if hasattr(source, "set_epoch"):
                source.set_epoch(epoch)

    def __getitem__(self, index: int) -> Optional[dict]:
        k = int(self.source_of[index])
        item = self.sources[k][index % len(self.sources[k])]
        if item is None:  # an unreadable clip: the collate counts it
            return None
        return {**{key: item[key] for key in _KEPT}, "index": index, "source": self.names[k]}
