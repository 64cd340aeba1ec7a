"""An endless stream of (epoch, batch) that can restart exactly where it stopped.

The position is (epoch, batches already taken from that epoch). Resuming asks the batch sampler
for the epoch's order again (it is a function of seed and epoch) and skips the batches already
taken by their indices, so their clips are never read.

Bitwise resume needs every random choice a dataset makes to be restorable. With num_workers=0
clips are read in this process, whose RNG states the Trainer checkpoints. Worker processes start
afresh on resume, so a dataset read by workers must draw its randomness from its arguments (for
example np.random.default_rng([seed, epoch, index])), not from a generator that carries state.
"""
from __future__ import annotations

import itertools
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, default_collate

from reel.errors import ReelError


class ResumableLoader:
    def __init__(self, dataset, batch_sampler, collate_fn: Optional[Callable[[list], Any]] = None,
                 num_workers: int = 0, seed: int = 0, pin_memory: bool = False):
        self.dataset = dataset
        self.batch_sampler = batch_sampler
        self.collate_fn = collate_fn or default_collate
        self.num_workers = num_workers
        self.seed = seed
        self.pin_memory = pin_memory
        self.epoch = 0
        self.batch = 0  # batches of `epoch` already taken (empty ones included)
        self.empty_batches_skipped = 0
        self._batches: Optional[Iterator[Any]] = None
        self._yielded_this_epoch = 0
        self._started_at_zero = True

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batch": self.batch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])
        self._batches = None

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __iter__(self) -> "ResumableLoader":
        return self

    def __next__(self) -> tuple[int, Any]:
        while True:
            if self._batches is None:
                self._batches = self._open_epoch()
            batch = next(self._batches, _END)
            if batch is _END:
                self._finish_epoch()
                continue
            self.batch += 1
            if batch is None:  # every clip of the batch was unreadable
                self.empty_batches_skipped += 1
                continue
            self._yielded_this_epoch += 1
            return self.epoch, batch

    def _finish_epoch(self) -> None:
        if self.batch == 0:
            raise ReelError(f"the batch sampler gave no batches for epoch {self.epoch}: "
                            "the dataset is empty or smaller than one batch")
        if self._yielded_this_epoch == 0 and self._started_at_zero:
            raise ReelError(f"every batch of epoch {self.epoch} was empty: no clip of the dataset could be read")
        self.epoch += 1
        self.batch = 0
        self._batches = None

    def _open_epoch(self) -> Iterator[Any]:
        self.batch_sampler.set_epoch(self.epoch)
        self._started_at_zero = self.batch == 0
        self._yielded_this_epoch = 0
        remaining = itertools.islice(iter(self.batch_sampler), self.batch, None)
        if self.num_workers == 0:
            return (self.collate_fn([self.dataset[i] for i in indices]) for indices in remaining)
        # Worker seeds come from this generator, never from the training RNG stream.
        seed = int(np.random.SeedSequence([self.seed, self.epoch, self.batch]).generate_state(1)[0])
        loader = DataLoader(self.dataset, batch_sampler=list(remaining), collate_fn=self.collate_fn,
                            num_workers=self.num_workers, pin_memory=self.pin_memory,
                            generator=torch.Generator().manual_seed(seed))
        return iter(loader)


_END = object()


def batch_size_of(batch: Any) -> Optional[int]:
    """Leading size of the first tensor found in a (nested) batch."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.ndim else None
    if isinstance(batch, dict):
        batch = list(batch.values())
    if isinstance(batch, Sequence) and not isinstance(batch, (str, bytes)):
        for item in batch:
            size = batch_size_of(item)
            if size is not None:
                return size
    return None
