"""The bundled demo checkpoints: fp16 safetensors, at most 40 MB together, each with its config."""
import math

from safetensors import safe_open

from reel.assets import ASSETS


def test_bundled_checkpoints_are_small_fp16_safetensors():
    folders = sorted(p for p in ASSETS.iterdir() if p.is_dir() and not p.name.startswith("_"))
    assert {p.name for p in folders} >= {"demo_ae", "demo_dit", "demo_causal"}
    total = 0
    for folder in folders:
        weights = folder / "model.safetensors"
        assert weights.is_file() and (folder / "config.yaml").is_file(), folder
        total += sum(f.stat().st_size for f in folder.iterdir())
        with safe_open(str(weights), "pt") as tensors:
            slices = [tensors.get_slice(name) for name in tensors.keys()]
            # weights in fp16; only small statistics (an autoencoder's per-channel latent mean/std) stay fp32
            wide = [s.get_shape() for s in slices if s.get_dtype() != "F16" and math.prod(s.get_shape()) >= 1024]
        assert not wide, (folder.name, wide)
    assert total <= 40 * 2**20, total
