"""Experiment tracking: wandb, offline by default (logging.wandb=false turns it off)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf


class Tracker:
    """Thin wrapper so loops can log without caring whether wandb is on."""

    def __init__(self, cfg: DictConfig, run_dir: str | os.PathLike, job_type: str, rank: int = 0):
        self.run = None
        enabled = cfg.logging.wandb and cfg.logging.wandb_mode != "disabled" and rank == 0
        if not enabled:
            return
        import wandb

        Path(run_dir).mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("WANDB_SILENT", "true")
        self.run = wandb.init(project=cfg.logging.project, dir=str(run_dir), mode=cfg.logging.wandb_mode,
                              job_type=job_type, config=OmegaConf.to_container(cfg, resolve=True),
                              settings=wandb.Settings(console="off"))

    @property
    def enabled(self) -> bool:
        return self.run is not None

    def log(self, metrics: dict[str, Any], step: Optional[int] = None) -> None:
        if self.run is not None:
            self.run.log(metrics, step=step)

    def log_image(self, key: str, path: str | os.PathLike, step: Optional[int] = None) -> None:
        if self.run is not None:
            import wandb

            self.run.log({key: wandb.Image(str(path))}, step=step)

    def log_video(self, key: str, path: str | os.PathLike, step: Optional[int] = None) -> None:
        if self.run is not None:
            import wandb

            self.run.log({key: wandb.Video(str(path), format="mp4")}, step=step)

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None
