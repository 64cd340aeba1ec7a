"""Where a training run reports: run_dir/log.jsonl, the Tracker (wandb), a progress bar.

Only rank 0 writes. log.jsonl has one JSON object per logged step; a non-finite loss is written
as null, never as NaN, so any JSON reader can parse the file.
"""
from __future__ import annotations

import json
import logging
import math
import resource
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Optional

import torch

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".webm", ".mov", ".avi"}


class _ConsoleHandler(logging.Handler):
    """Messages printed above the progress bar rather than through it."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        tqdm.write(self.format(record), file=sys.stderr)


def console_logger(is_main: bool) -> logging.Logger:
    """The "reel.train" logger, printing to stderr on rank 0 unless the application set up logging."""
    logger = logging.getLogger("reel.train")
    if not logger.handlers and not logging.getLogger().handlers:
        handler = _ConsoleHandler()
        handler.setFormatter(logging.Formatter("[reel.train] %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    if not is_main:
        logger.setLevel(logging.ERROR)
    return logger


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def as_float(value: Any) -> float:
    return float(value.detach().float().mean()) if isinstance(value, torch.Tensor) else float(value)


def finite_or_none(value: Optional[float]) -> Optional[float]:
    return value if value is not None and math.isfinite(value) else None


class LogWindow:
    """Sums of what happened since the last logged step."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.steps = 0
        self.finite_steps = 0
        self.loss_sum = 0.0
        self.metric_sums: dict[str, float] = defaultdict(float)
        self.metric_counts: dict[str, int] = defaultdict(int)
        self.samples = 0
        self.tokens = 0
        self.seconds = 0.0

    def add_step(self, loss: Optional[float], metrics: dict[str, float], samples: int, tokens: int,
                 seconds: float) -> None:
        self.steps += 1
        self.samples += samples
        self.tokens += tokens
        self.seconds += seconds
        if loss is not None:
            self.finite_steps += 1
            self.loss_sum += loss
        for name, value in metrics.items():
            self.metric_sums[name] += value
            self.metric_counts[name] += 1

    def mean_loss(self) -> Optional[float]:
        return self.loss_sum / self.finite_steps if self.finite_steps else None

    def mean_metrics(self) -> dict[str, float]:
        return {k: self.metric_sums[k] / self.metric_counts[k] for k in self.metric_sums}


def _logged_step(line: str, default: int) -> int:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):  # a line cut short by the kill
        return default


class TrainingLog:
    def __init__(self, run_dir: Path, tracker, total_steps: int, start_step: int, progress: bool, is_main: bool):
        self.path = Path(run_dir) / "log.jsonl"
        self.tracker = tracker
        self.is_main = is_main
        self.bar = None
        if is_main and progress:
            from tqdm import tqdm

            self.bar = tqdm(total=total_steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True,
                            file=sys.stderr)

    def forget_after(self, step: int) -> None:
        """Drop lines a killed run logged past the checkpoint it is resumed from."""
        if not (self.is_main and self.path.is_file()):
            return
        kept = [line for line in self.path.read_text().splitlines() if _logged_step(line, default=step + 1) <= step]
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        tmp.replace(self.path)

    def advance(self, steps: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(steps)

    def write(self, record: dict[str, Any]) -> None:
        if not self.is_main:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        numbers = {f"train/{k}": v for k, v in record.items() if isinstance(v, (int, float)) and k != "step"}
        self.tracker.log(numbers, step=record["step"])
        if self.bar is not None:
            loss = record.get("loss")
            self.bar.set_postfix(loss="nan" if loss is None else f"{loss:.4g}", lr=f"{record['lr']:.3g}",
                                 refresh=False)

    def media(self, paths: Iterable[str | Path], step: int) -> None:
        if not self.is_main:
            return
        for path in map(Path, paths):
            key = f"preview/{path.stem}"
            if path.suffix.lower() in IMAGE_SUFFIXES:
                self.tracker.log_image(key, path, step=step)
            elif path.suffix.lower() in VIDEO_SUFFIXES:
                self.tracker.log_video(key, path, step=step)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.is_main:
            self.tracker.finish()
