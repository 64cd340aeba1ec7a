"""A lighter decoder for the same latents: reel.autoencoders.prune and same_latent_space."""
import pytest
import torch

from ae_helpers import build, clip, preset
from reel.autoencoders import load_autoencoder, save_autoencoder
from reel.autoencoders.checkpoint import same_latent_space
from reel.autoencoders.prune import decoder_layer_keys, drop_decoder_blocks
from reel.errors import ReelError

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def deep():
    """The tiny preset with two decoder blocks at 16x16 (stage 1) and two at the lowest resolution."""
    model = build(preset("dc-ae-v-tiny", decoder_depth_list=[1, 2, 1, 2]))
    with torch.no_grad():
        for p in model.parameters():  # random norms, so every block changes what passes through it
            p.add_(torch.randn_like(p) * 0.05)
    return model


def test_layer_keys_follow_the_decoder_order():
    assert decoder_layer_keys([1, 2, 0]) == [("up", 2), ("block", 1, 0), ("block", 1, 1), ("up", 1),
                                             ("block", 0, 0)]


def test_dropping_blocks_whose_branch_is_zero_leaves_the_decoder_unchanged(deep):
    model = build(preset("dc-ae-v-tiny", decoder_depth_list=[1, 2, 1, 2]))
    model.load_state_dict(deep.state_dict())
    layers = model.decoder.layers  # stage 3: blocks 0, 1, up 2; stage 2: block 3, up 4; stage 1: blocks 5, 6, up 7; ...
    with torch.no_grad():
        for block in (layers[1].attention.norm, layers[1].local.norm, layers[6].norm):  # last block of 3 and 1
            block.weight.zero_()
            block.bias.zero_()
    pruned, cfg = drop_decoder_blocks(model, [1, 1, 1, 1], "tiny-light")
    assert cfg["name"] == "tiny-light" and cfg["arch"]["decoder_depth_list"] == [1, 1, 1, 1]
    assert len(pruned.decoder.layers) == len(model.decoder.layers) - 2
    x = clip(9)
    with torch.no_grad():
        z = model.encode(x)
        assert torch.equal(pruned.encode(x), z)  # the encoder and the latent statistics are the source's
        assert torch.equal(pruned.decode(z), model.decode(z))  # x + 0 == x: the kept blocks are the right ones
        other, _ = drop_decoder_blocks(deep, [1, 1, 1, 1], "tiny-light")  # the same cut of blocks that do work
        assert not torch.allclose(other.decode(z), deep.decode(z), atol=1e-3)


def test_more_blocks_than_the_decoder_has_is_an_error(deep):
    with pytest.raises(ReelError, match=r"decoder_depth_list=\[1, 3, 1, 1\]: .* \[1, 2, 1, 2\]"):
        drop_decoder_blocks(deep, [1, 3, 1, 1], "x")
    with pytest.raises(ReelError, match="decoder_depth_list=\\[1, 1\\]"):
        drop_decoder_blocks(deep, [1, 1], "x")


def test_same_latent_space_compares_the_encoder_and_statistics_in_value(deep, tmp_path):
    cfg = preset("dc-ae-v-tiny", decoder_depth_list=[1, 2, 1, 2])
    save_autoencoder(deep, tmp_path / "fp32", cfg, dtype=torch.float32)
    save_autoencoder(deep, tmp_path / "fp16", cfg, dtype=torch.float16)
    pruned, pruned_cfg = drop_decoder_blocks(load_autoencoder(tmp_path / "fp16"), [0, 1, 0, 1], "light")
    save_autoencoder(pruned, tmp_path / "light", pruned_cfg, dtype=torch.float32)
    assert same_latent_space(tmp_path / "fp16", tmp_path / "light")  # fp16 weights, widened to fp32: equal
    assert not same_latent_space(tmp_path / "fp32", tmp_path / "fp16")  # rounding to fp16 moved the encoder
    restats = load_autoencoder(tmp_path / "light")
    restats.set_latent_stats(torch.zeros(4), torch.full((4,), 2.0))
    save_autoencoder(restats, tmp_path / "restats", pruned_cfg, dtype=torch.float32)
    assert not same_latent_space(tmp_path / "light", tmp_path / "restats")


def test_a_pruned_decoder_learns_to_draw_what_the_teachers_decoder_draws(deep):
    from omegaconf import OmegaConf

    from reel.config.schema import AutoencoderLossConfig
    from reel.train.autoencoder_objective import AutoencoderObjective

    torch.manual_seed(0)
    student, _ = drop_decoder_blocks(deep, [0, 1, 0, 1], "light")
    student.train().encoder.requires_grad_(False)
    objective = AutoencoderObjective(OmegaConf.structured(AutoencoderLossConfig), decoder_teacher=deep)
    with torch.no_grad():
        latents = deep.encode(clip(9, batch=4)) + 0.3 * torch.randn(4, 4, 3, 4, 4)  # imperfect, as sampled
    optimizer = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for step in range(40):
        loss, metrics = objective(student, {"latents": latents}, step)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], losses
    with pytest.raises(ReelError, match="train.ae.decoder_teacher=DIR"):
        AutoencoderObjective(OmegaConf.structured(AutoencoderLossConfig))(student, {"latents": latents}, 0)
