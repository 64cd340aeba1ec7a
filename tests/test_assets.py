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


def test_the_bundled_light_decoder_reads_the_demo_latents():
    """bundled:demo_ae_light (tools/train_light_decoder.sh) is the demo autoencoder with a cut decoder: the same
    encoder and latent stats, so any demo DiT decodes with it (sample.autoencoder=bundled:demo_ae_light), and it
    draws world clips the oracle reads back (one per shape, from the demo encoder's latents)."""
    import torch

    from reel.autoencoders.checkpoint import load_autoencoder, read_autoencoder_config, same_latent_space
    from reel.data.oracle import score_frames
    from reel.data.shapes import render_clip
    from reel.data.video_io import to_tensor, to_uint8

    assert same_latent_space("bundled:demo_ae_light", "bundled:demo_ae")
    light_cfg, full_cfg = (read_autoencoder_config(f"bundled:{name}") for name in ("demo_ae_light", "demo_ae"))
    assert sum(light_cfg.arch.decoder_depth_list) < sum(full_cfg.arch.decoder_depth_list)
    encoder, light = load_autoencoder("bundled:demo_ae"), load_autoencoder("bundled:demo_ae_light")
    for index, shape in enumerate(("circle", "square", "triangle")):
        clip = render_clip(11, index, 64, 64, 17, labels={"color": "red", "shape": shape, "direction": "left"})
        with torch.no_grad():
            frames = to_uint8(light.decode(encoder.encode(to_tensor(clip.frames)[None])).clamp(-1, 1)[0])
        assert score_frames(frames) == {"color": "red", "shape": shape, "direction": "left"}
