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


BUNDLED_PREFIX = "bundled:"


def resolve_checkpoint_path(path) -> Path:
    """`bundled:NAME` -> the bundled folder reel/assets/NAME; any other path unchanged. Configs use the
    prefix so they work wherever reel is installed."""
    text = str(path)
    if not text.startswith(BUNDLED_PREFIX):
        return Path(path)
    name = text[len(BUNDLED_PREFIX):]
    folder = ASSETS / name
    if not name or "/" in name or not folder.is_dir():
        known = sorted(p.name for p in ASSETS.iterdir() if p.is_dir() and not p.name.startswith("_"))
        raise ReelError(f"{text}: no bundled checkpoint of that name (bundled: {', '.join(known)})")
    return folder
