"""`reel data encode`: precompute latents and text embeddings into shards for DiT training."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional

import torch
from omegaconf import MISSING

from reel.commands import Command
from reel.data.shapes import context_latent_frames
from reel.errors import ReelError


@dataclass
class EncodeArgs:
    out_dir: str = MISSING
    num_clips: Optional[int] = None  # default: one pass over the dataset
    batch_size: int = 8
    shard_size: int = 256


def check_turns(data_cfg, temporal_factor: int) -> None:
    """Turns must fall on latent frame boundaries: turn_every a multiple of the autoencoder's temporal factor."""
    shapes = data_cfg.get("shapes")
    if shapes is not None and shapes.turn_prob > 0 and shapes.turn_every % temporal_factor:
        raise ReelError(f"data.shapes.turn_every={shapes.turn_every}: must be a multiple of the autoencoder's "
                        f"temporal factor {temporal_factor}, so turns fall between latent frames")


def _rows(batch: dict, count: int, temporal_factor: int) -> list[dict]:
    rows = [{"caption": batch["caption"][i]} for i in range(count)]
    labels = batch.get("labels")
    if isinstance(labels, dict):
        for key, values in labels.items():
            for i in range(count):
                value = values[i]
                rows[i][key] = value.item() if isinstance(value, torch.Tensor) else value
    for row in rows:
        if "turn_frame" in row:  # a turning world: how many leading latent frames are clean context
            row["context_latent_frames"] = context_latent_frames(row["turn_frame"], temporal_factor)
    return rows


def encode_command(cfg, args: EncodeArgs) -> int:
    from tqdm import tqdm

    from reel.commands.conditioning import frozen_autoencoder, text_encoder_of
    from reel.data.build import build_dataset, build_loader
    from reel.data.latent_shards import LatentShardWriter

    if args.batch_size < 1 or args.shard_size < 1:
        raise ReelError(f"batch_size={args.batch_size}, shard_size={args.shard_size}: both must be positive")
    autoencoder, ae_identity = frozen_autoencoder(cfg)
    check_turns(cfg.data, autoencoder.temporal_factor)
    text_encoder = text_encoder_of(cfg)
    dataset = build_dataset(cfg.data, seed=cfg.seed)
    shapes = {b.shape for b in dataset.bucket_of}
    if len(shapes) != 1:
        raise ReelError(f"data.buckets: reel data encode writes one clip size per folder, the data has "
                        f"{len(shapes)} ({sorted(shapes)}); encode each bucket separately")
    total = min(args.num_clips or len(dataset), len(dataset))
    loader = build_loader(dataset, cfg.data, args.batch_size, cfg.seed, shuffle=False)
    writer = LatentShardWriter(args.out_dir, args.shard_size)
    done, skipped = 0, 0
    with tqdm(total=total, desc="encode", unit="clip", disable=not cfg.logging.progress) as bar, torch.no_grad():
        for batch in loader:
            if batch is None:
                skipped += args.batch_size
                continue
            skipped += batch["num_skipped"]
            count = min(len(batch["caption"]), total - done)
            latents = autoencoder.encode(batch["video"][:count].float())
            text = text_encoder.encode(list(batch["caption"][:count]))
            writer.add(latents, text.embeddings, text.mask, _rows(batch, count, autoencoder.temporal_factor))
            done += count
            bar.update(count)
            if done >= total:
                break
    height, width, frames = next(iter(shapes))
    info = {"autoencoder": cfg.autoencoder.checkpoint, "autoencoder_identity": ae_identity,
            "text_encoder_identity": text_encoder.identity, "clip_size": [height, width, frames],
            "latent_shape": list(latents.shape[1:]), "text_shape": list(text.embeddings.shape[1:]),
            "data": cfg.data.name, "seed": cfg.seed, "skipped": skipped}
    out = writer.close(info)
    print(json.dumps({"out_dir": str(out), "clips": done, "skipped": skipped, "shards": len(writer.shards),
                      "latent_shape": info["latent_shape"]}))
    return 0


COMMANDS = [
    Command(("data", "encode"), "precompute latents and text embeddings (safetensors shards) for DiT training",
            encode_command, EncodeArgs,
            doc="Example: reel data encode experiment=shapes-64 out_dir=runs/latents/shapes-64 num_clips=2000\n"
                "Train on them with data=latents data.latents=runs/latents/shapes-64. The folder records which "
                "autoencoder and text encoder made it; training with other ones is an error."),
]
