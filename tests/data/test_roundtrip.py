"""Clips written by make-shapes and read back through the folder dataset match the generated ones."""
import numpy as np
import torch
from omegaconf import OmegaConf

from reel.config import load_config
from reel.data.build import build_dataset, build_loader
from reel.data.shapes import ShapesDataset, make_shapes


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = ((a - b) ** 2).mean().item()  # both in [-1, 1]: peak-to-peak 2
    return 10 * np.log10(4.0 / mse)


def test_make_shapes_read_back_by_folder_dataset(tmp_path):
    metadata = make_shapes(tmp_path, 12, 64, 64, 17, seed=3, progress=False)
    cfg, _ = load_config(["data=folder", f"data.metadata={metadata}", "data.start=center", "data.crop=center"])
    dataset = build_dataset(cfg.data, seed=0)
    generated = ShapesDataset(seed=3, num_clips=12, height=64, width=64, num_frames=17)
    loader = build_loader(dataset, cfg.data, batch_size=4, seed=0)
    values = []
    for batch in loader:
        for video, path in zip(batch["video"], batch["path"]):
            index = int(path.split("/")[-1].split(".")[0])
            assert video.shape == (3, 17, 64, 64)
            values.append(psnr(video, generated[index]["video"]))
    assert len(values) == 12
    assert min(values) >= 35.0, values


def test_captions_travel_with_the_clips(tmp_path):
    metadata = make_shapes(tmp_path, 3, 64, 64, 17, seed=5, progress=False)
    cfg, _ = load_config(["data=folder", f"data.metadata={metadata}"])
    dataset = build_dataset(cfg.data)
    generated = ShapesDataset(seed=5, num_clips=3, height=64, width=64, num_frames=17)
    by_path = {item["path"].split("/")[-1]: item["caption"] for item in (dataset[i] for i in range(3))}
    assert by_path == {f"{i:06d}.mp4": generated[i]["caption"] for i in range(3)}
