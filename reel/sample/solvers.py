"""ODE solvers for flow-matching velocity models, integrating from t = 1 (noise) to t = 0 (data).

Every solver takes the descending grid `times` from sampling_times and evaluates the model once
per interval, so `steps` is the number of model evaluations whatever the solver.

DPM-Solver++ and UniPC work with the data prediction x0 = x_t - t v. On the linear path
x_t = alpha_t x0 + sigma_t noise with alpha_t = 1 - t and sigma_t = t, their exponential
integrators step in lambda_t = log(alpha_t / sigma_t). lambda is -inf at t = 1 and +inf at
t = 0; every coefficient below is written through e^{-h} = (alpha_s sigma_t) / (sigma_s alpha_t),
which stays finite at both ends, and a step that would need an infinite lambda difference between
two history points falls back to first order (the limit of the higher-order formula).
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from reel.errors import ReelError
from reel.sample.guidance import Velocity


@torch.no_grad()
def euler(velocity: Velocity, noise: torch.Tensor, times: torch.Tensor, progress=None) -> torch.Tensor:
    """x_{t'} = x_t + (t' - t) v(x_t, t) over the grid `times` (descending, from sampling_times)."""
    x = noise
    for t, t_next in zip(times[:-1], times[1:]):
        v = velocity(x, t.to(noise.device, torch.float32).reshape(1))
        x = x + (t_next - t).item() * v
        if progress is not None:
            progress.update(1)
    return x


def _data_prediction(velocity: Velocity, x: torch.Tensor, t: float, progress) -> torch.Tensor:
    """x0 = x_t - t v(x_t, t): one model evaluation."""
    v = velocity(x, torch.tensor([t], dtype=torch.float32, device=x.device))
    if progress is not None:
        progress.update(1)
    return x - t * v


def _lambda(t: float) -> float:
    """log(alpha_t / sigma_t), only for 0 < t < 1."""
    return math.log((1.0 - t) / t)


def _exp_minus_h(s: float, t: float) -> float:
    """e^{-h}, h = lambda_t - lambda_s, for a step from s down to t; 0 when s = 1 or t = 0."""
    return ((1.0 - s) * t) / (s * (1.0 - t))


def _finite_lambdas(*times: float) -> bool:
    return all(0.0 < t < 1.0 for t in times)


def _first_order(x_s: torch.Tensor, s: float, t: float, x0_s: torch.Tensor) -> torch.Tensor:
    """DPM-Solver++(1) (DDIM): x_t = (sigma_t / sigma_s) x_s + alpha_t (1 - e^{-h}) x0_s. On this path it
    equals an Euler step; at t = 0 it returns x0_s."""
    return (t / s) * x_s + (1.0 - t) * (1.0 - _exp_minus_h(s, t)) * x0_s


def _multistep(x_s: torch.Tensor, s: float, t: float, x0_s: torch.Tensor,
               previous: Optional[tuple[float, torch.Tensor]]) -> torch.Tensor:
    """DPM-Solver++(2M) from s to t with the x0 of the previous evaluation (r, x0_r):
    x_t = (sigma_t / sigma_s) x_s + alpha_t (1 - e^{-h}) (x0_s + (x0_s - x0_r) / (2 rho)), rho = h_prev / h.
    First order without a usable previous point, and on the last step to t = 0 (lambda_t infinite)."""
    if previous is None or not _finite_lambdas(previous[0], s, t):
        return _first_order(x_s, s, t, x0_s)
    r, x0_r = previous
    rho = (_lambda(s) - _lambda(r)) / (_lambda(t) - _lambda(s))
    return _first_order(x_s, s, t, x0_s + (x0_s - x0_r) / (2.0 * rho))


@torch.no_grad()
def dpmpp(velocity: Velocity, noise: torch.Tensor, times: torch.Tensor, progress=None) -> torch.Tensor:
    """DPM-Solver++(2M) for flow matching (as Sana's flow DPM-Solver): second order from the x0 of the
    last two evaluations, one evaluation per step."""
    grid = [float(t) for t in times]
    x, previous = noise, None
    for s, t in zip(grid[:-1], grid[1:]):
        x0_s = _data_prediction(velocity, x, s, progress)
        x = _multistep(x, s, t, x0_s, previous)
        previous = (s, x0_s)
    return x


def _unipc_correct(x_s: torch.Tensor, s: float, t: float, x0_s: torch.Tensor, x0_t: torch.Tensor,
                   previous: Optional[tuple[float, torch.Tensor]]) -> torch.Tensor:
    """UniC (B(h) = e^{-h} - 1, "bh2"): redo the step s -> t with x0_t, the evaluation made at the
    predicted x_t, as one more point. x_t = first order - alpha_t sum_k B rho_k D_k with D_k the divided
    differences (x0_k - x0_s) / r_k, r_k = (lambda_k - lambda_s) / h (r = 1 for x0_t)."""
    x = _first_order(x_s, s, t, x0_s)
    alpha_t, e = 1.0 - t, _exp_minus_h(s, t)
    if previous is None or not _finite_lambdas(previous[0], s, t):
        # One coefficient: UniPC fixes rho = 1/2, so B(h) alone sets the weight of the new point.
        return x + alpha_t * (1.0 - e) * 0.5 * (x0_t - x0_s)
    r, x0_r = previous
    hh = -(_lambda(t) - _lambda(s))
    r1 = (_lambda(r) - _lambda(s)) / -hh
    # B rho solves sum_k (B rho_k) r_k^i = (i + 1)! hh phi_{i+2}(hh) for i = 0, 1, so B cancels out;
    # hh phi_k(hh) by the recurrence phi_{k+1}(z) = (phi_k(z) - 1/k!) / z
    h_phi1 = math.expm1(hh)
    h_phi2 = h_phi1 / hh - 1.0
    h_phi3 = h_phi2 / hh - 0.5
    c0, c1 = h_phi2, 2.0 * h_phi3
    b_rho1 = (c0 - c1) / (1.0 - r1)
    b_rho_t = c0 - b_rho1
    return x - alpha_t * (b_rho1 * (x0_r - x0_s) / r1 + b_rho_t * (x0_t - x0_s))


@torch.no_grad()
def unipc(velocity: Velocity, noise: torch.Tensor, times: torch.Tensor, progress=None) -> torch.Tensor:
    """UniPC (bh2): the DPM-Solver++(2M) predictor, then the UniC corrector of each step, which reuses
    the evaluation at the predicted point (the one the next step needs anyway), so it costs no extra
    evaluation. The last step to t = 0 is x0 of the last evaluation."""
    grid = [float(t) for t in times]
    x = noise
    start = None  # (s, x_s, x0_s, previous) of the step that predicted the current x
    previous = None
    for s, t in zip(grid[:-1], grid[1:]):
        x0 = _data_prediction(velocity, x, s, progress)
        if start is not None:
            s0, x_s0, x0_s0, previous_s0 = start
            x = _unipc_correct(x_s0, s0, s, x0_s0, x0, previous_s0)
        start = (s, x, x0, previous)
        x = _multistep(x, s, t, x0, previous)
        previous = (s, x0)
    return x


class SolverRegistry(dict):
    """name -> solver; an unknown name is a mistake a person made in sample.solver."""

    def __missing__(self, name):
        raise ReelError(f"sample.solver={name}: unknown solver (one of {', '.join(self)})")


SOLVERS = SolverRegistry(euler=euler, dpmpp=dpmpp, unipc=unipc)
