"""The Trainer in this process (one rank, DeepSpeed on CPU, fp32): accumulation, schedule,
non-finite steps, checkpoints (pruning, leftovers, damage, fallback), previews, export helper."""
import json
import logging
import shutil

import pytest
import torch

from reel.errors import ReelError
from reel.train import load_training_checkpoint, warmup_then_decay
from reel.train.checkpoint import MANIFEST
from tiny_run import build_trainer, make_objective, tiny_config


def weights(trainer):
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def flat(module):
    return torch.cat([p.detach().flatten().clone() for p in module.parameters()])


def read_log(run_dir):
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def fit(tmp_path, name, dropout=0.1, objective=None, preview=None, tracker=None, **overrides):
    cfg = tiny_config(tmp_path / name, **overrides)
    trainer = build_trainer(cfg, dropout=dropout, objective=objective, preview=preview, tracker=tracker)
    trainer.fit()
    return trainer


def test_grad_accumulation_matches_one_big_batch_and_lr_follows_the_schedule(tmp_path):
    common = dict(dropout=0.0, **{"train.steps": 4, "train.ckpt_every": 100, "train.warmup_steps": 2})
    big = fit(tmp_path, "big", **common, **{"train.batch_size": 4, "train.grad_accum": 1})
    accumulated = fit(tmp_path, "acc", **common, **{"train.batch_size": 2, "train.grad_accum": 2})
    for name, value in weights(big).items():
        torch.testing.assert_close(weights(accumulated)[name], value, rtol=0, atol=1e-6)
    log = read_log(tmp_path / "acc")
    assert [r["lr"] for r in log] == pytest.approx([1e-2 * warmup_then_decay(s, 4, 2, "cosine", 0.1)
                                                    for s in range(4)])
    assert [r["loss"] for r in log] == pytest.approx([r["loss"] for r in read_log(tmp_path / "big")], abs=1e-6)
    assert all(r["samples_per_s"] > 0 and r["tokens_per_s"] > 0 and r["grad_norm"] > 0 for r in log)


def test_nonfinite_steps_are_skipped_counted_and_logged(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="reel.train")
    seen = {}
    holder = {}
    inner = make_objective(nan_steps={4, 5})

    def objective(model, batch, step):
        seen.setdefault(step, (flat(model.module), flat(holder["trainer"].ema.module)))
        return inner(model, batch, step)

    cfg = tiny_config(tmp_path / "nan", **{"train.steps": 7, "train.max_nonfinite_in_a_row": 3})
    trainer = holder["trainer"] = build_trainer(cfg, objective=objective)
    state = trainer.fit()
    for before, after in zip(seen[4], seen[6]):  # steps 4 and 5 changed neither weights nor EMA
        assert torch.equal(before, after)
    assert not torch.equal(seen[3][0], seen[4][0])
    log = {r["step"]: r for r in read_log(tmp_path / "nan")}
    assert log[4]["nonfinite"] and log[4]["loss"] is None and log[5]["nonfinite"] and not log[6]["nonfinite"]
    assert log[7]["nonfinite_steps"] == 2 and log[7]["skipped_steps"] == 2
    assert (state.nonfinite_steps, state.skipped_steps, state.nonfinite_in_a_row) == (2, 2, 0)
    assert "step 4: loss not finite" in caplog.text


def test_too_many_nonfinite_steps_in_a_row_stop_the_run(tmp_path):
    cfg = tiny_config(tmp_path / "diverged", **{"train.steps": 9, "train.max_nonfinite_in_a_row": 3})
    trainer = build_trainer(cfg, objective=make_objective(nan_steps={2, 4, 5}, inf_grad_steps={6}))
    with pytest.raises(ReelError, match=r"not finite for 3 steps in a row \(last at step 6\); lower train.lr"):
        trainer.fit()


@pytest.mark.parametrize("stage", [0, 2])
def test_an_infinite_gradient_leaves_the_engine_as_clean_as_a_nan_loss(tmp_path, stage):
    """Both skip step 3 without an update; any state left behind would make the runs differ."""
    overrides = {"train.steps": 5, "train.ckpt_every": 100, "train.zero_stage": stage}
    nan = fit(tmp_path, "nan", objective=make_objective(nan_steps={3}), **overrides)
    inf = fit(tmp_path, "inf", objective=make_objective(inf_grad_steps={3}), **overrides)
    assert read_log(tmp_path / "inf")[2]["nonfinite"] and read_log(tmp_path / "inf")[2]["grad_norm"] is None
    for name, value in weights(nan).items():
        assert torch.equal(weights(inf)[name], value), name


def test_a_nonfinite_micro_batch_is_dropped_and_the_rest_still_update(tmp_path):
    overrides = {"train.steps": 4, "train.batch_size": 2, "train.grad_accum": 2, "train.ckpt_every": 100}
    fit(tmp_path, "micro", objective=make_objective(nan_calls={6}), **overrides)  # step 3, second micro batch
    record = read_log(tmp_path / "micro")[2]
    assert record["nonfinite"] and record["loss"] is not None and record["grad_norm"] is not None
    assert record["skipped_steps"] == 0


def test_checkpoints_are_pruned_and_unfinished_writes_cleaned(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="reel.train")
    overrides = {"train.steps": 8, "train.ckpt_every": 2, "train.keep_last": 2}
    fit(tmp_path, "run", **overrides)
    ckpts = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["step_0000006", "step_0000008"]
    manifest = json.loads((ckpts / "step_0000008" / MANIFEST).read_text())
    assert {"model.safetensors", "ema.safetensors", "trainer_state.json", "config.yaml",
            "ranks/rank_00000.json"} <= set(manifest["files"])
    # a crash during a later save leaves a temporary folder: never used, removed on the next start
    leftover = ckpts / ".tmp-step_0000010"
    shutil.copytree(ckpts / "step_0000008", leftover)
    (leftover / "junk").write_text("half written")
    fit(tmp_path, "run", **{**overrides, "train.steps": 10, "train.resume": "latest"})
    assert "resumed from" in caplog.text and "step_0000008" in caplog.text
    assert sorted(p.name for p in ckpts.iterdir()) == ["step_0000008", "step_0000010"]
    # starting afresh in the same folder sets the old timeline aside instead of mixing with it
    fit(tmp_path, "run", **{**overrides, "train.steps": 2})
    assert sorted(p.name for p in ckpts.iterdir()) == ["abandoned-step_0000008", "abandoned-step_0000010",
                                                       "step_0000002"]


def test_damaged_latest_falls_back_and_named_damaged_path_is_an_error(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="reel.train")
    overrides = {"train.steps": 9, "train.ckpt_every": 3}
    reference = fit(tmp_path, "reference", **overrides)
    fit(tmp_path, "run", **overrides)
    ckpts = tmp_path / "run" / "checkpoints"
    (ckpts / "step_0000009" / MANIFEST).unlink()  # killed between rename and marker
    with open(ckpts / "step_0000006" / "ema.safetensors", "r+b") as f:  # bit rot
        f.truncate(100)

    resumed = fit(tmp_path, "run", **overrides, **{"train.resume": "latest"})
    assert f"{ckpts / 'step_0000009'} is damaged: missing {MANIFEST}" in caplog.text
    assert f"{ckpts / 'step_0000006'} is damaged: size mismatch in ema.safetensors" in caplog.text
    assert f"falling back to {ckpts / 'step_0000003'}" in caplog.text
    for name, value in weights(reference).items():  # and the rerun from step 3 lands on the same weights
        assert torch.equal(weights(resumed)[name], value)
    assert sorted(p.name for p in ckpts.iterdir()) == ["abandoned-step_0000006", "abandoned-step_0000009",
                                                       "step_0000003", "step_0000006", "step_0000009"]

    with open(ckpts / "step_0000003" / "model.safetensors", "r+b") as f:
        f.seek(200)
        f.write(b"\x00\x01\x02")
    with pytest.raises(ReelError, match=r"step_0000003 is damaged: sha256 mismatch in model.safetensors"):
        fit(tmp_path, "run", **overrides, **{"train.resume": str(ckpts / "step_0000003")})


def test_resume_latest_without_checkpoints_starts_fresh(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="reel.train")
    state = fit(tmp_path, "fresh", **{"train.steps": 2, "train.resume": "latest"}).state
    assert state.step == 2 and "no checkpoint in" in caplog.text and "starting fresh" in caplog.text


class RecordingTracker:
    def __init__(self):
        self.images, self.videos, self.metrics = [], [], []

    def log(self, metrics, step=None):
        self.metrics.append((step, metrics))

    def log_image(self, key, path, step=None):
        self.images.append((step, key))

    def log_video(self, key, path, step=None):
        self.videos.append((step, key))

    def finish(self):
        pass


def test_previews_get_the_ema_and_do_not_disturb_training(tmp_path):
    calls = []

    def preview(module, step, out_dir):
        calls.append((step, module.training, torch.randn(3)))  # draws random numbers on purpose
        (out_dir / "sample.png").write_bytes(b"png")
        (out_dir / "sample.mp4").write_bytes(b"mp4")
        return [out_dir / "sample.png", out_dir / "sample.mp4"]

    overrides = {"train.steps": 4, "train.preview_every": 2, "train.ckpt_every": 100}
    tracker = RecordingTracker()
    with_preview = fit(tmp_path, "preview", preview=preview, tracker=tracker, **overrides)
    without = fit(tmp_path, "plain", **overrides)
    assert [(s, training) for s, training, _ in calls] == [(2, False), (4, False)]
    assert tracker.images == [(2, "preview/sample"), (4, "preview/sample")] and len(tracker.videos) == 2
    assert [step for step, _ in tracker.metrics] == [1, 2, 3, 4] and "train/loss" in tracker.metrics[0][1]
    assert (tmp_path / "preview" / "previews" / "step_0000002" / "sample.png").is_file()
    for name, value in weights(without).items():
        assert torch.equal(weights(with_preview)[name], value)


def test_load_training_checkpoint_returns_ema_and_state(tmp_path):
    trainer = fit(tmp_path, "export", **{"train.steps": 4, "train.ckpt_every": 2})
    ckpt = load_training_checkpoint(tmp_path / "export")  # a run folder: its newest good checkpoint
    assert ckpt.step == 4 and ckpt.path.name == "step_0000004"
    assert ckpt.trainer_state["counters"]["step"] == 4 and ckpt.config.train.steps == 4
    for name, value in trainer.ema.state_dict().items():
        assert torch.equal(ckpt.ema[name], value)
    for name, value in weights(trainer).items():
        assert torch.equal(ckpt.model_state_dict()[name], value)
    assert load_training_checkpoint(tmp_path / "export" / "checkpoints" / "step_0000002").step == 2


def test_bf16_runs_the_objective_under_autocast_with_fp32_weights(tmp_path):
    dtypes = []
    inner = make_objective()

    def objective(model, batch, step):
        dtypes.append(model(batch["x"]).dtype)
        return inner(model, batch, step)

    trainer = fit(tmp_path, "bf16", objective=objective, **{"train.steps": 2, "train.precision": "bf16"})
    assert dtypes == [torch.bfloat16, torch.bfloat16]
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    assert all(v.dtype == torch.float32 for v in trainer.ema.state_dict().values())


def test_zero3_gathers_weights_for_ema_and_checkpoints_and_resumes_from_a_path(tmp_path):
    overrides = {"train.steps": 4, "train.ckpt_every": 2}
    plain = fit(tmp_path, "stage0", **overrides)
    fit(tmp_path, "stage3", **overrides, **{"train.zero_stage": 3})
    model3 = load_training_checkpoint(tmp_path / "stage3")
    for name, value in weights(plain).items():  # same math, other reduction order
        torch.testing.assert_close(model3.model_state_dict()[name], value, rtol=0, atol=1e-6)
        torch.testing.assert_close(model3.ema[name], plain.ema.state_dict()[name], rtol=0, atol=1e-6)

    step2 = tmp_path / "stage3" / "checkpoints" / "step_0000002"
    fit(tmp_path, "stage3_again", **overrides, **{"train.zero_stage": 3, "train.resume": str(step2)})
    again = load_training_checkpoint(tmp_path / "stage3_again")
    assert again.step == 4
    for name, value in model3.model_state_dict().items():
        assert torch.equal(again.model_state_dict()[name], value)
        assert torch.equal(again.ema[name], model3.ema[name])


class ObjectiveWithItsOwnOptimizer:
    """Like a GAN objective: an auxiliary net trained inside the objective shapes the loss."""

    def __init__(self):
        torch.manual_seed(11)
        self.critic = torch.nn.Linear(4, 1)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=0.05)

    def __call__(self, model, batch, step):
        out = model(batch["x"])
        critic_loss = self.critic(out.detach()).pow(2).mean()
        self.critic_opt.zero_grad()
        critic_loss.backward()
        self.critic_opt.step()
        loss = ((out - batch["y"]) ** 2).mean() + 0.1 * self.critic(out).mean()
        return loss, {"critic": critic_loss.detach()}

    def state_dict(self):
        return {"critic": self.critic.state_dict(), "critic_opt": self.critic_opt.state_dict()}

    def load_state_dict(self, state):
        self.critic.load_state_dict(state["critic"])
        self.critic_opt.load_state_dict(state["critic_opt"])


def test_an_objective_with_state_resumes_bitwise(tmp_path):
    overrides = {"train.steps": 4, "train.ckpt_every": 2}
    straight = fit(tmp_path, "straight", objective=ObjectiveWithItsOwnOptimizer(), **overrides)
    step2 = tmp_path / "straight" / "checkpoints" / "step_0000002"
    assert (step2 / "objective.pt").is_file()
    resumed = fit(tmp_path, "resumed", objective=ObjectiveWithItsOwnOptimizer(),
                  **overrides, **{"train.resume": str(step2)})
    for name, value in weights(straight).items():
        assert torch.equal(weights(resumed)[name], value), name
