"""Checkpoint folders: written atomically, verified before use, the newest few kept.

run_dir/checkpoints/step_0000120/
    engine/               DeepSpeed's own state (weights, optimizer, scheduler), for resuming
    model.safetensors     full fp32 weights (gathered under ZeRO-3)
    ema.safetensors       EMA weights, fp32
    trainer_state.json    step, counters, world size, data position of rank 0
    ranks/rank_00000.json per rank: every RNG state and its data-loader position
    objective.pt          the objective's own state, when it has one (a discriminator and its
                          optimizer, say); tensors and plain values, read with weights_only=True
    config.yaml           the resolved config of the run
    MANIFEST.json         written last: size and sha256 of every other file

A folder is first written as checkpoints/.tmp-step_0000120, renamed into place, and only then
gets its MANIFEST.json; a folder without one, or whose files no longer match it, is damaged.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from omegaconf import DictConfig, OmegaConf

from reel.errors import ReelError

log = logging.getLogger("reel.train")

MANIFEST = "MANIFEST.json"
ENGINE_DIR = "engine"
MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
STATE_FILE = "trainer_state.json"
CONFIG_FILE = "config.yaml"
OBJECTIVE_FILE = "objective.pt"
RANKS_DIR = "ranks"
_STEP_DIR = re.compile(r"^step_(\d+)$")
_TMP_PREFIX = ".tmp-"


def step_dir_name(step: int) -> str:
    return f"step_{step:07d}"


def rank_file_name(rank: int) -> str:
    return f"{RANKS_DIR}/rank_{rank:05d}.json"


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
        os.fsync(f.fileno())  # the bytes hashed are the bytes that survive a power cut
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def checkpoint_problem(folder: Path) -> Optional[str]:
    """Why `folder` cannot be trusted, or None when every file matches its manifest."""
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        return f"missing {MANIFEST} (the write did not finish)"
    try:
        files = json.loads(manifest_path.read_text())["files"]
    except (ValueError, KeyError, TypeError):
        return f"unreadable {MANIFEST}"
    for name, expected in sorted(files.items()):
        path = folder / name
        if not path.is_file():
            return f"missing {name}"
        if path.stat().st_size != expected["size"]:
            return f"size mismatch in {name} ({path.stat().st_size} bytes, expected {expected['size']})"
        if _sha256(path) != expected["sha256"]:
            return f"sha256 mismatch in {name}"
    return None


class CheckpointFolders:
    """The checkpoints/ folder of a run."""

    def __init__(self, root: Path, keep_last: int):
        self.root = Path(root)
        self.keep_last = keep_last

    def step_folders(self) -> list[Path]:
        """Published checkpoint folders, oldest first."""
        if not self.root.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.root.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir()]
        return [p for _, p in sorted(found)]

    def remove_leftovers(self) -> None:
        """Temporary folders of writes that never finished (a crash or a kill mid-save)."""
        if self.root.is_dir():
            for path in self.root.iterdir():
                if path.name.startswith(_TMP_PREFIX):
                    log.info(f"removing unfinished checkpoint write {path}")
                    shutil.rmtree(path, ignore_errors=True)

    def temporary_folder(self, step: int) -> Path:
        return self.root / f"{_TMP_PREFIX}{step_dir_name(step)}"

    def publish(self, temporary: Path, step: int) -> Path:
        """Rename the finished temporary folder into place, then write its manifest (last)."""
        files = {}
        for path in sorted(p for p in temporary.rglob("*") if p.is_file()):
            files[path.relative_to(temporary).as_posix()] = {"size": path.stat().st_size, "sha256": _sha256(path)}
        final = self.root / step_dir_name(step)
        if final.exists():  # only if something outside the Trainer put it there
            stale = self.root / f"{_TMP_PREFIX}replaced-{final.name}"
            shutil.rmtree(stale, ignore_errors=True)
            final.rename(stale)
            shutil.rmtree(stale, ignore_errors=True)
        temporary.rename(final)
        manifest_tmp = final / f"{MANIFEST}.tmp"
        write_json(manifest_tmp, {"step": step, "files": files})
        with open(manifest_tmp, "rb") as f:
            os.fsync(f.fileno())
        manifest_tmp.replace(final / MANIFEST)
        _fsync_dir(final)
        _fsync_dir(self.root)
        return final

    def prune(self) -> None:
        for old in self.step_folders()[: -self.keep_last]:
            shutil.rmtree(old, ignore_errors=True)

    def set_aside_newer_than(self, step: int) -> None:
        """Rename checkpoints past the step a run starts from (0 when fresh): they belong to a timeline
        it abandons, and must neither be picked by a later resume=latest nor count against keep_last."""
        for folder in self.step_folders():
            if int(_STEP_DIR.match(folder.name).group(1)) > step:
                aside = folder.with_name(f"abandoned-{folder.name}")
                shutil.rmtree(aside, ignore_errors=True)
                folder.rename(aside)
                log.warning(f"starting from step {step}: set aside the later checkpoint {folder} as {aside.name}")

    def latest_valid(self) -> Optional[Path]:
        """The newest checkpoint whose files match its manifest; damaged newer ones are named."""
        skipped = []
        for folder in reversed(self.step_folders()):
            problem = checkpoint_problem(folder)
            if problem is None:
                if skipped:
                    log.warning(f"resume=latest: falling back to {folder} (skipped damaged {', '.join(skipped)})")
                return folder
            log.warning(f"checkpoint {folder} is damaged: {problem}; skipping it")
            skipped.append(str(folder))
        return None


def resolve_resume(resume: Optional[str], folders: CheckpointFolders) -> Optional[Path]:
    """The checkpoint train.resume names, verified; None for a fresh start."""
    if not resume:
        return None
    if str(resume) == "latest":
        found = folders.latest_valid()
        if found is None:
            where = folders.root
            if folders.step_folders():
                log.warning(f"resume=latest: no undamaged checkpoint in {where}; starting fresh")
            else:
                log.info(f"resume=latest: no checkpoint in {where} yet; starting fresh")
        return found
    path = Path(resume)
    if not path.is_dir():
        raise ReelError(f"train.resume={resume}: no such checkpoint folder")
    problem = checkpoint_problem(path)
    if problem is not None:
        raise ReelError(f"train.resume={resume}: checkpoint {path} is damaged: {problem}")
    return path


@dataclass
class TrainingCheckpoint:
    """A verified checkpoint folder, for export and inspection."""

    path: Path
    step: int
    trainer_state: dict[str, Any]
    config: DictConfig
    ema: dict[str, torch.Tensor] = field(repr=False)

    def model_state_dict(self) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        return load_file(str(self.path / MODEL_FILE))


def _find_checkpoint(path: Path) -> Path:
    if (path / MANIFEST).exists() or _STEP_DIR.match(path.name):
        return path
    for root in (path / "checkpoints", path):
        if CheckpointFolders(root, 1).step_folders():
            found = CheckpointFolders(root, 1).latest_valid()
            if found is None:
                raise ReelError(f"{path}: every checkpoint in {root} is damaged")
            return found
    raise ReelError(f"{path}: not a checkpoint folder, and no checkpoints/step_* inside it")


def load_training_checkpoint(path: str | os.PathLike) -> TrainingCheckpoint:
    """EMA weights, trainer state and config of a checkpoint folder, or of a run's newest good one."""
    from safetensors.torch import load_file

    folder = _find_checkpoint(Path(path))
    problem = checkpoint_problem(folder)
    if problem is not None:
        raise ReelError(f"checkpoint {folder} is damaged: {problem}")
    state = json.loads((folder / STATE_FILE).read_text())
    config = OmegaConf.load(folder / CONFIG_FILE)
    return TrainingCheckpoint(folder, int(state["step"]), state, config, load_file(str(folder / EMA_FILE)))
