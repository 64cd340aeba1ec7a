"""Model presets build (on the meta device, no memory) with the expected sizes; bad model keys are one-line errors."""
import pytest
import torch
from dit_helpers import one_thread  # noqa: F401

from reel.config import load_config
from reel.errors import ReelError
from reel.models.dit import build_dit, dit_summary


def preset_params(name: str, text_dim: int) -> dict:
    cfg, _ = load_config([f"model={name}"])
    with torch.device("meta"):
        model = build_dit(cfg.model, cfg.autoencoder.latent_channels, text_dim)
    return dit_summary(model)


@pytest.mark.parametrize("name,low,high", [("dit-tiny", 2e6, 4e6), ("dit-600m", 5.5e8, 6.5e8),
                                           ("dit-2b", 1.8e9, 2.1e9)])
def test_presets_have_their_advertised_size(name, low, high):
    summary = preset_params(name, text_dim=384)
    assert low < summary["total"] < high
    parts = sum(v for k, v in summary.items() if k != "total")
    assert parts == summary["total"]


def test_dit_2b_has_sana_video_2b_parameter_count():
    # SanaVideoTransformer3DModel() (diffusers 0.42.1 defaults: 16 latent channels, Gemma-2 2304-d text)
    assert preset_params("dit-2b", text_dim=2304)["total"] == 1_905_841_344


@pytest.mark.parametrize("overrides,start", [
    (["model.sparse_window=[3,2,3]"], "model.sparse_window=[3, 2, 3]: must be odd"),
    (["model.causal_chunk=3", "model.patch_size=[2,1,1]"],
     "model.causal_chunk=3: must be a multiple of the temporal patch 2"),
    (["model.causal_chunk=3", "model.attention=sparse", "model.sparse_tile=[2,2,2]"],
     "model.causal_chunk=3: must hold whole sparse tiles"),
    (["model.qk_norm=layer"], "model.qk_norm=layer: must be one of"),
    (["model.mixffn_temporal=conv"], "model.mixffn_temporal=conv: must be one of"),
    (["model.mixffn_temporal_kernel=4"], "model.mixffn_temporal_kernel=4: must be a positive odd size"),
    (["model.rope_axes_dim=[32,20,20]"], "model.rope_axes_dim=[32, 20, 20]: must be three even sizes"),
    (["model.hidden_size=195", "model.num_heads=3"], "model.hidden_size=195: gives head dim 65"),
    (["model.sparse_backend=cuda"], "model.sparse_backend=cuda: must be one of"),
])
def test_bad_model_keys_are_one_line_errors(overrides, start):
    with pytest.raises(ReelError) as info:
        load_config(overrides)
    message = str(info.value)
    assert message.startswith(start) and "\n" not in message


def test_a_hybrid_causal_config_validates():
    cfg, _ = load_config(["model.attention=[linear,softmax,sparse,linear]", "model.causal_chunk=2",
                          "model.mixffn_temporal=dense", "model.rope_axes_dim=[16,24,24]"])
    assert cfg.model.causal_chunk == 2
