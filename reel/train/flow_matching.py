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
        self.patch_volume = math.prod(patch_size)

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
        t = sample_training_times(x0.shape[0], self.cfg.logit_mean, self.cfg.logit_std, self.cfg.shift, x0.device)
        noise = torch.randn_like(x0)
        prediction = model(interpolate(x0, noise, t), t, emb, mask)
        frames = model_frames(model, x0.shape[2])
        if frames is None:
            loss = F.mse_loss(prediction.float(), (noise - x0).float())
        else:  # sequence parallel: this rank's frames' share of the sample's mean
            error = (prediction.float() - (noise - x0).float())[:, :, frames]
            loss = error.square().sum() / prediction.numel()
        tokens = x0.shape[0] * math.prod(x0.shape[2:]) // self.patch_volume
        return loss, {"samples": x0.shape[0], "tokens": tokens, "t_mean": t.mean()}
