import warnings

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from reel.config.schema import DataConfig
from reel.data.build import build_dataset, build_loader, set_loader_epoch
from reel.data.buckets import Bucket
from reel.data.folder import (BadClipCounter, BadClipWarning, SkippedClip, VideoFolderDataset,
                              collate_skip_bad, resize_to_cover)
from reel.data.metadata import write_metadata
from reel.errors import ReelError


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0 ** 2 / mse))


def as_uint8_frames(video: torch.Tensor) -> np.ndarray:
    """(3, T, H, W) in [-1, 1] -> (T, H, W, 3) in [0, 255]."""
    return ((video.permute(1, 2, 3, 0).numpy() + 1) * 127.5)


def row_for(path, frames, fps=8.0, **extra):
    t, h, w, _ = frames.shape
    return {"path": str(path), "caption": f"clip {path.name}", "num_frames": t, "fps": fps,
            "height": h, "width": w, **extra}


def test_reads_the_frames_written_when_sizes_match(make_test_mp4):
    path, frames = make_test_mp4("a.mp4", num_frames=24, height=64, width=96)
    ds = VideoFolderDataset([{"path": str(path), "caption": "a"}], height=64, width=96, num_frames=9,
                            start="center", crop="center")
    item = ds[0]
    assert item["video"].shape == (3, 9, 64, 96) and item["video"].dtype == torch.float32
    assert -1 <= item["video"].min() and item["video"].max() <= 1
    assert item["caption"] == "a" and item["path"] == str(path) and item["index"] == 0
    assert item["bucket"] == "64x96x9"
    first = (24 - 9) // 2
    assert psnr(as_uint8_frames(item["video"]), frames[first:first + 9]) >= 35


@pytest.mark.parametrize("width", [48, 72])
def test_reads_widths_that_decord_pads(make_test_mp4, width):
    path, frames = make_test_mp4("narrow.mp4", num_frames=8, height=32, width=width)
    ds = VideoFolderDataset([row_for(path, frames)], 32, width, num_frames=5, start="center", crop="center")
    assert psnr(as_uint8_frames(ds[0]["video"]), frames[1:6]) >= 35


@pytest.mark.parametrize("height,width", [(32, 32), (48, 80), (96, 96)])
def test_resize_to_cover_then_crop(make_test_mp4, height, width):
    path, frames = make_test_mp4("a.mp4", num_frames=12, height=64, width=96)
    ds = VideoFolderDataset([row_for(path, frames)], height=height, width=width, num_frames=5,
                            start="center", crop="center")
    video = ds[0]["video"]
    assert video.shape == (3, 5, height, width)
    assert video.min() >= -1 and video.max() <= 1
    source = torch.from_numpy(frames[3:8]).permute(0, 3, 1, 2).float()
    covered = resize_to_cover(source, height, width)
    assert min(covered.shape[-2] - height, covered.shape[-1] - width) == 0
    top, left = (covered.shape[-2] - height) // 2, (covered.shape[-1] - width) // 2
    expected = covered[..., top:top + height, left:left + width].permute(0, 2, 3, 1).numpy()
    assert psnr(as_uint8_frames(video), expected) >= 35


def test_target_fps_chooses_the_stride(make_test_mp4):
    path, frames = make_test_mp4("fast.mp4", num_frames=30, height=32, width=32, fps=24)
    rows = [row_for(path, frames, fps=24.0)]
    ds = VideoFolderDataset(rows, 32, 32, num_frames=9, target_fps=8, start="center", crop="center")
    assert ds.strides == [3]
    video = as_uint8_frames(ds[0]["video"])
    first = (30 - 25) // 2
    assert psnr(video, frames[first:first + 25:3]) >= 35

    assert VideoFolderDataset(rows, 32, 32, num_frames=9, frame_stride=2).strides == [2]
    too_long = VideoFolderDataset(rows, 32, 32, num_frames=11, target_fps=8)  # needs 31 of 30 frames
    assert len(too_long) == 0 and too_long.num_too_short == 1 and too_long.excluded == [str(path)]


def test_center_start_is_deterministic(make_test_mp4):
    path, frames = make_test_mp4("a.mp4", num_frames=20, height=32, width=48)
    ds = VideoFolderDataset([row_for(path, frames)], 32, 32, num_frames=5, start="center", crop="center")
    first = ds[0]["video"]
    ds.set_epoch(3)
    assert torch.equal(first, ds[0]["video"])


def test_random_start_and_crop_depend_only_on_seed_epoch_and_index(make_test_mp4):
    path, frames = make_test_mp4("a.mp4", num_frames=40, height=32, width=64)
    rows = [row_for(path, frames)] * 2

    def clip(seed, epoch, index):
        ds = VideoFolderDataset(rows, 32, 32, num_frames=5, seed=seed)
        ds.set_epoch(epoch)
        return ds[index]["video"]

    assert torch.equal(clip(0, 0, 0), clip(0, 0, 0))
    assert torch.equal(clip(1, 2, 1), clip(1, 2, 1))
    assert not torch.equal(clip(0, 0, 0), clip(0, 1, 0))
    assert not torch.equal(clip(0, 0, 0), clip(1, 0, 0))
    assert not torch.equal(clip(0, 0, 0), clip(0, 0, 1))


def test_rows_without_sizes_are_probed_and_unreadable_ones_left_out(make_test_mp4, tmp_path):
    path, _ = make_test_mp4("a.mp4", num_frames=12, height=32, width=48)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00junk" * 100)
    rows = [{"path": str(path), "caption": "a"}, {"path": str(garbage), "caption": "b"}]
    with pytest.warns(BadClipWarning, match="garbage.mp4"):
        ds = VideoFolderDataset(rows, 32, 32, num_frames=9)
    assert len(ds) == 1 and ds.rows[0]["num_frames"] == 12 and ds.rows[0]["width"] == 48
    assert [p for p, _ in ds.unreadable] == [str(garbage)]


def folder_config(metadata, buckets=(), **overrides):
    cfg = OmegaConf.structured(DataConfig(kind="folder", metadata=str(metadata), buckets=list(buckets)))
    for key, value in overrides.items():
        cfg[key] = value
    return cfg


def test_mixed_sizes_go_to_buckets_and_batches_never_mix_them(make_test_mp4, tmp_path):
    rows = []
    for k, (h, w) in enumerate([(64, 64), (64, 128), (128, 64)] * 3):
        path, frames = make_test_mp4(f"clip{k}.mp4", num_frames=10, height=h, width=w, phase=k)
        rows.append(row_for(path, frames))
    write_metadata(tmp_path / "meta.jsonl", rows)
    cfg = folder_config(tmp_path / "meta.jsonl", buckets=["64x64x9", "32x64x9:3", "64x32x9"], crop="center")
    ds = build_dataset(cfg)
    assert [str(b) for b in ds.bucket_of] == ["64x64x9", "32x64x9", "64x32x9"] * 3
    loader = build_loader(ds, cfg, batch_size=2, seed=0)
    batches = list(loader)
    assert len(batches) == len(loader) == 2 + 1 + 2
    for batch in batches:
        assert len(set(batch["bucket"])) == 1
        h, w, t = (int(s) for s in batch["bucket"][0].split("x"))
        assert batch["video"].shape[1:] == (3, t, h, w)
        assert batch["video"].shape[0] == (3 if batch["bucket"][0] == "32x64x9" else len(batch["path"]))
        assert batch["num_skipped"] == 0


def test_loader_skips_a_truncated_clip_and_counts_it(make_test_mp4, truncate_file, tmp_path):
    rows = []
    for k in range(5):
        path, frames = make_test_mp4(f"good{k}.mp4", num_frames=10, height=32, width=32, phase=5 * k)
        rows.append(row_for(path, frames))
    bad, frames = make_test_mp4("truncated.mp4", num_frames=10, height=32, width=32)
    truncate_file(bad, 0.4)
    rows.append(row_for(bad, frames))  # explicit sizes, so it is not probed (and dropped) up front
    write_metadata(tmp_path / "meta.csv", rows)
    cfg = folder_config(tmp_path / "meta.csv", height=32, width=32, num_frames=9)
    ds = build_dataset(cfg)
    assert len(ds) == 6

    with pytest.warns(BadClipWarning, match="truncated.mp4"):
        assert ds[5] is None
    loader = build_loader(ds, cfg, batch_size=4, seed=0)
    counter = BadClipCounter(max_bad_fraction=0.1)
    num_skipped, num_ok = 0, 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BadClipWarning)
        for epoch in range(2):
            set_loader_epoch(loader, epoch)
            for batch in loader:
                num_ok += len(batch["path"])
                num_skipped += batch["num_skipped"]
                counter.update(len(batch["path"]), batch["num_skipped"], batch["skipped_paths"])
    assert (num_ok, num_skipped) == (10, 2)
    assert counter.summary() == {"seen": 12, "skipped": 2, "paths": [str(bad)] * 2}
    with pytest.raises(ReelError, match=r"2 of 12 \(16.7%\) exceed data.max_bad_fraction=0.1; first: .*truncated.mp4"):
        counter.finish()  # under min_seen while iterating, but the end applies the rule anyway


def test_skipped_paths_cross_worker_processes(make_test_mp4, truncate_file, tmp_path):
    good, frames = make_test_mp4("good.mp4", num_frames=10, height=32, width=32)
    bad, _ = make_test_mp4("bad.mp4", num_frames=10, height=32, width=32)
    truncate_file(bad, 0.4)
    write_metadata(tmp_path / "m.jsonl", [row_for(good, frames), row_for(bad, frames)])
    cfg = folder_config(tmp_path / "m.jsonl", height=32, width=32, num_frames=9, num_workers=1)
    ds = build_dataset(cfg)
    (batch,) = list(build_loader(ds, cfg, batch_size=2, seed=0))
    assert batch["num_skipped"] == 1 and batch["skipped_paths"] == [str(bad)]


def test_collate_skip_bad():
    item = {"video": torch.zeros(3, 1, 2, 2), "caption": "c", "path": "p", "index": 0, "bucket": "2x2x1"}
    batch = collate_skip_bad([item, None, SkippedClip("bad.mp4", "corrupt"), item])
    assert batch["video"].shape == (2, 3, 1, 2, 2)
    assert batch["caption"] == ["c", "c"] and batch["path"] == ["p", "p"]
    assert batch["num_skipped"] == 2 and batch["skipped_paths"] == ["bad.mp4"]
    assert collate_skip_bad([None, None]) is None


def test_bad_clip_counter_threshold():
    at_limit = BadClipCounter(max_bad_fraction=0.1)
    at_limit.update(18, 2, ["a.mp4", "b.mp4"])
    at_limit.finish()
    over = BadClipCounter(max_bad_fraction=0.1)
    over.update(10, 0)
    with pytest.raises(ReelError) as error:
        over.update(7, 3, ["bad1.mp4", "bad2.mp4", "bad3.mp4"])
    assert str(error.value) == ("too many unreadable clips: 3 of 20 (15.0%) exceed "
                                "data.max_bad_fraction=0.1; first: bad1.mp4")


def test_bad_clip_counter_waits_for_min_seen_but_finish_does_not():
    counter = BadClipCounter(max_bad_fraction=0.1, min_seen=20)
    counter.update(5, 5, ["x.mp4"])  # 50% but only 10 seen
    assert counter.summary()["skipped"] == 5
    with pytest.raises(ReelError, match="5 of 10"):
        counter.finish()


def test_empty_split_and_all_short_clips_are_errors(make_test_mp4, tmp_path):
    path, frames = make_test_mp4("a.mp4", num_frames=5, height=32, width=32)
    write_metadata(tmp_path / "m.jsonl", [row_for(path, frames)])
    with pytest.raises(ReelError, match="data.split=eval"):
        build_dataset(folder_config(tmp_path / "m.jsonl", split="eval"))
    with pytest.raises(ReelError, match="1 too short"):
        build_dataset(folder_config(tmp_path / "m.jsonl", split="train", num_frames=9))


def test_clip_shorter_than_its_metadata_claims_is_skipped(make_test_mp4):
    path, frames = make_test_mp4("short.mp4", num_frames=6, height=32, width=32)
    row = {**row_for(path, frames), "num_frames": 40}  # stale metadata
    ds = VideoFolderDataset([row], 32, 32, num_frames=9)
    with pytest.warns(BadClipWarning, match="has 6 frames, needs 9"):
        assert ds[0] is None
    assert ds.bad_clips == [(str(path), "has 6 frames, needs 9 for 9 at stride 1")]


def test_build_dataset_gives_the_shapes_world_a_single_bucket(monkeypatch):
    import sys
    import types

    class FakeShapes(torch.utils.data.Dataset):
        @classmethod
        def from_config(cls, data_cfg):
            return cls()

        def __len__(self):
            return 5

        def __getitem__(self, i):
            return {"video": torch.zeros(3, 17, 32, 48), "caption": "a red square", "labels": {"shape": 1},
                    "index": i}

    monkeypatch.setitem(sys.modules, "reel.data.shapes", types.SimpleNamespace(ShapesDataset=FakeShapes))
    cfg = OmegaConf.structured(DataConfig(kind="shapes", height=32, width=48, num_frames=17))
    ds = build_dataset(cfg)
    assert ds.bucket_of == [Bucket(32, 48, 17)] * 5
    batches = list(build_loader(ds, cfg, batch_size=2, seed=0))
    assert sorted(b["video"].shape[0] for b in batches) == [1, 2, 2]
    assert batches[0]["labels"]["shape"].shape[0] == batches[0]["video"].shape[0]
