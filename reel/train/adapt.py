"""Moving a DiT to another autoencoder's latent space (DC-VideoGen's idea: adapt, do not retrain).

Stage 1, embedding alignment: the DiT gets a new patch embedding for autoencoder B's latents and a
new output layer for B's channels; the transformer is frozen and the new embedding is trained so
that, for the same clip, embed_B(z_B) matches the old embed_A(z_A) (pooled to B's token grid when
the grids differ). The transformer then sees B's latents in the token space it already knows.
Stage 2 is ordinary flow-matching training in B's space from the aligned model (`reel train dit
train.init_from=...`, the whole model: the new output layer starts at zero and must train).
"""
from __future__ import annotations

from typing import Callable, Iterator, Optional

import torch
import torch.nn.functional as F

from reel.models.dit import DiT, build_dit

NEW_LAYERS = ("patch_embed.", "final_proj.")


def adapted_dit(source: DiT, latent_channels: int) -> DiT:
    """A DiT with `source`'s transformer (weights copied) and new input/output layers for `latent_channels`."""
    target = build_dit(source.config, latent_channels, source.text_dim)
    kept = {name: t for name, t in source.state_dict().items() if not name.startswith(NEW_LAYERS)}
    missing, unexpected = target.load_state_dict(kept, strict=False)
    assert not unexpected and all(name.startswith(NEW_LAYERS) for name in missing), (missing, unexpected)
    return target


def token_embedding(model: DiT, latents: torch.Tensor) -> torch.Tensor:
    """The patch embedding as a grid (B, D, T', H', W')."""
    return model.patch_embed(latents)


def alignment_loss(source: DiT, target: DiT, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
    """MSE between target's embedding of B latents and source's embedding of A latents on B's grid,
    relative to the source embedding's power (so it reads 1.0 for an embedding that outputs zeros)."""
    with torch.no_grad():
        reference = token_embedding(source, z_a)
    ours = token_embedding(target, z_b)
    if reference.shape[2:] != ours.shape[2:]:
        reference = F.adaptive_avg_pool3d(reference, ours.shape[2:])
    return F.mse_loss(ours, reference) / reference.square().mean().clamp(min=1e-12)


def align_embedding(source: DiT, target: DiT, batches: Iterator, encode_a: Callable, encode_b: Callable,
                    steps: int, lr: float, log: Optional[Callable[[int, float], None]] = None) -> list:
    """Train target.patch_embed for `steps` batches of raw clips; returns the alignment losses."""
    source.eval().requires_grad_(False)
    target.requires_grad_(False)
    target.patch_embed.requires_grad_(True)
    optimizer = torch.optim.AdamW(target.patch_embed.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + torch.cos(
        torch.tensor(step / max(1, steps) * torch.pi)).item()))
    losses = []
    for step in range(1, steps + 1):
        video = next(batches)
        with torch.no_grad():
            z_a, z_b = encode_a(video), encode_b(video)
        loss = alignment_loss(source, target, z_a, z_b)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(loss))
        if log is not None:
            log(step, losses[-1])
    target.requires_grad_(True)
    return losses
