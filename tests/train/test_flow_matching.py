"""Flow matching: the path, the time distribution, caption dropout, the loss, and Euler on straight paths."""
import pytest
import torch

from reel.config.schema import FlowMatchingConfig
from reel.models.text_encoder import TextEmbeddings
from reel.sample.guidance import guided_velocity
from reel.sample.latents import initial_noise, sample_latents
from reel.sample.solvers import euler
from reel.sample.timesteps import sampling_times, shift_time
from reel.train.flow_matching import Conditioner, FlowMatchingObjective, interpolate, sample_training_times

SHAPE = (3, 4, 2, 5, 5)


def test_path_endpoints_and_velocity():
    x0, noise = torch.randn(SHAPE), torch.randn(SHAPE)
    assert torch.equal(interpolate(x0, noise, torch.zeros(3)), x0)
    assert torch.equal(interpolate(x0, noise, torch.ones(3)), noise)
    t, dt = torch.full((3,), 0.3), 1e-3
    slope = (interpolate(x0, noise, t + dt) - interpolate(x0, noise, t)) / dt
    torch.testing.assert_close(slope, noise - x0, atol=1e-2, rtol=0)


def test_training_times_are_logit_normal_then_shifted():
    torch.manual_seed(0)
    t = sample_training_times(20000, 0.0, 1.0, 1.0, torch.device("cpu"))
    assert 0 < t.min() and t.max() < 1 and abs(t.median().item() - 0.5) < 0.02
    torch.manual_seed(0)
    shifted = sample_training_times(20000, 0.0, 1.0, 3.0, torch.device("cpu"))
    torch.testing.assert_close(shifted, 3 * t / (1 + 2 * t))
    assert shifted.median() > 0.7  # shift > 1 trains more near noise
    assert torch.equal(shift_time(t, 1.0), t)


def test_sampling_times_run_from_noise_to_data():
    times = sampling_times(4, shift=3.0)
    assert times[0] == 1 and times[-1] == 0 and len(times) == 5 and bool((times.diff() < 0).all())
    with pytest.raises(ValueError):
        sampling_times(0)


def _objective(dropout: float) -> FlowMatchingObjective:
    null = TextEmbeddings(torch.full((1, 6, 8), -7.0), torch.tensor([[True, False, False, False, False, False]]),
                          torch.zeros(1, 8))
    return FlowMatchingObjective(FlowMatchingConfig(caption_dropout=dropout), Conditioner(None, None), null)


@pytest.mark.parametrize("dropout", [0.0, 1.0])
def test_caption_dropout_swaps_in_the_empty_prompt(dropout):
    text = TextEmbeddings(torch.randn(5, 6, 8), torch.ones(5, 6, dtype=torch.bool), torch.zeros(5, 8))
    emb, mask = _objective(dropout).drop_captions(text)
    if dropout == 0.0:
        assert torch.equal(emb, text.embeddings) and torch.equal(mask, text.mask)
    else:
        assert bool((emb == -7).all()) and mask.sum().item() == 5


def test_caption_dropout_rate():
    torch.manual_seed(0)
    text = TextEmbeddings(torch.randn(4000, 2, 3), torch.ones(4000, 2, dtype=torch.bool), torch.zeros(4000, 3))
    null = TextEmbeddings(torch.zeros(1, 2, 3), torch.zeros(1, 2, dtype=torch.bool), torch.zeros(1, 3))
    objective = FlowMatchingObjective(FlowMatchingConfig(caption_dropout=0.1), Conditioner(None, None), null)
    emb, _ = objective.drop_captions(text)
    assert abs((emb.abs().sum((1, 2)) == 0).float().mean().item() - 0.1) < 0.02


def _latent_batch(x0: torch.Tensor) -> dict:
    return {"latents": x0, "text_emb": torch.randn(x0.shape[0], 6, 8), "text_mask": torch.ones(x0.shape[0], 6).bool()}


def test_loss_is_zero_for_the_true_velocity_and_large_for_none():
    torch.manual_seed(0)
    x0 = torch.randn(SHAPE)

    def oracle(x_t, t, emb, mask):  # knows x0: v = (x_t - x0) / t = noise - x0
        return (x_t - x0) / t.view(-1, 1, 1, 1, 1)

    loss, metrics = _objective(0.1)(oracle, _latent_batch(x0), step=1)
    assert loss.item() < 1e-8
    assert metrics["samples"] == 3 and metrics["tokens"] == 3 * 2 * 5 * 5
    zero, _ = _objective(0.1)(lambda x_t, t, e, m: torch.zeros_like(x_t), _latent_batch(x0), step=1)
    assert 1.5 < zero.item() < 2.5  # E|noise - x0|^2 = 2 for unit-variance data


def test_euler_lands_on_the_data_for_a_straight_flow():
    x0 = torch.randn(SHAPE)
    noise = initial_noise(SHAPE[1:], [0, 1, 2])

    def velocity(x, t):
        return (x - x0) / t if t.item() > 0 else torch.zeros_like(x)

    out = euler(velocity, noise, sampling_times(3, shift=2.0))
    torch.testing.assert_close(out, x0, atol=1e-5, rtol=0)


def test_noise_depends_only_on_the_seed():
    a = initial_noise((2, 3), [5, 6])
    assert torch.equal(a[1], initial_noise((2, 3), [6])[0]) and not torch.equal(a[0], a[1])


def test_guidance_combines_conditional_and_negative_in_one_batch():
    calls = []

    def model(x, t, emb, mask):
        calls.append(x.shape[0])
        return emb.mean(dim=(1, 2)).view(-1, 1) * torch.ones_like(x)

    cond, neg = torch.full((2, 3, 4), 2.0), torch.full((1, 3, 4), 1.0)
    x = torch.zeros(2, 5)
    guided = guided_velocity(model, cond, None, neg, None, guidance=3.0)(x, torch.tensor([0.5]))
    assert calls == [4]
    torch.testing.assert_close(guided, torch.full_like(x, 1.0 + 3.0 * (2.0 - 1.0)))
    plain = guided_velocity(model, cond, None, neg, None, guidance=1.0)(x, torch.tensor([0.5]))
    assert calls[-1] == 2 and torch.equal(plain, torch.full_like(x, 2.0))


def test_sample_latents_is_deterministic_per_seed():
    from tests.models.dit_helpers import TEXT_DIM, tiny_dit

    model = tiny_dit().eval()
    text, neg = torch.randn(2, 6, TEXT_DIM), torch.randn(1, 6, TEXT_DIM)
    runs = [sample_latents(model, text, None, neg, None, initial_noise((4, 3, 4, 4), [0, 1]), 3, 2.0, 2.0)
            for _ in range(2)]
    assert torch.equal(runs[0], runs[1]) and runs[0].shape == (2, 4, 3, 4, 4)


def test_image_conditioned_clips_keep_their_first_frame_clean_and_out_of_the_loss():
    torch.manual_seed(0)
    x0 = torch.randn(SHAPE)  # 2 latent frames
    null = TextEmbeddings(torch.zeros(1, 6, 8), torch.zeros(1, 6, dtype=torch.bool), torch.zeros(1, 8))
    objective = FlowMatchingObjective(FlowMatchingConfig(caption_dropout=0.0, first_frame_prob=1.0),
                                      Conditioner(None, None), null)
    seen = {}

    def model(x_t, t, emb, mask):  # exact on frame 1, wildly wrong on frame 0
        seen["x_t"], seen["t"] = x_t, t
        v = (x_t - x0) / (t[:, 1] if t.dim() == 2 else t).view(-1, 1, 1, 1, 1)
        v[:, :, 0] = 1e3
        return v

    loss, _ = objective(model, _latent_batch(x0), step=1)
    assert seen["t"].shape == (3, 2) and bool((seen["t"][:, 0] == 0).all()) and bool((seen["t"][:, 1] > 0).all())
    assert torch.equal(seen["x_t"][:, :, 0], x0[:, :, 0])  # the conditioning frame is the clean latent
    assert loss.item() < 1e-8  # frame 0 is not scored
    text_to_video = FlowMatchingObjective(FlowMatchingConfig(caption_dropout=0.0), Conditioner(None, None), null)
    assert text_to_video(model, _latent_batch(x0), step=1)[0].item() > 1e3


class ChunkedOracle:
    """A block-causal stand-in (`causal_chunk` frame groups a chunk) that knows x0: exact per frame, from each
    frame's own time, so the loss is zero only if x_t was built frame by frame with the times it was given."""

    def __init__(self, x0: torch.Tensor, causal_chunk: int):
        self.x0, self.causal_chunk, self.seen = x0, causal_chunk, {}

    def __call__(self, x_t, t, emb, mask):
        self.seen["x_t"], self.seen["t"] = x_t, t
        frame_t = t[:, None, :, None, None]
        v = (x_t - self.x0) / frame_t.clamp_min(1e-12)
        return torch.where(frame_t > 0, v, torch.full_like(v, 1e3))


def test_chunk_times_give_each_causal_chunk_its_own_time():
    torch.manual_seed(0)
    x0 = torch.randn(4, 3, 5, 2, 2)  # 5 latent frames: chunks of 2, 2 and 1
    null = TextEmbeddings(torch.zeros(1, 6, 8), torch.zeros(1, 6, dtype=torch.bool), torch.zeros(1, 8))
    objective = FlowMatchingObjective(FlowMatchingConfig(caption_dropout=0.0, chunk_times=True),
                                      Conditioner(None, None), null)
    oracle = ChunkedOracle(x0, causal_chunk=2)
    loss, _ = objective(oracle, _latent_batch(x0), step=1)
    t = oracle.seen["t"]
    assert t.shape == (4, 5) and torch.equal(t[:, 0], t[:, 1]) and torch.equal(t[:, 2], t[:, 3])
    assert bool((t[:, 0] != t[:, 2]).all() and (t[:, 2] != t[:, 4]).all())  # independent across chunks
    assert loss.item() < 1e-8  # x_t = (1 - t) x0 + t noise with every frame's own t

    # with the first frame clean (image-to-video): it overrides group 0 only; the rest of chunk 0 keeps its time
    objective.cfg.first_frame_prob = 1.0
    loss, _ = objective(oracle, _latent_batch(x0), step=1)
    t = oracle.seen["t"]
    assert bool((t[:, 0] == 0).all() and (t[:, 1] > 0).all()) and torch.equal(t[:, 2], t[:, 3])
    assert torch.equal(oracle.seen["x_t"][:, :, 0], x0[:, :, 0]) and loss.item() < 1e-8  # frame 0 not scored

    # the logit-normal distribution, drawn independently per chunk
    big = torch.randn(4000, 1, 4, 1, 1)
    objective = FlowMatchingObjective(FlowMatchingConfig(caption_dropout=0.0, chunk_times=True),
                                      Conditioner(None, None), null)
    oracle = ChunkedOracle(big, causal_chunk=2)
    objective(oracle, {"latents": big, "text_emb": torch.randn(4000, 6, 8), "text_mask": torch.ones(4000, 6).bool()}, 1)
    chunk0, chunk1 = oracle.seen["t"][:, 0], oracle.seen["t"][:, 2]
    assert abs(chunk0.median().item() - 0.5) < 0.03 and abs(chunk1.median().item() - 0.5) < 0.03
    assert abs(torch.corrcoef(torch.stack([chunk0, chunk1]))[0, 1].item()) < 0.05
    with pytest.raises(ValueError, match="block-causal"):  # a model that attends over the whole clip
        objective(lambda x_t, t, e, m: x_t, _latent_batch(x0), step=1)


def test_chunk_times_need_a_block_causal_model_config():
    from reel.config.compose import load_config
    from reel.errors import ReelError

    with pytest.raises(ReelError, match="train.fm.chunk_times=true: needs a block-causal model"):
        load_config(["train.fm.chunk_times=true"])
    cfg, _ = load_config(["train.fm.chunk_times=true", "model.causal_chunk=1"])
    assert cfg.train.fm.chunk_times


def test_clean_context_keeps_whole_leading_chunks_clean_and_out_of_the_loss():
    torch.manual_seed(0)
    x0 = torch.randn(64, 3, 5, 2, 2)  # 5 latent frames: chunks of 2, 2 and 1
    null = TextEmbeddings(torch.zeros(1, 6, 8), torch.zeros(1, 6, dtype=torch.bool), torch.zeros(1, 8))
    objective = FlowMatchingObjective(FlowMatchingConfig(caption_dropout=0.0, clean_context_prob=0.5),
                                      Conditioner(None, None), null)
    oracle = ChunkedOracle(x0, causal_chunk=2)
    loss, _ = objective(oracle, _latent_batch(x0), step=1)
    t = oracle.seen["t"]
    prefixes = (t == 0).sum(dim=1)
    assert set(prefixes.tolist()) == {0, 2, 4}  # none, or one or two whole chunks, never the last
    for b, k in enumerate(prefixes.tolist()):
        assert bool((t[b, :k] == 0).all() and (t[b, k:] == t[b, k]).all() and t[b, k] > 0)
        assert torch.equal(oracle.seen["x_t"][b, :, :k], x0[b, :, :k])  # the context is the clean latent
    assert 16 < int((prefixes > 0).sum()) < 48
    assert loss.item() < 1e-8  # the clean chunks (where the oracle is wildly wrong) are not scored
    with pytest.raises(ValueError, match="clean_context_prob needs a block-causal model"):
        objective(lambda *a: None, _latent_batch(x0), step=1)


def test_a_turning_clip_keeps_its_context_clean_whatever_clean_context_prob_draws():
    """data.shapes.turn_prob: the latent frames before the turn are always clean context (the caption names the
    motion after it), from the encoded folder's context_latent_frames or from raw clips' turn_frame labels."""
    torch.manual_seed(0)
    x0 = torch.randn(6, 3, 5, 2, 2)
    null = TextEmbeddings(torch.zeros(1, 6, 8), torch.zeros(1, 6, dtype=torch.bool), torch.zeros(1, 8))
    objective = FlowMatchingObjective(FlowMatchingConfig(caption_dropout=0.0), Conditioner(None, None), null)
    oracle = ChunkedOracle(x0, causal_chunk=1)
    context = torch.tensor([0, 2, 3, 4, 0, 2])
    loss, _ = objective(oracle, {**_latent_batch(x0), "context_latent_frames": context}, step=1)
    assert torch.equal((oracle.seen["t"] == 0).sum(dim=1), context) and loss.item() < 1e-8

    class FakeAutoencoder:
        temporal_factor = 4
    raw = FlowMatchingObjective(FlowMatchingConfig(caption_dropout=0.0), Conditioner(FakeAutoencoder(), None), null)
    assert torch.equal(raw.turn_context({"labels": {"turn_frame": torch.tensor([0, 4, 8, 12])}}),
                       torch.tensor([0, 2, 3, 4]))
    assert raw.turn_context({"labels": {"direction": ["up"]}}) is None  # the scored world: no turns

    with pytest.raises(ValueError, match="not on a causal chunk boundary"):
        objective(ChunkedOracle(x0, causal_chunk=2), {**_latent_batch(x0), "context_latent_frames": context}, step=1)
    with pytest.raises(ValueError, match="data.shapes.turn_prob needs a block-causal model"):
        objective(lambda *a: None, {**_latent_batch(x0), "context_latent_frames": context}, step=1)
