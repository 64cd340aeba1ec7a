"""DiT checkpoint folders: round trip, what the config keeps, and clear errors."""
import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file, save_file

from reel.config.schema import ReelConfig
from reel.errors import ReelError
from reel.models.dit_checkpoint import load_dit, read_dit_extra_info, save_dit
from tests.models.dit_helpers import LATENT_CHANNELS, TEXT_DIM, tiny_config, tiny_dit, tiny_inputs


def _full_config():
    cfg = OmegaConf.structured(ReelConfig)
    cfg.model = OmegaConf.merge(cfg.model, OmegaConf.structured(tiny_config()))
    cfg.autoencoder.checkpoint = "bundled:demo_ae"
    return cfg


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_round_trip_gives_the_same_outputs(tmp_path, dtype):
    model = tiny_dit().eval()
    save_dit(model, tmp_path / "dit", _full_config(), dtype=dtype, extra_info={"steps": 7})
    loaded, cfg = load_dit(tmp_path / "dit")
    x, t, text, mask = tiny_inputs()
    expected = model(x, t, text, mask)
    if dtype == torch.float16:
        model.load_state_dict({k: v.half().float() for k, v in model.state_dict().items()})
        expected = model(x, t, text, mask)
    torch.testing.assert_close(loaded(x, t, text, mask), expected, atol=1e-6, rtol=0)
    assert cfg.dit.latent_channels == LATENT_CHANNELS and cfg.dit.text_dim == TEXT_DIM
    assert cfg.autoencoder.checkpoint == "bundled:demo_ae" and cfg.data.num_frames == 17
    assert "train" not in cfg and read_dit_extra_info(tmp_path / "dit") == {"steps": 7}


def test_missing_or_foreign_folders_are_named(tmp_path):
    with pytest.raises(ReelError, match="no such folder"):
        load_dit(tmp_path / "none")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReelError, match="config.yaml is missing"):
        load_dit(tmp_path / "empty")
    with pytest.raises(ReelError, match="not a DiT checkpoint"):
        load_dit("bundled:demo_ae")


def test_weights_that_do_not_fit_the_config_are_named(tmp_path):
    save_dit(tiny_dit(), tmp_path / "dit", _full_config())
    weights = tmp_path / "dit" / "model.safetensors"
    state = load_file(str(weights))
    state["final_proj.bias"] = torch.zeros(3)
    save_file(state, str(weights))
    with pytest.raises(ReelError, match=r"final_proj.bias has shape \[3\]"):
        load_dit(tmp_path / "dit")
    del state["final_proj.bias"]
    save_file(state, str(weights))
    with pytest.raises(ReelError, match="final_proj.bias is missing"):
        load_dit(tmp_path / "dit")
