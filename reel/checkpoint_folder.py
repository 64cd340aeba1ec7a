"""What every model checkpoint folder shares: model.safetensors + config.yaml, training facts in the
safetensors metadata."""
from __future__ import annotations

import json
from pathlib import Path

from safetensors import safe_open

from reel.errors import ReelError

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.yaml"
EXTRA_INFO_KEY = "reel_extra_info"


def require_folder(path: Path, label: str, holder: str) -> None:
    """A one-line error naming `label` (e.g. "autoencoder checkpoint") when the folder or a file is missing."""
    if not path.is_dir():
        raise ReelError(f"{label} {path}: no such folder")
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (path / name).is_file():
            raise ReelError(f"{label} {path}: {name} is missing ({holder} holds {WEIGHTS_FILE} and {CONFIG_FILE})")


def read_extra_info(path: Path) -> dict:
    """The `extra_info` a save wrote into the weights' metadata ({} if none)."""
    with safe_open(str(path / WEIGHTS_FILE), framework="pt") as f:
        text = (f.metadata() or {}).get(EXTRA_INFO_KEY)
    return json.loads(text) if text else {}
