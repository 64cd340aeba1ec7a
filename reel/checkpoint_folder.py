"""What every model checkpoint folder shares: model.safetensors + config.yaml, training facts in the
safetensors metadata.

Large weights may instead be shards model-00001-of-00003.safetensors ... with an index,
model.safetensors.index.json ({"metadata": {...}, "weight_map": {tensor: shard}}, the layout
diffusers and transformers use); every reader here accepts both.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from reel.errors import ReelError

WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
CONFIG_FILE = "config.yaml"
EXTRA_INFO_KEY = "reel_extra_info"


def weights_path(path: Path, weights_file: str = WEIGHTS_FILE) -> Path:
    """The file that names the weights: `weights_file` (model.safetensors), or its shard index."""
    index = path / f"{weights_file}.index.json"
    return index if index.is_file() and not (path / weights_file).is_file() else path / weights_file


def require_folder(path: Path, label: str, holder: str) -> None:
    """A one-line error naming `label` (e.g. "autoencoder checkpoint") when the folder or a file is missing."""
    if not path.is_dir():
        raise ReelError(f"{label} {path}: no such folder")
    for name in (CONFIG_FILE, weights_path(path).name):
        if not (path / name).is_file():
            raise ReelError(f"{label} {path}: {name} is missing ({holder} holds {WEIGHTS_FILE} and {CONFIG_FILE})")


def _shard_files(path: Path, weights_file: str = WEIGHTS_FILE) -> Tuple[list, dict]:
    """(shard files, index metadata) of a folder's weights."""
    weights = weights_path(path, weights_file)
    if weights.name == weights_file:
        return [weights], {}
    try:
        index = json.loads(weights.read_text())
        files = sorted(set(index["weight_map"].values()))
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ReelError(f"{weights}: not a readable shard index") from None
    missing = [name for name in files if not (path / name).is_file()]
    if missing:
        raise ReelError(f"{weights}: shard {missing[0]} is missing")
    return [path / name for name in files], index.get("metadata") or {}


def weight_shapes(path: Path) -> Dict[str, tuple]:
    """name -> shape of every stored tensor, without reading the data."""
    shapes = {}
    for file in _shard_files(path)[0]:
        try:
            with safe_open(str(file), framework="pt") as f:
                shapes.update({name: tuple(f.get_slice(name).get_shape()) for name in f.keys()})
        except (SafetensorError, OSError) as exc:
            raise ReelError(f"{file}: not a readable safetensors file ({exc})") from None
    return shapes


def load_weights(path: Path, device: str = "cpu", weights_file: str = WEIGHTS_FILE,
                 keep: Optional[Callable[[str], bool]] = None) -> Dict[str, torch.Tensor]:
    """Every tensor of a folder's weights, one file or shards (other libraries name the file differently);
    with `keep`, only the tensors whose names it accepts are read from disk."""
    state = {}
    for file in _shard_files(path, weights_file)[0]:
        try:
            if keep is None:
                state.update(load_file(str(file), device=str(device)))
                continue
            with safe_open(str(file), framework="pt", device=str(device)) as handle:
                state.update({name: handle.get_tensor(name) for name in handle.keys() if keep(name)})
        except (SafetensorError, OSError) as exc:
            raise ReelError(f"{file}: not a readable safetensors file ({exc})") from None
    return state


def save_weights(folder: Path, tensors: Dict[str, torch.Tensor], metadata: Dict[str, str],
                 max_shard_bytes: Optional[int] = None) -> list:
    """model.safetensors, or shards of at most `max_shard_bytes` (a tensor never split) plus the index
    when the weights are larger. Returns the files written."""
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    if max_shard_bytes is None or total <= max_shard_bytes:
        save_file(tensors, str(folder / WEIGHTS_FILE), metadata=metadata)
        return [folder / WEIGHTS_FILE]
    shards, current, size = [], {}, 0
    for name, tensor in tensors.items():
        nbytes = tensor.numel() * tensor.element_size()
        if current and size + nbytes > max_shard_bytes:
            shards.append(current)
            current, size = {}, 0
        current[name], size = tensor, size + nbytes
    shards.append(current)
    weight_map, files = {}, []
    for i, shard in enumerate(shards, 1):
        name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(folder / name), metadata=metadata)
        weight_map.update(dict.fromkeys(shard, name))
        files.append(folder / name)
    index = {"metadata": {**metadata, "total_size": total}, "weight_map": weight_map}
    (folder / INDEX_FILE).write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")
    return [*files, folder / INDEX_FILE]


def read_extra_info(path: Path) -> dict:
    """The `extra_info` a save wrote into the weights' metadata ({} if none)."""
    files, index_metadata = _shard_files(path)
    text = index_metadata.get(EXTRA_INFO_KEY)
    if text is None:
        with safe_open(str(files[0]), framework="pt") as f:
            text = (f.metadata() or {}).get(EXTRA_INFO_KEY)
    return json.loads(text) if text else {}


def weights_digest(path: Path, weights_file: str = WEIGHTS_FILE) -> str:
    """sha256 over the weight files' bytes, in order."""
    digest = hashlib.sha256()
    for file in _shard_files(path, weights_file)[0]:
        digest.update(file.read_bytes())
    return digest.hexdigest()
