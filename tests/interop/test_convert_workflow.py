"""The README workflow on tiny random models: convert a diffusers transformer with its VAE and text encoder
recorded, sample with it, convert it back; and the width/channel checks at conversion."""
import json

import pytest
import torch

from reel.errors import ReelError
from reel.interop.diffusers_dit import convert_from_diffusers
from reel.models.text_encoder import bundled_minilm_path
from tests.conftest import run_reel
from tests.models.dit_helpers import one_thread  # noqa: F401 (fixture)

MINILM_DIM = 384


@pytest.fixture(scope="module")
def wan_parts(tmp_path_factory):
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    torch.manual_seed(0)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=4,
        text_dim=MINILM_DIM, freq_dim=256, ffn_dim=48, num_layers=2, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=32)
    vae = AutoencoderKLWan(base_dim=8, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True], latents_mean=[0.0] * 4, latents_std=[1.0] * 4)
    root = tmp_path_factory.mktemp("wan")
    transformer.save_pretrained(root / "transformer")
    vae.save_pretrained(root / "vae")
    return root


def test_converted_model_samples_with_its_recorded_vae_and_text_encoder_and_converts_back(wan_parts, tmp_path):
    encoder = bundled_minilm_path()
    out = tmp_path / "dit"
    result = run_reel("convert", "from=diffusers", "kind=wan", f"src={wan_parts / 'transformer'}", f"out={out}",
                      f"vae={wan_parts / 'vae'}", f"text_encoder_path={encoder}")
    assert result.returncode == 0, result.stderr[-2000:]
    from reel.models.dit_checkpoint import read_dit_config

    cfg = read_dit_config(out)
    assert cfg.autoencoder.checkpoint == str(wan_parts / "vae") and cfg.text_encoder.path == str(encoder)
    samples = tmp_path / "samples"
    result = run_reel("sample", f"checkpoint={out}", "prompt=a red square moving up", "num_frames=5", "height=32",
                      "width=32", "steps=2", f"out_dir={samples}", "logging.wandb=false", "logging.progress=false")
    assert result.returncode == 0, result.stderr[-2000:]
    row = json.loads((samples / "manifest.jsonl").read_text())
    assert (row["num_frames"], row["height"], row["width"]) == (5, 32, 32)
    back = tmp_path / "back"
    result = run_reel("convert", "to=diffusers", f"checkpoint={out}", f"out={back}")
    assert result.returncode == 0, result.stderr[-2000:]
    from safetensors.torch import load_file

    original = load_file(wan_parts / "transformer" / "diffusion_pytorch_model.safetensors")
    again = load_file(back / "diffusion_pytorch_model.safetensors")
    assert original.keys() == again.keys() and all(torch.equal(original[k], again[k]) for k in original)


def test_conversion_checks_the_vae_channels_and_the_text_width(wan_parts, tmp_path):
    from diffusers import AutoencoderKLWan

    wide = tmp_path / "vae16"
    AutoencoderKLWan(base_dim=8, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                     temperal_downsample=[False, True, True]).save_pretrained(wide)
    with pytest.raises(ReelError, match="16 latent channels, the transformer takes 4"):
        convert_from_diffusers("wan", wan_parts / "transformer", tmp_path / "a", vae=wide)
    from diffusers import WanTransformer3DModel

    narrow = tmp_path / "narrow"
    WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=4,
                          out_channels=4, text_dim=16, freq_dim=256, ffn_dim=48, num_layers=2,
                          rope_max_seq_len=32).save_pretrained(narrow)
    with pytest.raises(ReelError, match="384-d embeddings, the transformer takes 16-d"):
        convert_from_diffusers("wan", narrow, tmp_path / "b", text_encoder=bundled_minilm_path())
