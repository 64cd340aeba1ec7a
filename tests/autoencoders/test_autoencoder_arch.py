"""The builder: presets, defaults, parameter counts, and config mistakes named by key."""
import pytest
import torch

from ae_helpers import preset
from reel.autoencoders import autoencoder_summary, build_autoencoder, count_parameters, resolve_arch
from reel.errors import ReelError

# Sanity ranges, not targets: research presets in the tens to hundreds of millions, the demo a few million.
PARAMETER_RANGES = {
    "dc-ae-v-f32t4c32": (50e6, 1e9),
    "dc-ae-v-f64t4c128": (50e6, 1e9),
    "dc-ae-v-demo-f16t4c16": (2e6, 12e6),
    "dc-ae-v-tiny": (10e3, 100e3),
}


@pytest.mark.parametrize("name", sorted(PARAMETER_RANGES))
def test_preset_parameter_counts(name):
    cfg = preset(name)
    with torch.device("meta"):  # the research presets are built without allocating their weights
        model = build_autoencoder(cfg)
    summary = autoencoder_summary(model)
    print(f"{name}: {summary['params'] / 1e6:.2f}M parameters "
          f"(encoder {summary['encoder_params'] / 1e6:.2f}M, decoder {summary['decoder_params'] / 1e6:.2f}M)")
    low, high = PARAMETER_RANGES[name]
    assert low <= summary["params"] <= high
    assert summary["params"] == count_parameters(model) == summary["encoder_params"] + summary["decoder_params"]
    assert (summary["spatial_factor"], summary["temporal_factor"], summary["latent_channels"]) == (
        cfg.spatial_factor, cfg.temporal_factor, cfg.latent_channels)


def test_an_empty_arch_builds_from_defaults():
    arch = resolve_arch({"spatial_factor": 16, "temporal_factor": 4, "latent_channels": 16})
    assert arch.width_list == [64, 128, 256, 256, 512]
    assert arch.temporal_downs == [1, 2] and arch.chunk_frames == 4 and arch.norm == "rms"
    assert arch.decoder_width_list == arch.width_list
    assert arch.block_types == ["res", "res", "res", "linear_attn", "linear_attn"]


def test_presets_resolve_to_their_factors():
    for name in PARAMETER_RANGES:
        cfg = preset(name)
        arch = resolve_arch(cfg)
        assert 2 ** (len(arch.width_list) - 1) == cfg.spatial_factor
        assert 2 ** len(arch.temporal_downs) == cfg.temporal_factor


@pytest.mark.parametrize("change, message", [
    ({"spatial_factor": 16}, "autoencoder.spatial_factor=16: arch.width_list has 4 stages, which gives spatial "
                             "factor 8"),
    ({"spatial_factor": 12}, "autoencoder.spatial_factor=12: must be a power of two"),
    ({"temporal_factor": 8}, "autoencoder.arch.temporal_downs=[1, 2]: must name 3 distinct down blocks"),
    ({"latent_channels": 5}, "autoencoder.latent_channels=5: must divide the last encoder width 32"),
    ({"kind": "kl_vae"}, "autoencoder.kind=kl_vae: unknown autoencoder kind"),
    ({"arch.widths": [1]}, "autoencoder.arch.widths=[1]: unknown key"),
    ({"arch.depth_list": [1, 1]}, "autoencoder.arch.depth_list=[1, 1]: needs one entry per stage (4"),
    ({"arch.block_types": ["res", "res", "res", "conv"]}, "autoencoder.arch.block_types="),
    ({"arch.width_list": [8, 12, 16, 32]}, "autoencoder.arch.width_list=[8, 12, 16, 32]: stage 0->1 (8->12, 4x"),
    ({"arch.width_list": [8, 8, 8, 128]}, "autoencoder.arch.width_list=[8, 8, 8, 128]: stage 2->3 (8->128, 8x"),
    ({"arch.width_list": [8, 8, 4, 32]}, "stage 1->2: the down block's conv makes 4/8 channels"),
    ({"arch.chunk_frames": 6}, "autoencoder.arch.chunk_frames=6: must be a positive multiple of temporal_factor 4"),
    ({"arch.norm": "group"}, "autoencoder.arch.norm=group: must be one of rms, layer"),
    ({"arch.head_dim": 12}, "linear_attn stages need widths divisible by arch.head_dim=12"),
])
def test_inconsistent_configs_name_the_key(change, message):
    cfg = preset("dc-ae-v-tiny")
    for key, value in change.items():
        if key.startswith("arch."):
            cfg.arch[key[5:]] = value
        else:
            cfg[key] = value
    with pytest.raises(ReelError) as error:
        build_autoencoder(cfg)
    assert message in str(error.value)
    assert "\n" not in str(error.value)
