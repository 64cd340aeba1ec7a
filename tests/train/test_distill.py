"""Few-step distillation: the student's rollout, the guided teacher, both objectives with the engine on a
tiny DiT, the DMD critic's checkpoint, and DMD's gradient on Gaussians whose answer is known."""
import copy
import json

import torch
from torch import nn

from reel.models.text_encoder import TextEmbeddings
from reel.sample.few_step import few_step_rollout
from reel.sample.guidance import guided_velocity
from reel.sample.latents import sample_latents
from reel.sample.solvers import euler
from reel.sample.timesteps import sampling_times
from reel.train import ResumableLoader, Trainer, seed_everything
from reel.train.checkpoint import OBJECTIVE_FILE
from reel.train.distill import Teacher
from reel.train.distill_consistency import ConsistencyDistillObjective
from reel.train.distill_dmd import DMDObjective
from reel.train.flow_matching import Conditioner
from tests.models.dit_helpers import LATENT_CHANNELS, TEXT_DIM, one_thread, tiny_dit  # noqa: F401 (autouse)
from tiny_run import GlobalBatchSampler, tiny_config

LATENT_SHAPE = (LATENT_CHANNELS, 3, 4, 4)
TEXT_LEN = 6
NULL_TEXT = TextEmbeddings(torch.zeros(1, TEXT_LEN, TEXT_DIM), torch.tensor([[True] + [False] * (TEXT_LEN - 1)]),
                           torch.zeros(1, TEXT_DIM))


def teacher_dit() -> nn.Module:
    """A tiny DiT with every weight random (halved, to keep its velocities moderate): it depends on the text,
    so guidance changes its output."""
    model = tiny_dit(seed=0)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.5)
    return model.eval()


def text_batch(batch: int = 2, seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, TEXT_LEN, dtype=torch.bool)
    mask[-1, TEXT_LEN // 2:] = False
    return torch.randn(batch, TEXT_LEN, TEXT_DIM, generator=g), mask


class EncodedClips(torch.utils.data.Dataset):
    """What `reel data encode` shards give the objectives: latents, text embeddings and their mask."""

    def __init__(self, count: int = 8):
        g = torch.Generator().manual_seed(5)
        self.latents = torch.randn(count, *LATENT_SHAPE, generator=g)
        self.text = torch.randn(count, TEXT_LEN, TEXT_DIM, generator=g)

    def __len__(self) -> int:
        return len(self.latents)

    def __getitem__(self, i: int) -> dict:
        return {"latents": self.latents[i], "text_emb": self.text[i], "text_mask": torch.ones(TEXT_LEN, dtype=bool)}


def fit(run_dir, objective, student: nn.Module, **overrides) -> tuple[Trainer, list[float]]:
    """The engine on a copy of the teacher (fp32, constant lr, no EMA lag); the logged loss of every step."""
    settings = {"train.steps": 30, "train.batch_size": 2, "train.lr": 1e-3, "train.warmup_steps": 0,
                "train.lr_schedule": "constant", "train.ema_decay": 0.0, "train.ckpt_every": 1000}
    cfg = tiny_config(run_dir, **{**settings, **overrides})
    seed_everything(0)
    data = EncodedClips()
    loader = ResumableLoader(data, GlobalBatchSampler(len(data), int(cfg.train.batch_size)))
    trainer = Trainer(cfg, copy.deepcopy(student).train(), objective, loader, run_dir)
    trainer.fit()
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    return trainer, [record["loss"] for record in log]


def mean(values) -> float:
    return sum(values) / len(values)


# ---- the student's rollout and the teacher --------------------------------------------------------
def test_rollout_is_the_euler_sampler_and_backpropagates_through_the_last_step_only():
    model = teacher_dit()
    emb, mask = text_batch()
    noise = torch.randn(2, *LATENT_SHAPE, generator=torch.Generator().manual_seed(1))
    times = sampling_times(3, shift=2.0)
    with torch.no_grad():
        rolled = few_step_rollout(model, noise, emb, mask, times)
    sampled = euler(guided_velocity(model, emb, mask, NULL_TEXT.embeddings, NULL_TEXT.mask, 1.0), noise, times)
    torch.testing.assert_close(rolled, sampled, rtol=0, atol=1e-6)

    class Scale(nn.Module):  # v = w x, so both gradients have closed forms
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.tensor(0.7))

        def forward(self, x, t, emb, mask):
            return self.w * x

    x0 = torch.randn(3, 2)
    times = torch.tensor([1.0, 0.6, 0.0], dtype=torch.float64)
    dt0, dt1, w = -0.4, -0.6, 0.7
    for grad_last_only, expected in ((True, dt1 * (x0 * (1 + dt0 * w)).sum()),
                                     (False, (x0 * (dt0 * (1 + dt1 * w) + dt1 * (1 + dt0 * w))).sum())):
        scale = Scale()
        few_step_rollout(scale, x0, None, None, times, grad_last_only).sum().backward()
        torch.testing.assert_close(scale.w.grad, expected, rtol=1e-5, atol=1e-6)


def test_teacher_is_the_guided_euler_sampler_with_times_per_sample():
    model = teacher_dit()
    emb, mask = text_batch()
    noise = torch.randn(2, *LATENT_SHAPE, generator=torch.Generator().manual_seed(2))
    teacher = Teacher(model, NULL_TEXT, guidance=3.0)
    ode = teacher.ode(noise, sampling_times(4, shift=3.0), 1, emb, mask)
    sampled = sample_latents(model, emb, mask, NULL_TEXT.embeddings, NULL_TEXT.mask, noise, 4, 3.0, shift=3.0)
    torch.testing.assert_close(ode, sampled, rtol=1e-5, atol=1e-5)
    # two samples on different segments at once equal each on its own
    start, end = torch.tensor([1.0, 0.5]), torch.tensor([0.5, 0.0])
    both = teacher.solve(noise, start, end, 3, emb, mask)
    for i in range(2):
        alone = teacher.solve(noise[i:i + 1], start[i:i + 1], end[i:i + 1], 3, emb[i:i + 1], mask[i:i + 1])
        torch.testing.assert_close(both[i:i + 1], alone, rtol=1e-5, atol=1e-5)


# ---- consistency ----------------------------------------------------------------------------------
def test_consistency_target_is_the_teacher_itself_for_one_unguided_substep():
    """One Euler step of the unguided teacher across a segment has the teacher's velocity as its secant, so
    the teacher is a perfect student there; with guidance it is not (the guidance must be distilled)."""
    model = teacher_dit()
    batch = EncodedClips()[0]
    batch = {key: value[None].expand(2, *value.shape) for key, value in batch.items()}
    for guidance, zero in ((1.0, True), (3.0, False)):
        torch.manual_seed(0)
        objective = ConsistencyDistillObjective(Teacher(model, NULL_TEXT, guidance), Conditioner(None, None),
                                                student_steps=4, substeps=1, shift=2.0)
        loss, metrics = objective(model, batch, step=1)
        assert (loss.item() < 1e-10) == zero, (guidance, loss.item())
        assert metrics["samples"] == 2 and metrics["tokens"] == 2 * 3 * 4 * 4


def test_consistency_student_learns_the_guided_segments(tmp_path):
    model = teacher_dit()
    objective = ConsistencyDistillObjective(Teacher(copy.deepcopy(model), NULL_TEXT, 3.0), Conditioner(None, None),
                                            student_steps=2, substeps=4)
    _, losses = fit(tmp_path / "consistency", objective, model)
    assert len(losses) == 30 and mean(losses[-5:]) < 0.6 * mean(losses[:5]), losses


# ---- DMD -------------------------------------------------------------------------------------------
def dmd_objective(model, **options) -> DMDObjective:
    values = dict(student_steps=2, substeps=2, critic_lr=1e-3)
    values.update(options)
    return DMDObjective(Teacher(copy.deepcopy(model), NULL_TEXT, 3.0), None, LATENT_SHAPE, **values)


def test_dmd_regression_warm_start_fits_the_teachers_ode(tmp_path):
    model = teacher_dit()
    objective = dmd_objective(model, regression_steps=30)
    _, losses = fit(tmp_path / "regression", objective, model)
    log = (tmp_path / "regression" / "log.jsonl").read_text()
    assert '"regression"' in log and '"critic_loss"' not in log  # the critic waits for the warm start
    assert mean(losses[-5:]) < 0.6 * mean(losses[:5]), losses


def test_dmd_critic_is_checkpointed_and_a_resumed_run_continues_it(tmp_path):
    model = teacher_dit()
    straight = dmd_objective(model, critic_updates=2)
    fit(tmp_path / "straight", straight, model, **{"train.steps": 4})
    first = dmd_objective(model, critic_updates=2)
    fit(tmp_path / "resumed", first, model, **{"train.steps": 2, "train.ckpt_every": 2})
    saved = torch.load(tmp_path / "resumed" / "checkpoints" / "step_0000002" / OBJECTIVE_FILE, weights_only=True)
    for name, tensor in first.critic.state_dict().items():
        assert torch.equal(saved["critic"][name], tensor), name
    assert not all(torch.equal(t, model.state_dict()[n]) for n, t in first.critic.state_dict().items())  # it trained

    second = dmd_objective(model, critic_updates=2)  # a fresh critic (the teacher's copy) until the resume
    trainer, _ = fit(tmp_path / "resumed", second, model, **{"train.steps": 4, "train.resume": "latest"})
    assert trainer.state.step == 4
    for name, tensor in straight.critic.state_dict().items():
        torch.testing.assert_close(second.critic.state_dict()[name], tensor, rtol=0, atol=1e-6, msg=name)
    assert second.critic_opt.state_dict()["state"][0]["step"] == straight.critic_opt.state_dict()["state"][0]["step"]


class GaussianData(nn.Module):
    """The exact flow-matching velocity of data N(mean, std^2 I): E[x0 | x_t] in closed form."""

    def __init__(self, mean: float, std: float):
        super().__init__()
        self.mean = nn.Parameter(torch.full(LATENT_SHAPE, float(mean)))
        self.log_std = nn.Parameter(torch.tensor(float(std)).log())

    def forward(self, x, t, emb, mask):
        t = t.reshape(-1, 1, 1, 1, 1)
        var, a = self.log_std.exp() ** 2, 1 - t
        x0 = self.mean + a * var / (a * a * var + t * t) * (x - a * self.mean)
        return (x - x0) / t


class OneStepGenerator(nn.Module):
    """From noise at t = 1 one Euler step gives x0 = scale * noise + shift."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(0.3))
        self.shift = nn.Parameter(torch.zeros(LATENT_SHAPE))

    def forward(self, x, t, emb, mask):
        return (x - (self.scale * x + self.shift)) / t.reshape(-1, 1, 1, 1, 1)


def test_dmd_moves_the_generator_onto_the_teachers_distribution():
    """Teacher: data N(2, 0.5^2). The generator starts at N(0, 0.3^2), the critic at the teacher (as DMD2
    starts it); the DMD gradient with the critic tracking the generator must carry the generator there."""
    torch.manual_seed(0)
    objective = DMDObjective(Teacher(GaussianData(2.0, 0.5), NULL_TEXT, 1.0), None, LATENT_SHAPE, student_steps=1,
                             substeps=1, critic_lr=5e-2, critic_updates=5)
    generator = OneStepGenerator()
    optimizer = torch.optim.Adam(generator.parameters(), lr=5e-2)
    emb, mask = torch.zeros(64, 1, 2), torch.ones(64, 1, dtype=torch.bool)
    losses = []
    for step in range(1, 101):
        loss, metrics = objective(generator, {"text_emb": emb, "text_mask": mask}, step)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert abs(generator.shift.mean().item() - 2.0) < 0.15 and abs(generator.scale.abs().item() - 0.5) < 0.1
    assert abs(objective.critic.mean.mean().item() - 2.0) < 0.15  # it followed the generator there
    assert mean(losses[-5:]) < 0.1 * mean(losses[:5]), losses
