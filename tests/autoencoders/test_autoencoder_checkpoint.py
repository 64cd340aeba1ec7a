"""Checkpoint folders (safetensors + config.yaml) and latent statistics."""
import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file, save_file

from ae_helpers import build, clip, preset
from reel.autoencoders import (autoencoder_from_config, load_autoencoder, read_autoencoder_config, read_extra_info,
                               save_autoencoder)
from reel.errors import ReelError


@pytest.fixture(scope="module")
def trained_looking(tiny_cfg):
    model = build(tiny_cfg, seed=3)
    model.set_latent_stats(torch.linspace(-0.5, 0.5, 4), torch.linspace(0.5, 2.0, 4))
    return model


@torch.no_grad()
def test_fp32_round_trip_is_exact(tmp_path, tiny_cfg, trained_looking):
    folder = save_autoencoder(trained_looking, tmp_path / "ae", tiny_cfg, dtype=torch.float32,
                              extra_info={"step": 7})
    assert sorted(p.name for p in folder.iterdir()) == ["config.yaml", "model.safetensors"]
    loaded = load_autoencoder(folder)
    for (name, a), (_, b) in zip(trained_looking.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    x = clip(5, size=16)
    assert torch.equal(loaded.encode(x), trained_looking.encode(x))
    assert read_extra_info(folder) == {"step": 7}
    stored = read_autoencoder_config(folder)
    assert stored.name == "dc-ae-v-tiny" and stored.kind == "dc_ae_v"
    assert stored.arch.width_list == [8, 8, 16, 32] and stored.arch.up_kernel == 1  # resolved defaults too


@torch.no_grad()
def test_fp16_round_trip_is_within_half_precision(tmp_path, tiny_cfg, trained_looking):
    folder = save_autoencoder(trained_looking, tmp_path / "ae16", tiny_cfg)  # fp16 by default
    loaded = load_autoencoder(folder)
    for (name, a), (_, b) in zip(trained_looking.state_dict().items(), loaded.state_dict().items()):
        assert b.dtype == torch.float32
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-4), name
    assert torch.equal(loaded.latent_std, trained_looking.latent_std)  # stats stay fp32
    x = clip(5, size=16)
    z, z16 = trained_looking.encode(x), loaded.encode(x)
    assert (z16 - z).abs().max() < 1e-2 * z.abs().max()


def test_saving_replaces_a_folder_atomically(tmp_path, tiny_cfg, trained_looking):
    folder = tmp_path / "ae"
    save_autoencoder(trained_looking, folder, tiny_cfg)
    save_autoencoder(trained_looking, folder, tiny_cfg, dtype=torch.float32)
    assert [p.name for p in tmp_path.iterdir()] == ["ae"]  # no temporary or old folder left behind
    assert load_autoencoder(folder).encoder.stem.weight.dtype == torch.float32


def test_saving_with_a_config_that_does_not_describe_the_model(tmp_path, trained_looking):
    with pytest.raises(ReelError, match="does not describe"):
        save_autoencoder(trained_looking, tmp_path / "ae", preset("dc-ae-v-tiny", depth_list=[0, 1, 1, 1]))


def test_load_errors_name_the_folder_file_or_key(tmp_path, tiny_cfg, trained_looking):
    with pytest.raises(ReelError, match="no such folder"):
        load_autoencoder(tmp_path / "missing")
    folder = save_autoencoder(trained_looking, tmp_path / "ae", tiny_cfg)
    (folder / "model.safetensors").rename(tmp_path / "weights")
    with pytest.raises(ReelError, match="model.safetensors is missing"):
        load_autoencoder(folder)
    (tmp_path / "weights").rename(folder / "model.safetensors")

    config = OmegaConf.load(folder / "config.yaml")
    config.arch.width_list = [8, 16, 16, 32]
    OmegaConf.save(config, folder / "config.yaml")
    with pytest.raises(ReelError, match=r"encoder\.layers\.1\.conv\.weight has shape \[2, 8, 3, 3, 3\] in the file"):
        load_autoencoder(folder)

    config.arch.width_list = [8, 8, 16, 32]
    config.arch.depth_list = [1, 1, 1, 2]
    OmegaConf.save(config, folder / "config.yaml")
    with pytest.raises(ReelError, match=r"encoder\.layers\.7\.\S+ is missing from the file"):
        load_autoencoder(folder)

    config.arch.depth_list = [1, 1, 1, 1]
    OmegaConf.save(config, folder / "config.yaml")
    tensors = load_file(folder / "model.safetensors")
    save_file({**tensors, "encoder.extra": torch.zeros(1)}, folder / "model.safetensors")
    with pytest.raises(ReelError, match="encoder.extra is not in the model"):
        load_autoencoder(folder)

    config.arch.bogus = 1
    OmegaConf.save(config, folder / "config.yaml")
    with pytest.raises(ReelError, match="autoencoder.arch.bogus=1: unknown key"):
        load_autoencoder(folder)

    (folder / "config.yaml").unlink()
    with pytest.raises(ReelError, match="config.yaml is missing"):
        load_autoencoder(folder)


def test_a_damaged_weights_file_is_a_user_error(tmp_path, tiny_cfg, trained_looking):
    folder = save_autoencoder(trained_looking, tmp_path / "ae", tiny_cfg)
    (folder / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ReelError, match="not a readable safetensors file"):
        load_autoencoder(folder)


def test_config_checkpoint_key_loads_and_checks_factors(tmp_path, tiny_cfg, trained_looking):
    folder = save_autoencoder(trained_looking, tmp_path / "ae", tiny_cfg, dtype=torch.float32)
    cfg = preset("dc-ae-v-tiny")
    cfg.checkpoint = str(folder)
    assert torch.equal(autoencoder_from_config(cfg).latent_mean, trained_looking.latent_mean)
    cfg.latent_channels = 8
    with pytest.raises(ReelError, match="autoencoder.latent_channels=8: the checkpoint"):
        autoencoder_from_config(cfg)


@torch.no_grad()
def test_latent_normalisation(tiny_cfg):
    model = build(tiny_cfg)
    x = clip(5, size=16)
    raw = model.encode_raw(x)
    assert torch.equal(model.encode(x), raw)  # default stats: mean 0, std 1
    mean, std = torch.tensor([0.1, -0.2, 0.3, 0.0]), torch.tensor([0.5, 1.0, 2.0, 4.0])
    model.set_latent_stats(mean, std)
    z = model.encode(x)
    assert torch.allclose(z, (raw - mean.view(1, -1, 1, 1, 1)) / std.view(1, -1, 1, 1, 1))
    assert torch.allclose(model.decode(z), model.decode_raw(raw), atol=1e-5)
    with pytest.raises(ReelError, match="positive std"):
        model.set_latent_stats(mean, torch.zeros(4))
    with pytest.raises(ReelError, match="4 values"):
        model.set_latent_stats([0.0], [1.0])


def test_identity_follows_the_latent_space_not_the_decoder(tmp_path, tiny_cfg, trained_looking):
    from reel.autoencoders.checkpoint import autoencoder_identity

    base = autoencoder_identity(save_autoencoder(trained_looking, tmp_path / "a", tiny_cfg, dtype=torch.float32))
    variant = build(tiny_cfg, seed=3)
    variant.load_state_dict(trained_looking.state_dict())
    with torch.no_grad():
        next(variant.decoder.parameters()).add_(1.0)  # a fine-tuned decoder: same latents
    assert autoencoder_identity(save_autoencoder(variant, tmp_path / "b", tiny_cfg, dtype=torch.float32)) == base
    with torch.no_grad():
        next(variant.encoder.parameters()).add_(1.0)
    assert autoencoder_identity(save_autoencoder(variant, tmp_path / "c", tiny_cfg, dtype=torch.float32)) != base
    variant.load_state_dict(trained_looking.state_dict())
    variant.set_latent_stats(torch.zeros(4), torch.ones(4))  # other normalisation: other latents
    assert autoencoder_identity(save_autoencoder(variant, tmp_path / "d", tiny_cfg, dtype=torch.float32)) != base


def test_warm_start_copies_every_matching_tensor_but_the_latent_stats(tmp_path, tiny_cfg, trained_looking):
    """train.ae.warm_start: another latent channel count keeps all but the encoder head and decoder stem."""
    from reel.autoencoders.checkpoint import warm_start

    folder = save_autoencoder(trained_looking, tmp_path / "a", tiny_cfg, dtype=torch.float32)
    wider_cfg = OmegaConf.merge(tiny_cfg, {"latent_channels": 8})
    wider = build(wider_cfg, seed=5)
    before = {k: v.clone() for k, v in wider.state_dict().items()}
    fresh = warm_start(wider, folder)
    assert fresh == ["latent_mean", "latent_std", "encoder.head.conv.weight", "encoder.head.conv.bias",
                     "decoder.stem.conv.weight"]
    source = trained_looking.state_dict()
    for name, tensor in wider.state_dict().items():
        expected = before[name] if name in fresh else source[name]
        assert torch.equal(tensor, expected), name
    assert torch.equal(wider.latent_std, torch.ones(8))  # stats belong to a latent space: not copied

    other = build(OmegaConf.merge(tiny_cfg, {"latent_channels": 8, "arch": {"width_list": [16, 16, 32, 64]}}))
    with pytest.raises(ReelError, match=r"^train.ae.warm_start=.*: only 1 of \d+ tensors match"):
        warm_start(other, folder)
    with pytest.raises(ReelError, match="train.ae.warm_start .*nope: no such folder"):
        warm_start(wider, tmp_path / "nope")
