"""Segment-wise trajectory distillation: a few-step student regresses the guided teacher's ODE segments.

The student's grid is t_0 = 1 > t_1 > ... > t_S = 0 (sampling_times(S, shift), the grid `reel
sample steps=S` walks). For a clip x0 of the batch and fresh noise, a random segment i of each
sample starts at x_{t_i} = (1 - t_i) x0 + t_i noise (pure noise for i = 0); the frozen teacher,
with classifier-free guidance, takes K Euler steps from t_i to t_{i+1}; the student's velocity at
(x_{t_i}, t_i), conditional text only, regresses onto the secant (x_{t_i} - x^teacher_{t_{i+1}}) /
(t_i - t_{i+1}). One student Euler step then lands where K guided teacher steps do.

This is a fixed-grid form of consistency trajectory models (Kim et al., "Consistency Trajectory
Models: Learning Probability Flow ODE Trajectory of Diffusion", ICLR 2024: a student that jumps
between any two times of the teacher's ODE, here the grid's neighbours) and of progressive
distillation done in one stage (Salimans & Ho, "Progressive Distillation for Fast Sampling of
Diffusion Models", ICLR 2022: a student step matches several teacher steps), with guidance
distilled into the student as in Meng et al., "On Distillation of Guided Diffusion Models", CVPR 2023.
Starting segments from the forward process rather than the student's own rollout keeps it a plain
regression: no target network, no rollout during training.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from reel.sample.timesteps import sampling_times
from reel.train.distill import Teacher, per_sample, tokens_of
from reel.train.flow_matching import Conditioner, interpolate


class ConsistencyDistillObjective:
    """objective(model, batch, step) -> (loss, metrics); `model` is the student (the engine's model)."""

    def __init__(self, teacher: Teacher, conditioner: Conditioner, student_steps: int, substeps: int,
                 shift: float = 1.0):
        self.teacher, self.conditioner = teacher, conditioner
        self.student_steps, self.substeps = int(student_steps), int(substeps)
        self.times = sampling_times(self.student_steps, shift)

    def to(self, device: torch.device) -> "ConsistencyDistillObjective":
        self.teacher.to(device)
        self.conditioner.to(device)
        return self

    def targets(self, x0: torch.Tensor, emb: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(x_{t_i}, t_i, the teacher's secant velocity, i) for a random segment i of each sample."""
        segment = torch.randint(0, self.student_steps, (x0.shape[0],), device=x0.device)
        times = self.times.to(x0.device)
        t, t_next = times[segment], times[segment + 1]
        x_t = interpolate(x0, torch.randn_like(x0), t)
        x_next = self.teacher.solve(x_t, t, t_next, self.substeps, emb, mask)
        secant = (x_t - x_next) / per_sample(t - t_next, x_t)
        return x_t, t.to(x0.dtype), secant, segment

    def __call__(self, model, batch: dict, step: int) -> tuple[torch.Tensor, dict[str, Any]]:
        x0, text = self.conditioner(batch)
        emb, mask = text.embeddings, text.mask
        x_t, t, secant, segment = self.targets(x0, emb, mask)
        prediction = model(x_t, t, emb, mask)
        loss = F.mse_loss(prediction.float(), secant.float())
        return loss, {"samples": x0.shape[0], "tokens": tokens_of(model, x0),
                      "segment_mean": segment.float().mean()}
