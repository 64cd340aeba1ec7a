"""Distribution matching distillation (DMD2): a few-step generator whose samples the guided teacher
cannot tell from its own.

References: Yin et al., "One-step Diffusion with Distribution Matching Distillation", CVPR 2024
(DMD: the gradient of the KL between the generator's and the teacher's distributions is the
difference of their scores at noised generator samples), and Yin et al., "Improved Distribution
Matching Distillation for Fast Image Synthesis", NeurIPS 2024 (DMD2: no regression loss needed,
two-time-scale critic updates, multi-step generators trained by backward simulation).

- generator: the engine's model (initialised from the teacher), S Euler steps on its grid.
  Backward simulation: each update stops the rollout at a random step of the grid and takes the
  x0 of that step, gradients through that last evaluation only; so the generator is trained on
  the inputs it meets when it samples.
- real score: the frozen teacher with classifier-free guidance.
- fake score (the critic): a copy of the teacher trained here, online, with the flow-matching
  loss on the generator's detached samples and its own AdamW; `critic_updates` of its updates per
  generator update. Its weights and optimizer ride in the training checkpoint (state_dict).
- DMD loss: noise the generated x0 to a random t, predict x0 with both scores (x0 = x_t - t v),
  grad = (x0_fake - x0_real) / mean|x0_gen - x0_real| per sample, loss = 0.5 mse(x0_gen,
  stopgrad(x0_gen - grad)): its gradient with respect to x0_gen is grad (over the element count).
- data-free: only the batch's text is used, never its clips.
- optional warm start (`regression_steps`): the first steps regress the generator's S-step output
  onto the teacher's guided ODE result from the same noise (DMD's regression loss, with the pairs
  computed on the fly instead of a precomputed set).
- self-forcing (`self_forcing`; Huang et al., "Self Forcing: Bridging the Train-Test Gap in
  Autoregressive Video Diffusion", 2025): a block-causal generator (the teacher's copy, or a causal
  student of a bidirectional teacher, `causal_chunk` given) rolls the clip out chunk by chunk against
  its own cache, as `reel sample long=true` does, each chunk stopping at its own random step; the DMD
  loss, the teacher and the critic see the whole rolled-out clip (a causal teacher's attention keeps each
  chunk to the ones before it; a bidirectional one scores the clip as a whole).
"""
from __future__ import annotations

import copy
from typing import Any, Optional

import torch
import torch.nn.functional as F

from reel.sample.few_step import causal_few_step_rollout, few_step_rollout
from reel.sample.timesteps import sampling_times
from reel.train.distill import Teacher, text_of, tokens_of, x0_prediction
from reel.train.flow_matching import interpolate

# Noise levels of the DMD loss and the critic's training (DMD2's 20..980 of 1000 steps): the scores
# carry little signal at the very ends.
MIN_T, MAX_T = 0.02, 0.98


class DMDObjective:
    """objective(model, batch, step) -> (loss, metrics); `model` is the generator (the engine's model)."""

    def __init__(self, teacher: Teacher, text_encoder: Any, latent_shape: tuple, student_steps: int,
                 substeps: int, shift: float = 1.0, critic_lr: float = 1e-4, critic_updates: int = 1,
                 regression_steps: int = 0, grad_clip: float = 1.0, seed: int = 0, dp_group: Optional[Any] = None,
                 self_forcing: bool = False, causal_chunk: Optional[int] = None):
        self.teacher, self.text_encoder = teacher, text_encoder
        self.latent_shape = tuple(int(s) for s in latent_shape)
        self.student_steps, self.substeps = int(student_steps), int(substeps)
        self.times = sampling_times(self.student_steps, shift)
        self.critic_updates, self.regression_steps = int(critic_updates), int(regression_steps)
        self.grad_clip, self.seed, self.dp_group = float(grad_clip), int(seed), dp_group
        self.critic = copy.deepcopy(teacher.model).float().train().requires_grad_(False)
        self.critic_opt = torch.optim.AdamW(self.critic.parameters(), lr=critic_lr, weight_decay=0.0)
        self.chunks = None  # causal chunks of a self-forcing rollout (None: whole-clip rollouts)
        if self_forcing:
            # the generator's chunks: its own causal_chunk, else the teacher's (a student copied from it)
            chunk = causal_chunk or getattr(getattr(teacher.model, "config", None), "causal_chunk", None)
            if chunk is None:
                raise ValueError("self-forcing needs a block-causal student (model.causal_chunk)")
            self.chunks = -(-self.latent_shape[1] // int(chunk))

    def to(self, device: torch.device) -> "DMDObjective":
        self.teacher.to(device)
        self.critic.to(device)  # in place: the optimizer keeps its parameters
        if hasattr(self.text_encoder, "to"):
            self.text_encoder = self.text_encoder.to(device)
        return self

    # ---- the generator's samples ------------------------------------------------------------
    def stop_steps(self, step: int, count: int) -> list:
        """Where each rollout of this training step stops (self-forcing: a list, one step per chunk): random,
        but a function of the step, so every rank runs the generator equally often (ZeRO-3 gathers weights
        in each forward) and a resumed run draws the same."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + int(step))
        shape = (count,) if self.chunks is None else (count, self.chunks)
        return torch.randint(0, self.student_steps, shape, generator=generator).tolist()

    def generate(self, model, noise: torch.Tensor, emb: torch.Tensor, mask: torch.Tensor, stop) -> torch.Tensor:
        """x0 of the generator from the point its own Euler rollout reaches at grid step `stop` (self-forcing:
        chunk k's rollout against the cache stops at stop[k])."""
        if self.chunks is not None:
            return causal_few_step_rollout(model, noise, emb, mask, self.times, grad_last_only=True, stop_steps=stop)
        times = torch.cat([self.times[:stop + 1], self.times.new_zeros(1)])
        return few_step_rollout(model, noise, emb, mask, times, grad_last_only=True)

    def noise(self, batch: int, device: torch.device) -> torch.Tensor:
        return torch.randn(batch, *self.latent_shape, device=device)

    # ---- the objective -------------------------------------------------------------------------
    def __call__(self, model, batch: dict, step: int) -> tuple[torch.Tensor, dict[str, Any]]:
        emb, mask = text_of(batch, self.text_encoder)
        device = next(self.critic.parameters()).device
        emb, mask = emb.to(device), mask.to(device)
        if step <= self.regression_steps:
            return self.regression(model, emb, mask)
        *critic_stops, stop = self.stop_steps(step, self.critic_updates + 1)
        critic_losses = [self.train_critic(model, emb, mask, s) for s in critic_stops]
        x0_gen = self.generate(model, self.noise(emb.shape[0], device), emb, mask, stop)
        loss, gap = self.dmd_loss(x0_gen, emb, mask)
        return loss, {"samples": emb.shape[0], "tokens": tokens_of(model, x0_gen),
                      "critic_loss": sum(critic_losses) / len(critic_losses), "x0_gap": gap}

    def regression(self, model, emb: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """MSE between the generator's whole S-step rollout and the teacher's guided ODE from the same noise."""
        noise = self.noise(emb.shape[0], emb.device)
        target = self.teacher.ode(noise, self.times, self.substeps, emb, mask)
        if self.chunks is None:
            x0 = few_step_rollout(model, noise, emb, mask, self.times, grad_last_only=False)
        else:  # the student's own cached chunk-by-chunk rollout, gradients through every step of each chunk
            x0 = causal_few_step_rollout(model, noise, emb, mask, self.times, grad_last_only=False)
        loss = F.mse_loss(x0.float(), target.float())
        return loss, {"samples": emb.shape[0], "tokens": tokens_of(model, x0), "regression": loss.detach()}

    def dmd_loss(self, x0_gen: torch.Tensor, emb: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, float]:
        """(the DMD loss, mean |x0_gen - x0_real|: how far the teacher would move the samples)."""
        with torch.no_grad():
            x0 = x0_gen.detach().float()
            t = torch.empty(x0.shape[0], device=x0.device).uniform_(MIN_T, MAX_T)
            x_t = interpolate(x0, torch.randn_like(x0), t)
            x0_real = x0_prediction(x_t, t, self.teacher.velocity(x_t, t, emb, mask).float())
            x0_fake = x0_prediction(x_t, t, self.critic(x_t, t, emb, mask).float())
            dims = tuple(range(1, x0.dim()))
            gap = (x0 - x0_real).abs().mean(dim=dims, keepdim=True)
            grad = torch.nan_to_num((x0_fake - x0_real) / gap.clamp_min(1e-6))
        loss = 0.5 * F.mse_loss(x0_gen.float(), (x0 - grad).detach())
        return loss, gap.mean().item()

    # ---- the critic (fake score) ---------------------------------------------------------------
    def train_critic(self, model, emb: torch.Tensor, mask: torch.Tensor, stop: int) -> float:
        """One flow-matching update of the critic on fresh, detached generator samples."""
        with torch.no_grad():
            x0 = self.generate(model, self.noise(emb.shape[0], emb.device), emb, mask, stop).float()
        t = torch.empty(x0.shape[0], device=x0.device).uniform_(MIN_T, MAX_T)
        noise = torch.randn_like(x0)
        self.critic.requires_grad_(True)
        prediction = self.critic(interpolate(x0, noise, t), t, emb, mask)
        loss = F.mse_loss(prediction.float(), noise - x0)
        self.critic_opt.zero_grad(set_to_none=True)
        loss.backward()
        self._average_critic_grads()
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.critic.parameters(), self.grad_clip)
        self.critic_opt.step()
        self.critic_opt.zero_grad(set_to_none=True)
        self.critic.requires_grad_(False)  # the generator's loss must not reach the critic
        return loss.item()

    def _average_critic_grads(self) -> None:
        """Mean over data-parallel ranks, so every rank's critic stays the same."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return
        size = dist.get_world_size(self.dp_group)
        if size == 1:
            return
        for p in self.critic.parameters():
            if p.grad is not None:
                dist.all_reduce(p.grad, group=self.dp_group)
                p.grad /= size

    def state_dict(self) -> dict:
        return {"critic": self.critic.state_dict(), "critic_opt": self.critic_opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.critic.load_state_dict(state["critic"])
        self.critic_opt.load_state_dict(state["critic_opt"])
