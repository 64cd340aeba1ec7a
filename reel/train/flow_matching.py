"""The flow-matching objective of the DiT.

x_t = (1 - t) x_0 + t noise and the model predicts the velocity v = noise - x_0 (so dx/dt = v and
sampling integrates from t = 1 down to 0). t = sigmoid(N(mean, std)), then shifted (SD3 / Sana).
A batch is either raw clips with captions (encoded here by the frozen autoencoder and text
encoder) or precomputed latents and text embeddings from `reel data encode`.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import torch
import torch.nn.functional as F

from reel.models.text_encoder import TextEmbeddings, masked_mean
from reel.sample.timesteps import shift_time


def sample_training_times(batch: int, logit_mean: float, logit_std: float, shift: float,
                          device: torch.device) -> torch.Tensor:
    """(batch,) times in (0, 1) from a logit-normal distribution, then shifted."""
    t = torch.sigmoid(torch.randn(batch, device=device) * logit_std + logit_mean)
    return shift_time(t, shift)


def interpolate(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    t = t.reshape(-1, *([1] * (x0.dim() - 1))).to(x0.dtype)
    return (1.0 - t) * x0 + t * noise


def model_frames(model, latent_frames: int) -> Optional[slice]:
    """The latent frames this rank owns under sequence parallelism (None on one process)."""
    module = getattr(model, "module", model)
    if getattr(module, "sequence_parallel", None) is None:
        return None
    return module.loss_frames(latent_frames)


class Conditioner:
    """A batch -> (latents, TextEmbeddings): encodes raw clips and captions, or passes precomputed ones."""

    def __init__(self, autoencoder: Optional[torch.nn.Module], text_encoder: Any):
        self.autoencoder, self.text_encoder = autoencoder, text_encoder

    def to(self, device: torch.device) -> "Conditioner":
        if self.autoencoder is not None:
            self.autoencoder.to(device)
        self.text_encoder = self.text_encoder.to(device)
        return self

    @torch.no_grad()
    def __call__(self, batch: dict) -> tuple[torch.Tensor, TextEmbeddings]:
        if "latents" in batch:
            emb, mask = batch["text_emb"].float(), batch["text_mask"].bool()
            text = TextEmbeddings(emb, mask, masked_mean(emb, mask))
            return batch["latents"].float(), text
        if self.autoencoder is None:
            raise ValueError("raw clips need an autoencoder to encode them")
        latents = self.autoencoder.encode(batch["video"].float())
        return latents, self.text_encoder.encode(list(batch["caption"]))


class FlowMatchingObjective:
    """objective(model, batch, step) -> (loss, metrics) for the training engine."""

    def __init__(self, fm_cfg: Any, conditioner: Conditioner, null_text: TextEmbeddings, patch_size=(1, 1, 1)):
        self.cfg, self.conditioner = fm_cfg, conditioner
        self.null_emb, self.null_mask = null_text.embeddings[:1], null_text.mask[:1]
        self.patch_size, self.patch_volume = tuple(patch_size), math.prod(patch_size)

    def to(self, device: torch.device) -> "FlowMatchingObjective":
        self.conditioner.to(device)
        self.null_emb, self.null_mask = self.null_emb.to(device), self.null_mask.to(device)
        return self

    def drop_captions(self, text: TextEmbeddings) -> tuple[torch.Tensor, torch.Tensor]:
        """Replace a random `caption_dropout` fraction of the captions by the empty prompt."""
        emb, mask = text.embeddings, text.mask
        drop = torch.rand(emb.shape[0], device=emb.device) < self.cfg.caption_dropout
        emb = torch.where(drop[:, None, None], self.null_emb.to(emb.dtype), emb)
        mask = torch.where(drop[:, None], self.null_mask, mask)
        return emb, mask

    def __call__(self, model, batch: dict, step: int):
        x0, text = self.conditioner(batch)
        emb, mask = self.drop_captions(text)
        t = self.training_times(model, x0)
        noise = torch.randn_like(x0)
        prefix = self.clean_prefix(model, x0, self.turn_context(batch))
        model_t, keep = t, None
        if prefix is not None:
            model_t, keep = prefix_times(t, prefix, x0.shape[2], self.patch_size[0])
        if model_t.dim() == 1:
            x_t = interpolate(x0, noise, model_t)
        else:
            frame_t = model_t.repeat_interleave(self.patch_size[0], dim=1)[:, None, :, None, None].to(x0.dtype)
            x_t = (1.0 - frame_t) * x0 + frame_t * noise
        prediction = model(x_t, model_t, emb, mask)
        error = (prediction.float() - (noise - x0).float()).square()
        frames = model_frames(model, x0.shape[2])
        if keep is None and frames is None:
            loss = error.mean()
        else:
            # a sample's loss is the mean over its kept frames; under sequence parallelism each rank adds
            # its own frames' share of it
            weight = torch.ones_like(x0[:, :1, :, :1, :1]) if keep is None else keep[:, None, :, None, None]
            per_frame = error[0].numel() // x0.shape[2] if x0.shape[2] else 0
            kept = (weight.sum() * per_frame).clamp(min=1)
            local = slice(None) if frames is None else frames
            loss = (error * weight)[:, :, local].sum() / kept
        tokens = x0.shape[0] * math.prod(x0.shape[2:]) // self.patch_volume
        return loss, {"samples": x0.shape[0], "tokens": tokens, "t_mean": t.mean()}

    def training_times(self, model, x0: torch.Tensor) -> torch.Tensor:
        """(B,) times, or with train.fm.chunk_times per-frame-group times (B, G) drawn independently for each
        causal chunk of each clip and constant within it (diffusion forcing; Chen et al., "Diffusion Forcing:
        Next-token Prediction Meets Full-Sequence Diffusion", 2024): a block-causal model learns to denoise a
        chunk whatever the noise of the chunks before it, the clean context of chunk-by-chunk sampling included."""
        cfg, batch = self.cfg, x0.shape[0]
        if not getattr(cfg, "chunk_times", False):
            return sample_training_times(batch, cfg.logit_mean, cfg.logit_std, cfg.shift, x0.device)
        chunk = causal_chunk_of(model, "train.fm.chunk_times")
        groups = x0.shape[2] // self.patch_size[0]
        chunks = -(-groups // chunk)
        t = sample_training_times(batch * chunks, cfg.logit_mean, cfg.logit_std, cfg.shift, x0.device)
        return t.view(batch, chunks).repeat_interleave(chunk, dim=1)[:, :groups]

    def turn_context(self, batch: dict) -> Optional[torch.Tensor]:
        """(B,) leading latent frames that are context in a turning world's clips (data.shapes.turn_prob; 0 for
        clips that do not turn): recorded by `reel data encode`, or computed from raw clips' labels."""
        from reel.data.shapes import context_latent_frames

        if "context_latent_frames" in batch:
            return torch.as_tensor(batch["context_latent_frames"]).long()
        labels = batch.get("labels")
        if isinstance(labels, dict) and "turn_frame" in labels:
            factor = self.conditioner.autoencoder.temporal_factor
            return torch.tensor([context_latent_frames(int(k), factor) for k in labels["turn_frame"]])
        return None

    def clean_prefix(self, model, x0: torch.Tensor, turn_context: Optional[torch.Tensor] = None
                     ) -> Optional[torch.Tensor]:
        """(B,) leading frame groups kept clean (t = 0) and out of the loss, or None when neither
        train.fm.first_frame_prob nor train.fm.clean_context_prob is on. first_frame_prob: the first group
        (image-to-video). clean_context_prob (teacher forcing, block-causal models): 1 to chunks - 1 whole
        causal chunks, uniformly, so the model denoises a chunk after clean context, as chunk-by-chunk
        sampling runs it. turn_context (latent frames, a turning world's clips): always clean, since the
        caption describes the motion after the turn only; the prefix is the larger of the two."""
        batch, device = x0.shape[0], x0.device
        prefix = None
        clean_first = self.image_conditioned(batch, device)
        if clean_first is not None:
            prefix = clean_first.long()
        prob = float(getattr(self.cfg, "clean_context_prob", 0.0))
        if prob > 0:
            chunk = causal_chunk_of(model, "train.fm.clean_context_prob")
            chunks = -(-(x0.shape[2] // self.patch_size[0]) // chunk)
            if chunks > 1:  # a single chunk has no context to give
                chosen = torch.rand(batch, device=device) < prob
                context = torch.randint(1, chunks, (batch,), device=device) * chunk * chosen
                prefix = context if prefix is None else torch.maximum(prefix, context)
        if turn_context is not None:
            chunk = causal_chunk_of(model, "data.shapes.turn_prob")
            turn_context = turn_context.to(device)
            if bool((turn_context % (chunk * self.patch_size[0])).any()):
                raise ValueError(f"data.shapes.turn_prob: a turn after {turn_context.tolist()} latent frames is not on "
                                 f"a causal chunk boundary ({chunk} x {self.patch_size[0]} latent frames per chunk)")
            context = turn_context // self.patch_size[0]
            prefix = context if prefix is None else torch.maximum(prefix, context)
        return prefix

    def image_conditioned(self, batch: int, device: torch.device) -> Optional[torch.Tensor]:
        """(batch,) bool: the clips trained image-to-video this step (None when train.fm.first_frame_prob is 0,
        so the random stream is that of plain text-to-video training)."""
        prob = float(getattr(self.cfg, "first_frame_prob", 0.0))
        if prob <= 0.0:
            return None
        return torch.rand(batch, device=device) < prob


def causal_chunk_of(model, key: str) -> int:
    """The model's causal chunk (frame groups per chunk); `key` names the setting that needs one."""
    chunk = getattr(getattr(model, "module", model), "causal_chunk", None)
    if chunk is None:
        raise ValueError(f"{key} needs a block-causal model (model.causal_chunk)")
    return chunk


def prefix_times(t: torch.Tensor, prefix: torch.Tensor, latent_frames: int,
                 temporal_patch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame-group times (B, G) from t (B,) or (B, G), with each clip's first `prefix` groups at t = 0,
    and the per-latent-frame loss weights (B, T): 0 on those clean frames."""
    groups = latent_frames // temporal_patch
    frame_t = (t[:, None].expand(-1, groups) if t.dim() == 1 else t).clone()
    clean = torch.arange(groups, device=t.device)[None, :] < prefix[:, None]
    frame_t = torch.where(clean, torch.zeros_like(frame_t), frame_t)
    keep = torch.ones(t.shape[0], latent_frames, device=t.device)
    keep[:, :groups * temporal_patch] = (~clean).float().repeat_interleave(temporal_patch, dim=1)
    return frame_t, keep
