"""Image-to-video: the first latent frame is an encoded image, held clean while the rest is denoised.

The DiT takes one timestep per latent frame, so the known frame runs at t = 0 (clean context) and
the others at the solver's t; after each evaluation the known frame's velocity is zeroed so it
never moves. A model trained with train.fm.first_frame_prob > 0 has seen exactly this input.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np
import torch

from reel.errors import ReelError

ModelFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, Optional[torch.Tensor]], torch.Tensor]


def read_image(path: Union[str, Path], height: int, width: int) -> torch.Tensor:
    """An image file -> a one-frame clip (1, 3, 1, height, width) in [-1, 1], resized to fill the frame and
    centre-cropped (the aspect ratio is kept)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise ReelError(f"image={path}: no such file")
    try:
        with Image.open(path) as opened:
            image = opened.convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise ReelError(f"image={path}: not a readable image ({exc})") from None
    scale = max(width / image.width, height / image.height)
    size = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
    if size != image.size:
        image = image.resize(size, Image.Resampling.BICUBIC)
    left, top = (size[0] - width) // 2, (size[1] - height) // 2
    pixels = np.asarray(image.crop((left, top, left + width, top + height)), dtype=np.uint8)
    clip = torch.from_numpy(pixels.copy()).float().div(127.5).sub(1.0)
    return clip.permute(2, 0, 1)[None, :, None]


@torch.no_grad()
def encode_image(autoencoder, path: Union[str, Path], height: int, width: int, device=None) -> torch.Tensor:
    """The normalised latent (1, C, 1, h, w) of an image file, the first frame of the video to generate."""
    clip = read_image(path, height, width)
    return autoencoder.encode(clip.to(device or next(autoencoder.parameters()).device))


def with_clean_prefix(model_fn: ModelFn, known: torch.Tensor, temporal_patch: int = 1) -> ModelFn:
    """model_fn(x, t, emb, mask) with x's first frames replaced by `known` (B or 1, C, k, h, w) and run at t = 0
    (per-frame times), and their velocity set to 0."""
    frames = known.shape[2]
    if frames % temporal_patch:
        raise ReelError(f"image conditioning: {frames} known latent frame(s) do not fill whole temporal patches "
                        f"of {temporal_patch}")
    groups = frames // temporal_patch

    def run(x: torch.Tensor, t: torch.Tensor, emb: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        x = x.clone()
        x[:, :, :frames] = known.to(x.dtype)
        per_frame = t.reshape(-1, 1).expand(x.shape[0], x.shape[2] // temporal_patch).clone()
        per_frame[:, :groups] = 0.0
        v = model_fn(x, per_frame, emb, mask)
        v[:, :, :frames] = 0.0
        return v

    return run


def set_prefix(x: torch.Tensor, known: Optional[torch.Tensor]) -> torch.Tensor:
    """x with its first frames set to `known` (the initial noise of an image-conditioned sample)."""
    if known is None:
        return x
    x = x.clone()
    x[:, :, :known.shape[2]] = known.to(x.dtype)
    return x
