"""The small demo checkpoints bundled with reel (fp16 safetensors), each made by a recipe in tools/."""
from __future__ import annotations

from pathlib import Path

from reel.errors import ReelError

ASSETS = Path(__file__).resolve().parent


def demo_autoencoder_path() -> Path:
    """The bundled demo autoencoder (made by tools/train_demo_ae.sh)."""
    path = ASSETS / "demo_ae"
    if not (path / "model.safetensors").is_file():
        raise ReelError(f"{path}: the bundled demo autoencoder is missing; rebuild it with tools/train_demo_ae.sh")
    return path
