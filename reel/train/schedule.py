"""Learning-rate schedules as multipliers of train.lr, indexed by optimizer updates done so far."""
from __future__ import annotations

import math
from typing import Callable


def warmup_then_decay(updates_done: int, total_steps: int, warmup_steps: int, kind: str = "cosine",
                      min_lr_ratio: float = 0.1) -> float:
    """Multiplier for the update that follows `updates_done` earlier updates.

    Linear warmup from lr/warmup_steps (the first update already moves the weights) to lr at
    update warmup_steps, then cosine decay reaching min_lr_ratio*lr exactly at the last step,
    or constant.
    """
    if updates_done < warmup_steps:
        return (updates_done + 1) / warmup_steps
    if kind == "constant":
        return 1.0
    decay_span = max(1, total_steps - warmup_steps - 1)
    progress = min(1.0, (updates_done - warmup_steps) / decay_span)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def lr_multiplier(train) -> Callable[[int], float]:
    """The schedule of a TrainConfig, for torch's LambdaLR.

    A plain function on purpose: LambdaLR checkpoints the attributes of callable objects, which
    would pin a resumed run to the old train.steps; a function follows the current config.
    """
    steps, warmup, kind, floor = int(train.steps), int(train.warmup_steps), str(train.lr_schedule), float(
        train.min_lr_ratio)

    def multiplier(updates_done: int) -> float:
        return warmup_then_decay(updates_done, steps, warmup, kind, floor)

    return multiplier
