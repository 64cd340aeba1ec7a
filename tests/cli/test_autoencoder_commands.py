"""`reel train ae`, `reel eval autoencoder`, `reel autoencoder stats`, `reel info` end to end (tiny AE)."""
import json

import pytest
import torch

from reel.autoencoders import load_autoencoder
from reel.autoencoders.checkpoint import same_latent_space
from tests.conftest import run_reel

TINY = ["autoencoder=dc-ae-v-tiny", "data.height=32", "data.width=32", "data.num_frames=9",
        "logging.wandb=false", "logging.progress=false"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("ae_run")
    result = run_reel("train", "ae", *TINY, f"train.run_dir={run_dir}", "train.steps=8", "train.batch_size=2",
                      "train.lr=2e-3", "train.warmup_steps=1", "train.ckpt_every=4", "train.log_every=1",
                      "train.preview_every=4", "train.precision=fp32", "preview_clips=2")
    assert result.returncode == 0, result.stderr[-2000:]
    return run_dir


def test_training_writes_checkpoints_previews_and_the_ema_autoencoder(trained):
    assert sorted(p.name for p in (trained / "checkpoints").iterdir()) == ["step_0000004", "step_0000008"]
    assert list((trained / "previews").rglob("*.png"))
    log = [json.loads(line) for line in (trained / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 9))
    assert log[-1]["loss"] < log[0]["loss"]  # the objective goes down even in 8 steps
    assert {"psnr", "ssim", "l1", "grad_norm", "lr", "samples_per_s"} <= set(log[-1])
    model = load_autoencoder(trained / "autoencoder")
    assert model.spatial_factor == 8 and model.temporal_factor == 4


def test_stats_then_eval_reports_psnr_and_ssim(trained, tmp_path):
    ae = trained / "autoencoder"
    stats = run_reel("autoencoder", "stats", f"checkpoint={ae}", *TINY, "num_clips=6")
    assert stats.returncode == 0, stats.stderr[-2000:]
    model = load_autoencoder(ae)
    assert not torch.equal(model.latent_std, torch.ones_like(model.latent_std))

    evaluated = run_reel("eval", "autoencoder", f"checkpoint={ae}", *TINY, "num_clips=3",
                         f"recon_dir={tmp_path / 'recon'}", f"side_by_side={tmp_path / 'side.png'}",
                         f"out={tmp_path / 'report.json'}")
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    lines = [json.loads(line) for line in evaluated.stdout.strip().splitlines()]
    assert len(lines) == 4 and {"psnr", "ssim", "clip"} <= set(lines[0])
    summary = lines[-1]
    assert summary["num_clips"] == 3 and 0 < summary["psnr"] < 60 and -1 <= summary["ssim"] <= 1
    assert len((tmp_path / "recon" / "manifest.jsonl").read_text().splitlines()) == 3
    assert (tmp_path / "side.png").stat().st_size > 0
    scored = run_reel("eval", "world", f"manifest={tmp_path / 'recon'}")  # reconstructions are scoreable
    assert scored.returncode == 0 and json.loads(scored.stdout)["num_clips"] == 3


def test_info_on_export_run_and_presets(trained):
    ae = json.loads(run_reel("info", f"checkpoint={trained / 'autoencoder'}").stdout)
    assert ae["kind"] == "dc_ae_v" and ae["params"] > 0
    run = json.loads(run_reel("info", f"checkpoint={trained}").stdout)
    assert run["step"] == 8 and run["autoencoder"] == "dc-ae-v-tiny"
    preset = json.loads(run_reel("info", "autoencoder=dc-ae-v-f32t4c32").stdout)
    assert 50e6 < preset["autoencoder"]["params"] < 1e9
    big = json.loads(run_reel("info", "model=dit-2b").stdout)["model"]["params"]["total"]
    assert 1.5e9 < big < 2.5e9  # about SANA-Video 2B


def test_missing_checkpoint_is_one_line(tmp_path):
    result = run_reel("eval", "autoencoder", f"checkpoint={tmp_path / 'nope'}")
    assert result.returncode == 2 and "nope" in result.stderr.strip().splitlines()[-1]


def test_freeze_encoder_trains_the_decoder_alone(trained, tmp_path):
    base = trained / "autoencoder"
    result = run_reel("train", "ae", *TINY, f"autoencoder.checkpoint={base}", "train.ae.freeze_encoder=true",
                      f"train.run_dir={tmp_path / 'dec'}", "train.steps=2", "train.batch_size=2", "train.lr=2e-3",
                      "train.warmup_steps=1", "train.ckpt_every=2", "train.preview_every=100", "train.precision=fp32")
    assert result.returncode == 0, result.stderr[-2000:]
    before, after = load_autoencoder(base).state_dict(), load_autoencoder(tmp_path / "dec" / "autoencoder").state_dict()
    encoder = [k for k in before if k.startswith("encoder.")]
    decoder = [k for k in before if k.startswith("decoder.")]
    assert encoder and all(torch.equal(before[k], after[k]) for k in encoder)  # same latent space, bit for bit
    assert any(not torch.equal(before[k], after[k]) for k in decoder)
    assert torch.equal(before["latent_std"], after["latent_std"])


def test_the_discriminator_trains_through_the_engine(trained, tmp_path):
    # the adaptive GAN weight takes gradients outside the engine's backward (DeepSpeed forbids a second one)
    result = run_reel("train", "ae", *TINY, f"autoencoder.checkpoint={trained / 'autoencoder'}",
                      "train.ae.freeze_encoder=true", "train.ae.disc_weight=0.5", "train.ae.disc_start=2",
                      "train.ae.disc_width=8", f"train.run_dir={tmp_path / 'gan'}", "train.steps=3",
                      "train.batch_size=2", "train.log_every=1", "train.ckpt_every=3", "train.preview_every=100",
                      "train.precision=fp32")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [json.loads(line) for line in (tmp_path / "gan" / "log.jsonl").read_text().splitlines()]
    gan = [row for row in rows if "gan_g" in row]
    assert [row["step"] for row in gan] == [2, 3] and all(0 < row["gan_weight"] < 1e4 for row in gan)


def test_freeze_encoder_without_a_checkpoint_is_one_line(tmp_path):
    result = run_reel("train", "ae", *TINY, "train.ae.freeze_encoder=true", f"train.run_dir={tmp_path / 'r'}")
    assert result.returncode == 2
    assert "train.ae.freeze_encoder" in result.stderr.strip().splitlines()[-1]


def test_warm_start_with_a_checkpoint_too_is_one_line(trained, tmp_path):
    base = trained / "autoencoder"
    result = run_reel("train", "ae", *TINY, f"autoencoder.checkpoint={base}", f"train.ae.warm_start={base}",
                      f"train.run_dir={tmp_path / 'r'}")
    assert result.returncode == 2
    assert "train.ae.warm_start" in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "r").exists()


def test_warm_start_to_more_latent_channels_trains(trained, tmp_path):
    result = run_reel("train", "ae", *TINY, "autoencoder.latent_channels=8",
                      f"train.ae.warm_start={trained / 'autoencoder'}",
                      f"train.run_dir={tmp_path / 'w'}", "train.steps=1", "train.batch_size=2",
                      "train.warmup_steps=1", "train.preview_every=100", "train.precision=fp32")
    assert result.returncode == 0, result.stderr[-2000:]
    fresh = json.loads(next(line for line in result.stdout.splitlines() if '"warm_start"' in line))["fresh"]
    assert "encoder.head.conv.weight" in fresh and "encoder.stem.weight" not in fresh
    assert load_autoencoder(tmp_path / "w" / "autoencoder").latent_channels == 8


def test_a_pruned_decoder_fine_tunes_on_the_same_latents(trained, tmp_path):
    base, start = trained / "autoencoder", tmp_path / "start"
    pruned = run_reel("autoencoder", "prune-decoder", f"checkpoint={base}", "decoder_depth_list=[0,1,1,1]",
                      f"out={start}")
    assert pruned.returncode == 0, pruned.stderr[-2000:]
    summary = json.loads(pruned.stdout.strip().splitlines()[-1])
    assert summary["name"] == "dc-ae-v-tiny-d0111" and summary["decoder_params"] < summary["source_decoder_params"]
    assert same_latent_space(base, start)
    light = ["++autoencoder.arch.decoder_depth_list=[0,1,1,1]", f"autoencoder.checkpoint={start}",
             "train.ae.freeze_encoder=true", "train.steps=1", "train.batch_size=2", "train.warmup_steps=1",
             "train.preview_every=100", "train.precision=fp32"]
    result = run_reel("train", "ae", *TINY, *light, f"train.run_dir={tmp_path / 'light'}")
    assert result.returncode == 0, result.stderr[-2000:]
    tuned = tmp_path / "light" / "autoencoder"
    assert load_autoencoder(tuned).arch.decoder_depth_list == [0, 1, 1, 1] and same_latent_space(base, tuned)
    # the configured architecture must be the checkpoint's: it is what the run saves at its end
    result = run_reel("train", "ae", *TINY, *light[1:], f"train.run_dir={tmp_path / 'mismatch'}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].endswith(
        f"autoencoder.arch.decoder_depth_list=[1,1,1,1]: the checkpoint {start} has [0,1,1,1]; pass "
        f"++autoencoder.arch.decoder_depth_list=[0,1,1,1] (or the config it was trained with)")
    too_deep = run_reel("autoencoder", "prune-decoder", f"checkpoint={base}", "decoder_depth_list=[2,1,1,1]",
                        f"out={tmp_path / 'deep'}")
    assert too_deep.returncode == 2 and "decoder_depth_list=[2, 1, 1, 1]" in too_deep.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "deep").exists()
