"""Flow solvers on a Gaussian-to-Gaussian flow with a closed-form solution, and CFG batching."""
import pytest
import torch

from reel.errors import ReelError
from reel.sample.guidance import guided_velocity
from reel.sample.latents import sample_latents
from reel.sample.solvers import SOLVERS
from reel.sample.timesteps import sampling_times

torch.set_num_threads(1)

MU, STD = 2.0, 0.5  # data x0 ~ N(MU, STD^2) per dimension; noise ~ N(0, 1)


def gaussian_velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """E[noise - x0 | x_t] for x_t = (1 - t) x0 + t noise. x_t ~ N(m, V) with m = (1 - t) MU and
    V = (1 - t)^2 STD^2 + t^2; Gaussian conditioning gives E[x0 | x_t] = MU + (1 - t) STD^2 (x_t - m) / V
    and E[noise | x_t] = t (x_t - m) / V."""
    t = float(t.reshape(-1)[0])
    mean, var = (1 - t) * MU, (1 - t) ** 2 * STD**2 + t**2
    return -MU + (t - (1 - t) * STD**2) / var * (x - mean)


# The ODE keeps x_t = m_t + sqrt(V_t) z (d/dt of it is the field above), so noise z lands on MU + STD z.
NOISE = torch.linspace(-3, 3, 61, dtype=torch.float64)
EXACT = MU + STD * NOISE


def final_error(name: str, steps: int, shift: float = 1.0) -> float:
    x = SOLVERS[name](gaussian_velocity, NOISE, sampling_times(steps, shift))
    return (x - EXACT).abs().max().item()


def test_the_flow_map_is_the_affine_map_to_the_data():
    assert final_error("euler", 2000) < 2e-3


@pytest.mark.parametrize("name,low,high", [("euler", 1.8, 2.3), ("dpmpp", 3.0, 5.0), ("unipc", 3.0, 5.0)])
def test_error_falls_at_the_order_of_the_solver(name, low, high):
    # The second-order solvers leave their pre-asymptotic range (where the error changes sign) by
    # ~40 steps; their first step from t = 1 and last to t = 0 are first order (lambda is infinite
    # there), so the ratio nears 4 from below: dpmpp 3.3 and unipc 4.2 from 80 to 160 steps.
    ratio = final_error(name, 80) / final_error(name, 160)
    assert low < ratio < high, ratio


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_second_order_solvers_beat_euler_at_few_steps(shift):
    euler = final_error("euler", 10, shift)
    for name in ("dpmpp", "unipc"):
        assert final_error(name, 10, shift) < 0.75 * euler, name
    assert final_error("dpmpp", 10) < 0.1 * final_error("euler", 10)


@pytest.mark.parametrize("name", sorted(SOLVERS))
@pytest.mark.parametrize("steps", [1, 2, 7])
def test_steps_count_model_evaluations_and_progress(name, steps):
    calls, ticks = [], []

    class Progress:
        def update(self, n):
            ticks.append(n)

    def velocity(x, t):
        calls.append(float(t))
        return gaussian_velocity(x, t)

    out = SOLVERS[name](velocity, NOISE, sampling_times(steps), progress=Progress())
    assert len(calls) == steps and sum(ticks) == steps and calls[0] == 1.0
    assert torch.isfinite(out).all()
    if steps == 1:  # one step from pure noise: x0 predicted at t = 1, the same for every solver
        assert torch.allclose(out, NOISE - gaussian_velocity(NOISE, torch.tensor([1.0])))


def test_unknown_solver_is_a_user_error_naming_the_key():
    with pytest.raises(ReelError, match=r"sample.solver=heun: unknown solver \(one of euler, dpmpp, unipc\)"):
        SOLVERS["heun"]


class RecordingModel(torch.nn.Module):
    """velocity = x * (1 + t) + mean text embedding: depends on every input, records batch sizes."""

    def __init__(self):
        super().__init__()
        self.batches = []

    def forward(self, x, t, text, mask):
        self.batches.append(x.shape[0])
        pooled = (text * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        return x * (1 + t.view(-1, 1, 1, 1, 1)) + pooled.mean(-1).view(-1, 1, 1, 1, 1)


def _conditioning(batch=2):
    gen = torch.Generator().manual_seed(0)
    text = torch.randn(batch, 5, 8, generator=gen)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]][:batch], dtype=torch.bool)
    negative, negative_mask = torch.randn(1, 5, 8, generator=gen), torch.tensor([[1, 1, 0, 0, 0]], dtype=torch.bool)
    return text, mask, negative, negative_mask


def test_guidance_one_is_the_conditional_prediction_in_one_batch():
    model = RecordingModel()
    text, mask, negative, negative_mask = _conditioning()
    x, t = torch.randn(2, 4, 1, 2, 2), torch.tensor([0.3])
    out = guided_velocity(model, text, mask, negative, negative_mask, 1.0)(x, t)
    assert model.batches == [2]
    assert torch.equal(out, model(x, t.expand(2), text, mask))


def test_guidance_batches_both_passes_into_one_forward():
    model = RecordingModel()
    text, mask, negative, negative_mask = _conditioning()
    x, t = torch.randn(2, 4, 1, 2, 2), torch.tensor([0.3])
    out = guided_velocity(model, text, mask, negative, negative_mask, 4.0)(x, t)
    assert model.batches == [4]
    cond = model(x, t.expand(2), text, mask)
    uncond = model(x, t.expand(2), negative.expand(2, -1, -1), negative_mask.expand(2, -1))
    torch.testing.assert_close(out, uncond + 4.0 * (cond - uncond))


@pytest.mark.parametrize("solver", sorted(SOLVERS))
def test_sample_latents_runs_every_solver_with_guidance(solver):
    model = RecordingModel()
    text, mask, negative, negative_mask = _conditioning()
    noise = torch.randn(2, 4, 1, 2, 2)
    out = sample_latents(model, text, mask, negative, negative_mask, noise, 5, 3.0, 2.0, solver)
    assert out.shape == noise.shape and torch.isfinite(out).all() and model.batches == [4] * 5
    with pytest.raises(ReelError, match="sample.solver=rk4"):
        sample_latents(model, text, mask, negative, negative_mask, noise, 5, 3.0, 2.0, "rk4")
