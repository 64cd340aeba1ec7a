"""diffusers autoencoder folders (AutoencoderKLWan, AutoencoderDC) loaded through load_autoencoder: the same
latents and frames as diffusers' own encode/decode, reel's attributes, streaming, and one-line errors."""
import json
import re
import shutil

import pytest
import torch
from diffusers import AutoencoderDC, AutoencoderKLWan

from ae_helpers import clip
from reel.autoencoders import autoencoder_from_config, load_autoencoder
from reel.autoencoders.checkpoint import autoencoder_identity
from reel.autoencoders.diffusers_backend import DcAutoencoder, WanAutoencoder
from reel.config.schema import AutoencoderConfig
from reel.errors import ReelError
from tests.conftest import run_reel

WAN_MEAN, WAN_STD = [0.1, -0.2, 0.3, 0.0], [1.5, 0.5, 2.0, 1.0]
DC_SCALE = 0.41
# chunk-by-chunk Wan vs the whole clip, and a prefix of the latents vs the whole: the same diffusers calls on the
# same frames, except that the 1x1x1 quant convs see shorter inputs, so they differ by float rounding only
# (measured: this model, 13-21 frames, encode <= 2.4e-7, decode <= 1.8e-6; an 8M-param Wan (base_dim 24,
# dim_mult [1, 2, 4, 4], z_dim 16) decode <= 3.7e-6)
STREAM_TOLERANCE = 1e-5


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These convolutions are tiny: a second thread only adds synchronisation (60x slower on a busy 2-core CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _stats(values):
    return torch.tensor(values).view(1, -1, 1, 1, 1)


@pytest.fixture(scope="module")
def wan_folder(tmp_path_factory):
    torch.manual_seed(0)
    vae = AutoencoderKLWan(base_dim=8, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True], latents_mean=WAN_MEAN, latents_std=WAN_STD)
    folder = tmp_path_factory.mktemp("wan_vae")
    vae.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def wan_vae(wan_folder):
    return AutoencoderKLWan.from_pretrained(wan_folder).eval()


@pytest.fixture(scope="module")
def wan(wan_folder):
    return load_autoencoder(wan_folder)


@pytest.fixture(scope="module")
def dc_folder(tmp_path_factory):
    torch.manual_seed(0)
    vae = AutoencoderDC(latent_channels=4, attention_head_dim=2, encoder_block_types=("ResBlock", "EfficientViTBlock"),
                        decoder_block_types=("ResBlock", "EfficientViTBlock"), encoder_block_out_channels=(8, 8),
                        decoder_block_out_channels=(8, 8), encoder_layers_per_block=(1, 1),
                        decoder_layers_per_block=(1, 1), encoder_qkv_multiscales=((), (5,)),
                        decoder_qkv_multiscales=((), (5,)), scaling_factor=DC_SCALE)
    folder = tmp_path_factory.mktemp("dc_ae")
    vae.save_pretrained(folder)
    return folder


def test_wan_folder_loads_with_reel_attributes(wan):
    assert isinstance(wan, WanAutoencoder) and not wan.training
    assert (wan.spatial_factor, wan.temporal_factor, wan.latent_channels) == (8, 4, 4)
    assert wan.latent_shape(17, 32, 48) == (4, 5, 4, 6)
    assert wan.latent_mean.tolist() == pytest.approx(WAN_MEAN) and wan.latent_std.tolist() == pytest.approx(WAN_STD)


@torch.no_grad()
def test_wan_encode_is_the_normalised_posterior_mean(wan, wan_vae):
    x = clip(9, size=16, batch=2)
    z = wan.encode(x)
    expected = (wan_vae.encode(x).latent_dist.mode() - _stats(WAN_MEAN)) / _stats(WAN_STD)
    assert z.shape == (2, *wan.latent_shape(9, 16, 16))
    torch.testing.assert_close(z, expected, atol=1e-6, rtol=0)


@torch.no_grad()
def test_wan_decode_is_diffusers_decode_of_the_denormalised_latents(wan, wan_vae):
    z = wan.encode(clip(9, size=16, batch=2))
    out = wan.decode(z)
    expected = wan_vae.decode(z * _stats(WAN_STD) + _stats(WAN_MEAN)).sample
    assert out.shape == (2, 3, 9, 16, 16) and out.abs().max() <= 1  # diffusers clamps Wan's frames
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


@torch.no_grad()
def test_wan_streams_chunk_by_chunk_like_the_whole_clip(wan):
    x = clip(17, size=16, batch=2, seed=4)
    z = wan.encode(x)
    encoder = wan.streaming_encoder()
    streamed = torch.cat([encoder.push(x[:, :, :3]), encoder.push(x[:, :, 3:10]), encoder.push(x[:, :, 10:]),
                          encoder.flush()], dim=2)
    assert (streamed - z).abs().max() <= STREAM_TOLERANCE
    whole = wan.decode(z)
    decoder = wan.streaming_decoder()
    pieces = [decoder.push(z[:, :, :1]), decoder.push(z[:, :, 1:1]), decoder.push(z[:, :, 1:4]),
              decoder.push(z[:, :, 4:]), decoder.flush()]
    assert [p.shape[2] for p in pieces] == [1, 0, 12, 4, 0]
    assert (torch.cat(pieces, dim=2) - whole).abs().max() <= STREAM_TOLERANCE
    assert (wan.decode(z, chunked=True) - whole).abs().max() <= STREAM_TOLERANCE
    assert (wan.encode(x, chunked=True) - z).abs().max() <= STREAM_TOLERANCE
    # causal in time: the first k latent frames decode to the first 1 + 4(k - 1) frames of the whole clip
    assert (wan.decode(z[:, :, :2]) - whole[:, :, :5]).abs().max() <= STREAM_TOLERANCE


@torch.no_grad()
def test_wan22_layout_patches_pixels_before_its_encoder(tmp_path):
    torch.manual_seed(0)  # Wan 2.2 TI2V's layout: 2x2 pixel patches, residual blocks, so 16x space
    vae = AutoencoderKLWan(base_dim=8, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1, is_residual=True,
                           patch_size=2, in_channels=12, out_channels=12, latents_mean=WAN_MEAN,
                           latents_std=WAN_STD).eval()
    vae.save_pretrained(tmp_path)
    ae = load_autoencoder(tmp_path)
    assert (ae.spatial_factor, ae.temporal_factor, ae.latent_channels) == (16, 4, 4)
    x = clip(9, size=32, batch=1)
    z = ae.encode(x)
    expected = (vae.encode(x).latent_dist.mode() - _stats(WAN_MEAN)) / _stats(WAN_STD)
    torch.testing.assert_close(z, expected, atol=1e-6, rtol=0)
    whole = ae.decode(z)
    torch.testing.assert_close(whole, vae.decode(z * _stats(WAN_STD) + _stats(WAN_MEAN)).sample, atol=1e-6, rtol=0)
    assert (ae.decode(z, chunked=True) - whole).abs().max() <= STREAM_TOLERANCE
    assert (ae.encode(x, chunked=True) - z).abs().max() <= STREAM_TOLERANCE


@torch.no_grad()
def test_wan_stream_refuses_a_clip_that_ends_mid_chunk(wan):
    encoder = wan.streaming_encoder()
    assert encoder.push(clip(7, size=16, batch=1)).shape[2] == 2  # the first frame and one chunk of 4
    with pytest.raises(ReelError, match="1 \\+ 4k frames"):
        encoder.flush()
    with pytest.raises(ReelError, match="tile_size=32"):
        wan.decode(torch.zeros(1, 4, 1, 2, 2), tile_size=32)


@torch.no_grad()
def test_dc_folder_encodes_each_frame_scaled(dc_folder):
    vae = AutoencoderDC.from_pretrained(dc_folder).eval()
    ae = load_autoencoder(dc_folder)
    assert isinstance(ae, DcAutoencoder)
    assert (ae.spatial_factor, ae.temporal_factor, ae.latent_channels) == (2, 1, 4)
    assert ae.latent_shape(3, 16, 8) == (4, 3, 8, 4)
    x = clip(3, size=16, batch=2)
    z = ae.encode(x)
    expected = torch.stack([vae.encode(x[:, :, t]).latent * DC_SCALE for t in range(3)], dim=2)
    torch.testing.assert_close(z, expected, atol=1e-6, rtol=0)
    out = ae.decode(z)
    torch.testing.assert_close(out, torch.stack([vae.decode(z[:, :, t] / DC_SCALE).sample for t in range(3)], dim=2),
                               atol=1e-5, rtol=0)
    decoder = ae.streaming_decoder()
    streamed = torch.cat([decoder.push(z[:, :, :2]), decoder.push(z[:, :, 2:]), decoder.flush()], dim=2)
    torch.testing.assert_close(streamed, out, atol=1e-6, rtol=0)


def test_identity_names_the_class_and_follows_weights_and_normalisation(tmp_path, wan_folder):
    identity = autoencoder_identity(wan_folder)
    assert identity.startswith("AutoencoderKLWan-") and identity == autoencoder_identity(str(wan_folder))
    copy = tmp_path / "vae"
    shutil.copytree(wan_folder, copy)
    config = json.loads((copy / "config.json").read_text())
    config["latents_std"] = [1.0] * 4
    (copy / "config.json").write_text(json.dumps(config))
    assert autoencoder_identity(copy) != identity


def test_from_config_checks_the_configured_factors(wan_folder):
    cfg = AutoencoderConfig(name="wan2.1-vae", kind="diffusers", checkpoint=str(wan_folder), spatial_factor=8,
                            temporal_factor=4, latent_channels=4)
    assert isinstance(autoencoder_from_config(cfg), WanAutoencoder)
    cfg.latent_channels = 16
    with pytest.raises(ReelError, match="latent_channels=16"):
        autoencoder_from_config(cfg)


def test_folders_a_person_can_get_wrong_are_one_line_errors(tmp_path, wan_folder):
    unsupported = tmp_path / "kl"
    unsupported.mkdir()
    (unsupported / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL"}))
    with pytest.raises(ReelError) as err:
        load_autoencoder(unsupported)
    message = str(err.value)
    assert message.startswith(f"{unsupported}: ") and "_class_name='AutoencoderKL'" in message
    assert "AutoencoderDC, AutoencoderKLWan" in message and "\n" not in message
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    shutil.copy(wan_folder / "config.json", no_weights)
    with pytest.raises(ReelError, match=f"^{re.escape(str(no_weights))}: diffusion_pytorch_model.safetensors is "
                                        f"missing"):
        load_autoencoder(no_weights)
    pipeline = tmp_path / "pipeline"
    shutil.copytree(wan_folder, pipeline / "vae")
    (pipeline / "model_index.json").write_text("{}")
    with pytest.raises(ReelError, match="a diffusers pipeline folder; give its autoencoder"):
        load_autoencoder(pipeline)


def test_info_and_stats_commands(capsys, wan_folder):
    from reel.commands.autoencoder import StatsArgs, autoencoder_stats_command
    from reel.commands.info import InfoArgs, info_command

    assert info_command(None, InfoArgs(checkpoint=str(wan_folder))) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "diffusers:AutoencoderKLWan" and info["spatial_factor"] == 8
    assert info["identity"] == autoencoder_identity(wan_folder)
    with pytest.raises(ReelError, match="latent normalisation in its config.json"):
        autoencoder_stats_command(None, StatsArgs(checkpoint=str(wan_folder)))


@pytest.mark.slow
def test_data_encode_with_a_wan_folder(tmp_path, wan_folder):
    out = tmp_path / "latents"
    result = run_reel("data", "encode", "experiment=shapes-64", "data.num_frames=9", "autoencoder=wan2.1-vae",
                      f"autoencoder.checkpoint={wan_folder}", "autoencoder.latent_channels=4", f"out_dir={out}",
                      "num_clips=2", "batch_size=2", f"text_encoder.cache_dir={tmp_path / 'text'}",
                      "logging.wandb=false", "logging.progress=false")
    assert result.returncode == 0, result.stderr[-2000:]
    index = json.loads((out / "index.json").read_text())
    assert index["latent_shape"] == [4, 3, 8, 8]
    assert index["autoencoder_identity"] == autoencoder_identity(wan_folder)
