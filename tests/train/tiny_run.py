"""A tiny deterministic training run, in this process or as a script (also under torchrun).

    python tests/train/tiny_run.py run_dir=DIR train.steps=12 [key=value ...] [--sleep S]
        [--nan-steps 4,5] [--inf-grad-steps 6] [--dropout P] [--samples N]

Keys are config keys (train.*, seed, distributed.*); the run never touches wandb.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
import torch
from omegaconf import OmegaConf
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from reel.config.schema import ReelConfig  # noqa: E402
from reel.errors import ReelError  # noqa: E402
from reel.train import ResumableLoader, Trainer, seed_everything  # noqa: E402

IN_FEATURES, OUT_FEATURES = 8, 4


class TinyDataset(torch.utils.data.Dataset):
    def __init__(self, num_samples: int = 64, seed: int = 123):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(num_samples, IN_FEATURES, generator=g)
        self.y = torch.tanh(self.x @ torch.randn(IN_FEATURES, OUT_FEATURES, generator=g))
        self.reads: list[int] = []

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> dict:
        self.reads.append(index)
        return {"x": self.x[index], "y": self.y[index]}


class GlobalBatchSampler:
    """Shuffled global batches of batch_size * world; each rank takes its slice.

    So one process with batch 4 sees exactly what two processes with batch 2 see together.
    """

    def __init__(self, num_samples: int, batch_size: int, seed: int = 0, rank: int = 0, world: int = 1):
        self.num_samples, self.batch_size, self.seed, self.rank, self.world = num_samples, batch_size, seed, rank, world
        self.epoch = 0
        self.epochs_set: list[int] = []

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.epochs_set.append(epoch)

    def __len__(self) -> int:
        return self.num_samples // (self.batch_size * self.world)

    def __iter__(self):
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.num_samples).tolist()
        global_batch = self.batch_size * self.world
        for k in range(len(self)):
            start = k * global_batch + self.rank * self.batch_size
            yield order[start:start + self.batch_size]


class TinyNet(nn.Module):
    def __init__(self, dropout: float = 0.1, hidden: int = 32):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(IN_FEATURES, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, OUT_FEATURES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def make_objective(nan_steps: Iterable[int] = (), inf_grad_steps: Iterable[int] = (), sleep: float = 0.0,
                   nan_calls: Iterable[int] = ()):
    """MSE; NaN loss at `nan_steps` (or at the n-th micro batch in `nan_calls`), a finite loss with an
    infinite gradient at `inf_grad_steps`."""
    nan_steps, inf_grad_steps, nan_calls = set(nan_steps), set(inf_grad_steps), set(nan_calls)
    calls = [0]

    def objective(model, batch, step):
        calls[0] += 1
        if sleep:
            time.sleep(sleep)
        out = model(batch["x"])
        loss = ((out.float() - batch["y"]) ** 2).mean()
        if step in nan_steps or calls[0] in nan_calls:
            loss = loss * float("nan")
        if step in inf_grad_steps:
            total = out.float().sum()
            loss = loss + (total - total.detach()).sqrt()  # value 0, gradient infinite
        return loss, {"mse": loss.detach(), "tokens": batch["x"].shape[0] * IN_FEATURES}

    return objective


def tiny_config(run_dir, **overrides):
    """A validated-shape config for tiny runs: fp32, no wandb, no progress bar."""
    cfg = OmegaConf.structured(ReelConfig)
    base = {"train.run_dir": str(run_dir), "train.steps": 12, "train.batch_size": 4, "train.lr": 1e-2,
            "train.warmup_steps": 2, "train.precision": "fp32", "train.ema_decay": 0.9, "train.ckpt_every": 3,
            "train.keep_last": 10, "train.log_every": 1, "train.preview_every": 1000, "logging.wandb": False,
            "logging.progress": False}
    base.update(overrides)
    for key, value in base.items():
        OmegaConf.update(cfg, key, value, merge=False)
    return cfg


def build_trainer(cfg, dropout: float = 0.1, num_samples: int = 64, objective=None, preview=None, tracker=None,
                  rank: Optional[int] = None, world: Optional[int] = None):
    rank = int(os.environ.get("RANK", 0)) if rank is None else rank
    world = int(os.environ.get("WORLD_SIZE", 1)) if world is None else world
    seed_everything(int(cfg.seed))
    model = TinyNet(dropout)
    dataset = TinyDataset(num_samples)
    sampler = GlobalBatchSampler(num_samples, int(cfg.train.batch_size), seed=int(cfg.seed), rank=rank, world=world)
    loader = ResumableLoader(dataset, sampler)
    return Trainer(cfg, model, objective or make_objective(), loader, cfg.train.run_dir, preview=preview,
                   tracker=tracker)


def _steps(text: str) -> list[int]:
    return [int(s) for s in text.split(",") if s]


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--nan-steps", type=_steps, default=[])
    parser.add_argument("--inf-grad-steps", type=_steps, default=[])
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--samples", type=int, default=64)
    args = parser.parse_args(argv)
    overrides = dict(item.split("=", 1) for item in args.overrides)
    run_dir = overrides.pop("run_dir")
    parsed = {k: OmegaConf.from_dotlist([f"v={v}"]).v for k, v in overrides.items()}
    cfg = tiny_config(run_dir, **parsed)
    try:
        trainer = build_trainer(cfg, dropout=args.dropout, num_samples=args.samples,
                                objective=make_objective(args.nan_steps, args.inf_grad_steps, args.sleep))
        trainer.fit()
    except ReelError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
