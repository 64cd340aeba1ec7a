"""What both few-step distillation objectives share: the frozen teacher and the batch's text.

The teacher is a trained DiT sampled with classifier-free guidance against the empty prompt (the
caption it was trained to stand for "no caption"); its guided velocity, and its Euler ODE between
two times of each sample, are what the students learn from. Students run without guidance, so
guidance is distilled into them and they sample at guidance 1.

The objectives: reel/train/distill_consistency.py (segment-wise trajectory distillation) and
reel/train/distill_dmd.py (DMD2-style distribution matching).
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from reel.models.text_encoder import TextEmbeddings


def default_substeps(teacher_steps: int, student_steps: int) -> int:
    """Teacher Euler steps per student step, so the teacher's whole ODE takes about its own sampling steps."""
    return max(1, math.ceil(int(teacher_steps) / int(student_steps)))


def per_sample(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) times shaped to broadcast against (B, C, T, H, W)."""
    return t.reshape(-1, *([1] * (like.dim() - 1))).to(device=like.device, dtype=like.dtype)


def x0_prediction(x_t: torch.Tensor, t: torch.Tensor, velocity: torch.Tensor) -> torch.Tensor:
    """x0 = x_t - t v on the path x_t = (1 - t) x0 + t noise."""
    return x_t - per_sample(t, x_t) * velocity


def tokens_of(model, latents: torch.Tensor) -> int:
    """Transformer tokens of a latent batch (for throughput logs)."""
    patch = getattr(getattr(model, "module", model), "patch_size", (1, 1, 1))
    return latents.shape[0] * math.prod(latents.shape[2:]) // math.prod(patch)


def text_of(batch: dict, text_encoder) -> tuple[torch.Tensor, torch.Tensor]:
    """(embeddings, mask) of a batch: precomputed ones from `reel data encode` shards, else its captions
    encoded (no clip is encoded: data-free methods need only the text)."""
    if "text_emb" in batch:
        return batch["text_emb"].float(), batch["text_mask"].bool()
    text = text_encoder.encode(list(batch["caption"]))
    return text.embeddings, text.mask


class Teacher:
    """A frozen DiT with classifier-free guidance against the empty prompt.

    velocity = v_neg + guidance (v_cond - v_neg), both passes in one forward; guidance 1 (or less)
    runs the conditional pass alone, as reel/sample/guidance.py does. Times are per sample.
    """

    def __init__(self, model: torch.nn.Module, null_text: TextEmbeddings, guidance: float):
        self.model = model.eval().requires_grad_(False)
        self.null_emb, self.null_mask = null_text.embeddings[:1], null_text.mask[:1].bool()
        self.guidance = float(guidance)

    def to(self, device: torch.device) -> "Teacher":
        self.model.to(device)
        self.null_emb, self.null_mask = self.null_emb.to(device), self.null_mask.to(device)
        return self

    @torch.no_grad()
    def velocity(self, x: torch.Tensor, t: torch.Tensor, emb: torch.Tensor,
                 mask: Optional[torch.Tensor]) -> torch.Tensor:
        batch = x.shape[0]
        t = t.to(device=x.device, dtype=x.dtype).expand(batch)
        if self.guidance <= 1.0:
            return self.model(x, t, emb, mask)
        if mask is None:
            mask = torch.ones(emb.shape[:2], dtype=torch.bool, device=emb.device)
        both = self.model(torch.cat([x, x]), torch.cat([t, t]),
                          torch.cat([emb, self.null_emb.to(emb.dtype).expand(batch, -1, -1)]),
                          torch.cat([mask, self.null_mask.expand(batch, -1)]))
        cond, uncond = both.chunk(2)
        return uncond + self.guidance * (cond - uncond)

    @torch.no_grad()
    def solve(self, x: torch.Tensor, t_from: torch.Tensor, t_to: torch.Tensor, substeps: int,
              emb: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        """`substeps` guided Euler steps from t_from to t_to (each (B,), equally spaced per sample)."""
        t_from, t_to = t_from.to(torch.float64), t_to.to(torch.float64)
        for k in range(substeps):
            s = t_from + (t_to - t_from) * (k / substeps)
            s_next = t_from + (t_to - t_from) * ((k + 1) / substeps)
            x = x + per_sample(s_next - s, x) * self.velocity(x, s, emb, mask)
        return x

    @torch.no_grad()
    def ode(self, noise: torch.Tensor, times: torch.Tensor, substeps: int, emb: torch.Tensor,
            mask: Optional[torch.Tensor]) -> torch.Tensor:
        """The teacher's many-step result: `substeps` guided Euler steps within each interval of `times`."""
        x = noise
        for t, t_next in zip(times[:-1], times[1:]):
            x = self.solve(x, t.expand(x.shape[0]), t_next.expand(x.shape[0]), substeps, emb, mask)
        return x
