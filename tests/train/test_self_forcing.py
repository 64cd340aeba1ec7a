"""Self-forcing causal students: the cached chunk-by-chunk rollout is inference itself, its gradients come
from the last step of each chunk only, DMD trains through it, and a teacher is made block-causal with
train.init_from and model.causal_chunk."""
import copy

import pytest
import torch
from torch import nn

from reel.cli import main
from reel.models.cache import DiTCache
from reel.models.dit_checkpoint import save_dit
from reel.models.text_encoder import TextEmbeddings
from reel.sample.few_step import causal_few_step_rollout, few_step_rollout
from reel.sample.long_video import LongVideoGenerator
from reel.sample.timesteps import sampling_times
from reel.train.distill import Teacher
from reel.train.distill_dmd import DMDObjective
from tests.models.dit_helpers import LATENT_CHANNELS, TEXT_DIM, one_thread, tiny_dit  # noqa: F401 (autouse)
from tests.train.test_distill import NULL_TEXT, fit, text_batch

LATENT_SHAPE = (LATENT_CHANNELS, 3, 4, 4)  # 3 latent frames: chunks of 2 and 1
ATTENTION = ["softmax", "linear"]  # a KV cache and a linear state
QUIET = ["logging.wandb=false", "logging.progress=false"]


def causal_dit(seed: int = 0, **overrides) -> nn.Module:
    model = tiny_dit(seed=seed, attention=ATTENTION, causal_chunk=2, **overrides)
    with torch.no_grad():  # halved weights keep the velocities moderate
        for p in model.parameters():
            p.mul_(0.5)
    return model.eval()


def noise_of(batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, *LATENT_SHAPE, generator=torch.Generator().manual_seed(seed))


def test_rolled_out_self_forcing_generation_equals_cached_chunk_by_chunk_inference():
    model = causal_dit()
    emb, mask = text_batch()
    noise, steps, shift = noise_of(), 3, 2.0
    with torch.no_grad():
        rolled = causal_few_step_rollout(model, noise, emb, mask, sampling_times(steps, shift))
        generator = LongVideoGenerator(model, None, None, window_chunks=8, sink_chunks=0)
        generator.cache = generator.new_cache()
        text = TextEmbeddings(emb, mask, emb.mean(dim=1))
        chunks = []
        for offset in range(0, LATENT_SHAPE[1], 2):
            latents = generator._denoise(noise[:, :, offset:offset + 2], offset, text, NULL_TEXT, steps, 1.0,
                                         shift, "euler", None, None)
            generator._commit(latents, offset, text, NULL_TEXT, 1.0)
            chunks.append(latents)
        inference = torch.cat(chunks, dim=2)
        whole_clip = few_step_rollout(model, noise, emb, mask, sampling_times(steps, shift))
    torch.testing.assert_close(rolled, inference, rtol=0, atol=1e-5)
    # the whole-clip rollout denoises every chunk at once, each next to noisy context: not what sampling does
    assert (whole_clip[:, :, 2:] - inference[:, :, 2:]).abs().max() > 1e-3
    torch.testing.assert_close(whole_clip[:, :, :2], inference[:, :, :2], rtol=0, atol=1e-5)  # the first chunk

    # backward simulation: chunk 0 stopped at step 0 is its x0 prediction from pure noise, x - 1 * v(x, 1)
    with torch.no_grad():
        stopped = causal_few_step_rollout(model, noise, emb, mask, sampling_times(steps, shift), stop_steps=[0, 2])
        first = noise[:, :, :2] - model(noise[:, :, :2], torch.ones(2), emb, mask)
    torch.testing.assert_close(stopped[:, :, :2], first, rtol=0, atol=1e-5)
    assert (stopped[:, :, 2:] - rolled[:, :, 2:]).abs().max() > 1e-3  # chunk 1 sees the other chunk 0
    with pytest.raises(ValueError, match="stop_steps"):
        causal_few_step_rollout(model, noise, emb, mask, sampling_times(steps, shift), stop_steps=[0])


class Recorder(nn.Module):
    """Wraps the DiT as the DeepSpeed engine does (`.module`) and records each evaluation: whether it builds a
    graph, whether its input carries one, and (for graph-building ones) its input, time and cache as they were."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.module, self.calls = model, []

    def forward(self, x, t, emb, mask, cache=None, frame_offset=None, update_cache=False, commit_frames=None):
        grad = torch.is_grad_enabled()
        snapshot = None
        if grad and not update_cache:
            snapshot = DiTCache([block.snapshot() for block in cache.blocks], cache.frames)
        self.calls.append({"grad": grad, "input_grad": x.requires_grad, "commit": update_cache,
                           "fused": commit_frames is not None, "x": x.detach().clone(), "t": t, "cache": snapshot,
                           "offset": frame_offset})
        return self.module(x, t, emb, mask, cache=cache, frame_offset=frame_offset, update_cache=update_cache,
                           commit_frames=commit_frames)


def cache_tensors(cache: DiTCache):
    for block in cache.blocks:
        for name in ("k", "v", "kv", "ksum"):
            value = getattr(block.attn, name, None)
            if value is not None:
                yield value
        if block.ffn.frames is not None:
            yield block.ffn.frames


@pytest.mark.parametrize("checkpointing", [False, True])
def test_gradients_reach_the_weights_through_the_last_step_of_each_chunk_only(checkpointing):
    emb, mask = text_batch()
    times = sampling_times(3, shift=2.0)
    recorder = Recorder(causal_dit(gradient_checkpointing=checkpointing).train())
    out = causal_few_step_rollout(recorder, noise_of(), emb, mask, times, grad_last_only=True, stop_steps=[2, 1])
    out.square().sum().backward()
    grads = {name: p.grad.clone() for name, p in recorder.module.named_parameters()}
    # chunk 0: steps 0, 1 frozen, step 2 with a graph; chunk 1 stopped at step 1: step 0 frozen, committing
    # chunk 0 in the same evaluation, then step 1; the last chunk is never committed
    assert [(c["grad"], c["commit"], c["fused"]) for c in recorder.calls] == [
        (False, False, False), (False, False, False), (True, False, False), (False, True, True), (True, False, False)]
    graph_calls = [c for c in recorder.calls if c["grad"]]
    assert not any(c["input_grad"] for c in graph_calls)  # the last step's input is a constant
    assert not any(t.requires_grad for c in graph_calls for t in cache_tensors(c["cache"]))  # so is the cache

    # the same gradient from the last evaluations alone, each from its recorded input, time and cache
    reference = causal_dit(gradient_checkpointing=False).train()
    total = 0.0
    for call in graph_calls:  # each last step goes to t = 0: the x0 prediction x - t v
        v = reference(call["x"], call["t"], emb, mask, cache=call["cache"], frame_offset=call["offset"])
        total = total + (call["x"] - call["t"][0].item() * v).square().sum()
    total.backward()
    for name, p in reference.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, rtol=1e-4, atol=1e-6, msg=name)

    # a chunk whose first evaluation has a graph gets its predecessor committed by a pass of its own first
    separate = Recorder(causal_dit().train())
    causal_few_step_rollout(separate, noise_of(), emb, mask, times, grad_last_only=True, stop_steps=[1, 0])
    assert [(c["grad"], c["commit"], c["fused"]) for c in separate.calls] == [
        (False, False, False), (True, False, False), (False, True, False), (True, False, False)]

    # with gradients through every step of each chunk they differ
    everywhere = Recorder(causal_dit(gradient_checkpointing=checkpointing).train())
    causal_few_step_rollout(everywhere, noise_of(), emb, mask, times, grad_last_only=False,
                            stop_steps=[2, 1]).square().sum().backward()
    assert [c["grad"] for c in everywhere.calls if not c["commit"]] == [True] * 5
    assert any(c["input_grad"] for c in everywhere.calls if c["grad"])
    assert max((p.grad - grads[n]).abs().max().item() for n, p in everywhere.module.named_parameters()) > 1e-4


def test_dmd_self_forcing_steps_run_and_train_the_critic(tmp_path, monkeypatch):
    import reel.train.distill_dmd as dmd

    model = causal_dit()
    rollouts = []
    original = dmd.causal_few_step_rollout

    def counted(*args, **kwargs):
        rollouts.append(kwargs.get("stop_steps"))
        return original(*args, **kwargs)

    monkeypatch.setattr(dmd, "causal_few_step_rollout", counted)
    objective = DMDObjective(Teacher(copy.deepcopy(model), NULL_TEXT, 3.0), None, LATENT_SHAPE, student_steps=2,
                             substeps=2, critic_lr=1e-3, critic_updates=1, regression_steps=1, self_forcing=True)
    before = copy.deepcopy(objective.critic.state_dict())
    trainer, losses = fit(tmp_path / "self_forcing", objective, model, **{"train.steps": 3})
    assert trainer.state.step == 3 and len(losses) == 3 and all(loss == loss for loss in losses)
    # the warm start regresses the whole cached rollout; then critic and generator rollouts, a stop per chunk
    assert rollouts[0] is None and len(rollouts) == 5 and all(len(stops) == 2 for stops in rollouts[1:])
    assert any(not torch.equal(before[n], t) for n, t in objective.critic.state_dict().items())
    student = trainer.engine.module.state_dict()
    assert any(not torch.equal(student[n], t) for n, t in model.state_dict().items())
    with pytest.raises(ValueError, match="block-causal"):
        DMDObjective(Teacher(tiny_dit(), NULL_TEXT, 1.0), None, LATENT_SHAPE, 2, 2, self_forcing=True)


@pytest.mark.parametrize("args, names", [
    (["method=dmd"], "train.distill.self_forcing=true: the teacher bundled:demo_dit is not block-causal"),
    (["method=consistency"], "train.distill.self_forcing=true: is a method=dmd option"),
])
def test_self_forcing_needs_dmd_and_a_block_causal_teacher(args, names, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["train", "distill", "teacher=bundled:demo_dit", "train.distill.self_forcing=true", *args, *QUIET])
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and names in err and "\n" not in err, err


def test_init_from_a_dit_folder_takes_causal_chunk_from_the_command_line(tmp_path):
    from reel.commands.train_dit import initial_model
    from reel.config.compose import load_config
    from reel.errors import ReelError
    from tests.models.dit_helpers import tiny_config, tiny_inputs

    base, _ = load_config(QUIET)
    base.model = tiny_config(attention=ATTENTION)
    base.sample.guidance, base.sample.steps = 2.0, 12
    teacher = tiny_dit(attention=ATTENTION).eval()
    save_dit(teacher, tmp_path / "teacher", base)

    def start(folder, *overrides):
        cfg, _ = load_config([f"train.init_from={folder}", *overrides, *QUIET])
        return initial_model(cfg, LATENT_CHANNELS, TEXT_DIM).eval(), cfg

    causal, cfg = start(tmp_path / "teacher", "model.causal_chunk=1", "train.fm.chunk_times=true")
    assert cfg.model.causal_chunk == 1 and causal.causal_chunk == 1 and cfg.model.hidden_size == 32
    assert cfg.sample.guidance == 2.0 and cfg.sample.steps == 12  # the folder's sampling defaults, unless set
    assert start(tmp_path / "teacher", "sample.guidance=3")[1].sample.guidance == 3.0
    for name, tensor in teacher.state_dict().items():
        assert torch.equal(causal.state_dict()[name], tensor), name
    latents, t, text, mask = tiny_inputs(frames=3)
    changed = latents.clone()
    changed[:, :, 2] += 1
    with torch.no_grad():  # the same weights, now blind to later frames
        torch.testing.assert_close(causal(changed, t, text, mask)[:, :, :2], causal(latents, t, text, mask)[:, :, :2],
                                   rtol=0, atol=1e-6)
        assert not torch.allclose(teacher(latents, t, text, mask)[:, :, :2], teacher(changed, t, text, mask)[:, :, :2])
    save_dit(causal, tmp_path / "causal", cfg)

    plain, cfg = start(tmp_path / "teacher")  # unset: the folder's (attends over the whole clip)
    assert cfg.model.causal_chunk is None and plain.causal_chunk is None
    with pytest.raises(ReelError, match="train.fm.chunk_times=true: the DiT .* is not block-causal"):
        start(tmp_path / "teacher", "train.fm.chunk_times=true")
    kept, cfg = start(tmp_path / "causal")  # a causal folder stays causal
    assert cfg.model.causal_chunk == 1 and kept.causal_chunk == 1


def test_init_from_gains_zero_initialised_position_embeddings(tmp_path):
    from reel.commands.train_dit import initial_model
    from reel.config.compose import load_config
    from tests.models.dit_helpers import tiny_config, tiny_inputs

    base, _ = load_config(QUIET)
    base.model = tiny_config(attention=ATTENTION)
    trained = tiny_dit(attention=ATTENTION).eval()
    save_dit(trained, tmp_path / "trained", base)
    cfg, _ = load_config([f"train.init_from={tmp_path / 'trained'}", "model.frame_embedding=true",
                          "model.spatial_embedding=true", *QUIET])
    gained = initial_model(cfg, LATENT_CHANNELS, TEXT_DIM).eval()
    assert cfg.model.frame_embedding and cfg.model.spatial_embedding and cfg.model.hidden_size == 32
    assert gained.frame_embed is not None and gained.spatial_embed is not None
    latents, t, text, mask = tiny_inputs(frames=3)
    with torch.no_grad():  # added at zero: the same model until it trains
        torch.testing.assert_close(gained(latents, t, text, mask), trained(latents, t, text, mask), rtol=0, atol=0)
