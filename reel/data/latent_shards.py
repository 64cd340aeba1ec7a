"""Precomputed latents and text embeddings (written by `reel data encode`, read by DiT training).

A folder holds index.json (what encoded them, shapes, shard list), shard_NNNNN.safetensors
(latents (N, C, T, h, w), text_emb (N, L, D), text_mask (N, L)) and captions.jsonl (one row per
clip: caption and labels). Each shard is written atomically; index.json last, so a folder with an
index is complete.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch.utils.data import Dataset

from reel.data.buckets import Bucket
from reel.errors import ReelError

INDEX_FILE = "index.json"
CAPTIONS_FILE = "captions.jsonl"
FORMAT = "reel-latents-1"


def shard_name(number: int) -> str:
    return f"shard_{number:05d}.safetensors"


class LatentShardWriter:
    """Collects encoded clips and writes a shard every `shard_size` of them."""

    def __init__(self, out_dir, shard_size: int = 256):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / INDEX_FILE).unlink(missing_ok=True)  # incomplete until the new index is written
        self.shard_size = shard_size
        self.pending: dict[str, list[torch.Tensor]] = {"latents": [], "text_emb": [], "text_mask": []}
        self.rows: list[dict] = []
        self.shards: list[dict] = []

    def add(self, latents: torch.Tensor, text_emb: torch.Tensor, text_mask: torch.Tensor, rows: list[dict]) -> None:
        for name, value in (("latents", latents), ("text_emb", text_emb), ("text_mask", text_mask)):
            self.pending[name].extend(value.detach().cpu())
        self.rows.extend(rows)
        while len(self.pending["latents"]) >= self.shard_size:
            self._flush(self.shard_size)

    def _flush(self, count: int) -> None:
        tensors = {name: torch.stack(values[:count]).contiguous() for name, values in self.pending.items()}
        tensors["latents"] = tensors["latents"].float()
        tensors["text_emb"] = tensors["text_emb"].to(torch.float16)
        for values in self.pending.values():
            del values[:count]
        name = shard_name(len(self.shards))
        tmp = self.out_dir / f".{name}.tmp"
        save_file(tensors, str(tmp))
        os.replace(tmp, self.out_dir / name)
        self.shards.append({"file": name, "count": count})

    def close(self, info: dict) -> Path:
        if self.pending["latents"]:
            self._flush(len(self.pending["latents"]))
        with open(self.out_dir / CAPTIONS_FILE, "w") as f:
            for row in self.rows:
                f.write(json.dumps(row) + "\n")
        return write_index(self.out_dir, len(self.rows), self.shards, info)


def write_index(out_dir, count: int, shards: list[dict], info: dict) -> Path:
    """The folder's index (atomically, last: a folder without one is incomplete): `count` clips in `shards`
    ({"file", "count"} in order), with `info` (the autoencoder and text encoder identities, clip size, ...)."""
    out_dir = Path(out_dir)
    tmp = out_dir / f".{INDEX_FILE}.tmp"
    tmp.write_text(json.dumps({"format": FORMAT, "count": count, "shards": shards, **info}, indent=1))
    os.replace(tmp, out_dir / INDEX_FILE)
    return out_dir


def read_index(folder) -> dict:
    folder = Path(folder)
    index_path = folder / INDEX_FILE
    if not index_path.is_file():
        raise ReelError(f"data.latents={folder}: no {INDEX_FILE} (write the folder with `reel data encode`; "
                        f"an interrupted encode leaves none)")
    try:
        index = json.loads(index_path.read_text())
    except json.JSONDecodeError as exc:
        raise ReelError(f"{index_path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if index.get("format") != FORMAT:
        raise ReelError(f"{index_path}: format {index.get('format')!r}, expected {FORMAT!r}")
    return index


class LatentShardDataset(Dataset):
    """Items {"latents", "text_emb", "text_mask", "caption", "index"}; shards load on first use."""

    def __init__(self, folder, max_shards_in_memory: int = 8):
        self.folder = Path(folder)
        self.index = read_index(self.folder)
        self.rows = [json.loads(line) for line in open(self.folder / CAPTIONS_FILE)]
        self.locations: list[tuple[int, int]] = []
        for number, shard in enumerate(self.index["shards"]):
            if not (self.folder / shard["file"]).is_file():
                raise ReelError(f"data.latents={self.folder}: {shard['file']} is missing")
            self.locations += [(number, i) for i in range(shard["count"])]
        if len(self.locations) != len(self.rows):
            raise ReelError(f"data.latents={self.folder}: {len(self.locations)} latents but {len(self.rows)} "
                            f"captions")
        height, width, frames = self.index["clip_size"]
        self.bucket_of = [Bucket(height, width, frames)] * len(self.rows)
        self._loaded: dict[int, dict[str, torch.Tensor]] = {}
        self.max_shards_in_memory = max_shards_in_memory

    def __len__(self) -> int:
        return len(self.rows)

    def _shard(self, number: int) -> dict[str, torch.Tensor]:
        if number not in self._loaded:
            if len(self._loaded) >= self.max_shards_in_memory:
                self._loaded.pop(next(iter(self._loaded)))
            path = self.folder / self.index["shards"][number]["file"]
            try:
                self._loaded[number] = load_file(str(path))
            except (SafetensorError, OSError) as exc:
                raise ReelError(f"{path}: not a readable safetensors file ({exc})") from None
        return self._loaded[number]

    def __getitem__(self, i: int) -> dict[str, Any]:
        number, row = self.locations[i]
        shard = self._shard(number)
        item = {"latents": shard["latents"][row], "text_emb": shard["text_emb"][row].float(),
                "text_mask": shard["text_mask"][row], "caption": self.rows[i]["caption"], "index": i}
        if "context_latent_frames" in self.rows[i]:  # a turning world (data.shapes.turn_prob): every row has it
            item["context_latent_frames"] = int(self.rows[i]["context_latent_frames"])
        return item


def check_shards_match(index: dict, autoencoder_identity: Optional[str], text_identity: Optional[str],
                       folder) -> None:
    """The latents must come from the configured autoencoder, the embeddings from the configured text encoder."""
    if autoencoder_identity is not None and index.get("autoencoder_identity") != autoencoder_identity:
        raise ReelError(f"data.latents={folder}: encoded with autoencoder {index.get('autoencoder')} "
                        f"({index.get('autoencoder_identity')}), but the config's autoencoder is "
                        f"{autoencoder_identity}; re-encode or set autoencoder.checkpoint to the one used")
    if text_identity is not None and index.get("text_encoder_identity") != text_identity:
        raise ReelError(f"data.latents={folder}: text embeddings from {index.get('text_encoder_identity')}, "
                        f"but the config's text encoder is {text_identity}; re-encode with this text_encoder")
