"""`reel train adapt`: a DiT trained in the demo autoencoder's space moved to an f16 autoencoder's."""
import json

import pytest
import torch

from reel.autoencoders import build_autoencoder, save_autoencoder
from reel.models.dit_checkpoint import load_dit, read_dit_extra_info
from tests.conftest import run_reel

QUIET = ["logging.wandb=false", "logging.progress=false"]


@pytest.fixture(scope="module")
def autoencoder_b(tmp_path_factory):
    """A randomly initialised f16 autoencoder (adaptation needs a latent space, not a good one)."""
    from reel.config.compose import load_config

    cfg, _ = load_config(["autoencoder=dc-ae-v-demo-f16t4c16"], validate=False)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ae16") / "autoencoder"
    save_autoencoder(build_autoencoder(cfg.autoencoder), path, cfg.autoencoder, dtype=torch.float32)
    return path


@pytest.mark.slow
def test_adapt_aligns_the_embedding_then_fine_tunes_in_the_new_space(tmp_path, tiny_latents, autoencoder_b):
    source_run = tmp_path / "source"
    trained = run_reel("train", "dit", *tiny_latents, f"train.run_dir={source_run}", "train.steps=2",
                       "train.batch_size=2", "train.preview_every=100")
    assert trained.returncode == 0, trained.stderr[-2000:]
    cache = next(a for a in tiny_latents if a.startswith("text_encoder.cache_dir="))
    space_b = ["autoencoder=dc-ae-v-demo-f16t4c16", f"autoencoder.checkpoint={autoencoder_b}", "data=shapes",
               "data.height=32", "data.width=32", "data.num_frames=9", cache, *QUIET]
    latents_b = tmp_path / "latents_b"  # stage 2 reads B's precomputed latents (latents=)
    encoded = run_reel("data", "encode", *space_b, f"out_dir={latents_b}", "num_clips=4", "batch_size=4")
    assert encoded.returncode == 0, encoded.stderr[-2000:]
    run_dir = tmp_path / "adapt"
    result = run_reel("train", "adapt", f"source={source_run / 'dit'}", "model=dit-tiny", *space_b,
                      f"latents={latents_b}", f"train.run_dir={run_dir}", "train.batch_size=2", "train.steps=2",
                      "train.preview_every=100", "align_steps=25", "align_lr=5e-2")
    assert result.returncode == 0, result.stderr[-3000:]
    align = [json.loads(line) for line in result.stdout.splitlines() if '"stage": "align"' in line]
    assert align[0]["step"] == 1 and align[-1]["step"] == 25
    assert align[-1]["loss"] < 0.5 * align[0]["loss"], align

    source, _ = load_dit(source_run / "dit")
    aligned, cfg = load_dit(run_dir / "aligned")
    assert cfg.autoencoder.checkpoint == str(autoencoder_b) and cfg.dit.latent_channels == 16
    assert aligned.patch_embed.weight.shape[2:] == source.patch_embed.weight.shape[2:]
    for name, tensor in source.state_dict().items():  # stage 1 leaves the transformer as it was
        if name.startswith("blocks."):
            assert torch.equal(aligned.state_dict()[name], tensor), name
    adapted, cfg = load_dit(run_dir / "dit")
    assert cfg.autoencoder.name == "dc-ae-v-demo-f16t4c16"
    assert read_dit_extra_info(run_dir / "dit")["data"] == "latents"  # stage 2 trained on B's latents
    out = adapted(torch.randn(1, 16, 3, 4, 4), torch.tensor([0.5]), torch.randn(1, 5, 384))
    assert out.shape == (1, 16, 3, 4, 4)


def test_adapt_refuses_latents_of_another_autoencoder_before_aligning(tmp_path, tiny_latents, autoencoder_b):
    latents_a = next(a for a in tiny_latents if a.startswith("data.latents=")).split("=", 1)[1]
    result = run_reel("train", "adapt", "source=bundled:demo_dit", "autoencoder=dc-ae-v-demo-f16t4c16",
                      f"autoencoder.checkpoint={autoencoder_b}", "data=shapes", f"latents={latents_a}",
                      f"train.run_dir={tmp_path / 'adapt'}", *QUIET)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert f"latents={latents_a}: encoded with autoencoder" in last and str(autoencoder_b) in last
    assert not (tmp_path / "adapt" / "aligned").exists()
