"""On-disk cache of text embeddings, keyed by encoder identity and prompt.

Training on a fixed caption set encodes each caption once, ever: entries live in
`root/<sha256(identity)[:16]>/<sha256(prompt)[:2]>/<sha256(prompt)>.safetensors`, one small
file per prompt, in float32 so a hit is bitwise what the encoder returned. Files are written
to a temporary name and renamed into place, so ranks and processes sharing the folder never
read half a file; an unreadable entry counts as a miss and is rewritten.
"""
from __future__ import annotations

import hashlib
import os
import uuid
from collections import OrderedDict
from typing import NamedTuple, Optional, Sequence, Union

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from reel.errors import ReelError
from reel.models.text_encoder import TextEmbeddings, TextEncoder, check_prompts


class CachedEmbedding(NamedTuple):
    embeddings: torch.Tensor  # (L, D) float32
    mask: torch.Tensor  # (L,) bool
    pooled: torch.Tensor  # (D,) float32

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self)


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class EmbeddingCache:
    def __init__(self, root: str, encoder_identity: str, shape: Optional[tuple[int, int]] = None):
        """`shape` is the expected (L, D) of every entry; entries of another shape are misses."""
        self.root = str(root)
        self.encoder_identity = encoder_identity
        self.shape = shape
        self.folder = os.path.join(self.root, sha256_hex(encoder_identity)[:16])
        self._create_folder()

    def _create_folder(self) -> None:
        try:
            os.makedirs(self.folder, exist_ok=True)
            label = os.path.join(self.folder, "identity.txt")
            if not os.path.exists(label):  # for people browsing the cache, never read back
                _write_atomically(label, lambda tmp: _write_text(tmp, self.encoder_identity + "\n"))
        except OSError as error:
            raise ReelError(f"text_encoder.cache_dir={self.root}: cannot create the cache folder ({error})") from None

    def path_for(self, prompt: str) -> str:
        digest = sha256_hex(prompt)
        return os.path.join(self.folder, digest[:2], digest + ".safetensors")

    def contains(self, prompt: str) -> bool:
        return os.path.isfile(self.path_for(prompt))

    def read(self, prompt: str) -> Optional[CachedEmbedding]:
        """The entry for `prompt`, or None when it is absent, unreadable or not this prompt's."""
        path = self.path_for(prompt)
        if not os.path.isfile(path):
            return None
        try:
            with safe_open(path, framework="pt") as entry_file:
                metadata = entry_file.metadata() or {}
                entry = CachedEmbedding(*(entry_file.get_tensor(key) for key in CachedEmbedding._fields))
        except (SafetensorError, OSError, ValueError, RuntimeError):
            return None
        if metadata.get("prompt") != prompt or not self._is_well_formed(entry):
            return None
        return entry

    def _is_well_formed(self, entry: CachedEmbedding) -> bool:
        embeddings, mask, pooled = entry
        if embeddings.dtype != torch.float32 or pooled.dtype != torch.float32 or mask.dtype != torch.bool:
            return False
        if embeddings.dim() != 2 or mask.shape != embeddings.shape[:1] or pooled.shape != embeddings.shape[1:]:
            return False
        return self.shape is None or tuple(embeddings.shape) == tuple(self.shape)

    def get(self, prompts: Sequence[str]) -> tuple[dict[str, CachedEmbedding], list[str]]:
        """(entries found, by prompt; prompts not found, deduplicated, in first-seen order)."""
        hits: dict[str, CachedEmbedding] = {}
        misses: list[str] = []
        for prompt in dict.fromkeys(prompts):
            entry = self.read(prompt)
            if entry is None:
                misses.append(prompt)
            else:
                hits[prompt] = entry
        return hits, misses

    def put(self, prompt: str, embeddings: torch.Tensor, mask: torch.Tensor, pooled: torch.Tensor) -> None:
        tensors = {
            "embeddings": embeddings.detach().to("cpu", torch.float32).contiguous().clone(),
            "mask": mask.detach().to("cpu", torch.bool).contiguous().clone(),
            "pooled": pooled.detach().to("cpu", torch.float32).contiguous().clone(),
        }
        metadata = {"prompt": prompt, "identity": self.encoder_identity}
        path = self.path_for(prompt)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        _write_atomically(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def _write_text(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def _write_atomically(path: str, write) -> None:
    # unique per process and call, so two ranks writing the same entry never share a temp file
    tmp = f"{path}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


class CachedTextEncoder:
    """A TextEncoder whose results are remembered on disk (and, within the process, in memory).

    `encode` returns the same tensors the encoder would, encoding only prompts seen neither in
    memory nor on disk, each distinct prompt once. `hits` and `misses` count distinct prompts
    per call: a miss is a prompt the model had to encode.
    """

    def __init__(self, encoder: TextEncoder, cache_dir: str, memory_bytes: int = 256 * 2**20):
        self.encoder = encoder
        self.cache = EmbeddingCache(cache_dir, encoder.identity, shape=(encoder.max_length, encoder.dim))
        self.memory_bytes = memory_bytes
        self._memory: OrderedDict[str, CachedEmbedding] = OrderedDict()
        self._memory_used = 0
        self.hits = 0
        self.misses = 0

    @property
    def dim(self) -> int:
        return self.encoder.dim

    @property
    def identity(self) -> str:
        return self.encoder.identity

    @property
    def max_length(self) -> int:
        return self.encoder.max_length

    @property
    def batch_size(self) -> int:
        return self.encoder.batch_size

    @property
    def device(self) -> torch.device:
        return self.encoder.device

    def to(self, device: Union[str, torch.device]) -> "CachedTextEncoder":
        self.encoder.to(device)
        return self

    def __call__(self, prompts: Sequence[str]) -> TextEmbeddings:
        return self.encode(prompts)

    def encode(self, prompts: Sequence[str]) -> TextEmbeddings:
        prompts = check_prompts(prompts)
        if not prompts:
            return self.encoder.encode([])
        found = self._lookup(list(dict.fromkeys(prompts)))
        return self._stack([found[prompt] for prompt in prompts])

    def _lookup(self, unique_prompts: list[str]) -> dict[str, CachedEmbedding]:
        found = {prompt: self._recall(prompt) for prompt in unique_prompts}
        on_disk, misses = self.cache.get([prompt for prompt, entry in found.items() if entry is None])
        for prompt, entry in on_disk.items():
            self._remember(prompt, entry)
        found.update(on_disk)
        found.update(self._encode_and_store(misses))
        self.hits += len(unique_prompts) - len(misses)
        self.misses += len(misses)
        return found

    def _encode_and_store(self, prompts: list[str], remember: bool = True) -> dict[str, CachedEmbedding]:
        if not prompts:
            return {}
        fresh = self.encoder.encode(prompts)
        entries = {}
        for row, prompt in enumerate(prompts):
            entry = CachedEmbedding(
                fresh.embeddings[row].cpu().clone(), fresh.mask[row].cpu().clone(), fresh.pooled[row].cpu().clone()
            )
            self.cache.put(prompt, *entry)
            if remember:
                self._remember(prompt, entry)
            entries[prompt] = entry
        return entries

    def _stack(self, entries: list[CachedEmbedding]) -> TextEmbeddings:
        stacked = TextEmbeddings(
            torch.stack([e.embeddings for e in entries]),
            torch.stack([e.mask for e in entries]),
            torch.stack([e.pooled for e in entries]),
        )
        return stacked.to(self.device)

    def _recall(self, prompt: str) -> Optional[CachedEmbedding]:
        entry = self._memory.get(prompt)
        if entry is not None:
            self._memory.move_to_end(prompt)
        return entry

    def _remember(self, prompt: str, entry: CachedEmbedding) -> None:
        if prompt in self._memory or entry.nbytes > self.memory_bytes:
            return
        self._memory[prompt] = entry
        self._memory_used += entry.nbytes
        while self._memory_used > self.memory_bytes:
            _, evicted = self._memory.popitem(last=False)
            self._memory_used -= evicted.nbytes

    def precompute(self, prompts: Sequence[str], progress: bool = True) -> int:
        """Encode every prompt not yet on disk, in batches, with a progress bar; returns how
        many were encoded. Entries already on disk are not read (a corrupt one is repaired
        the next time `encode` meets it), and nothing is kept in memory."""
        prompts = check_prompts(prompts)
        missing = [prompt for prompt in dict.fromkeys(prompts) if not self.cache.contains(prompt)]
        with tqdm(total=len(missing), desc="text embeddings", unit="prompt", disable=not progress) as bar:
            for start in range(0, len(missing), self.batch_size):
                batch = missing[start : start + self.batch_size]
                self._encode_and_store(batch, remember=False)
                bar.update(len(batch))
        self.misses += len(missing)
        return len(missing)
