"""`reel data encode` and `reel train dit` end to end, with the bundled demo autoencoder and dit-tiny."""
import json

import pytest
import torch

from reel.data.latent_shards import LatentShardDataset
from reel.models.dit_checkpoint import load_dit
from tests.conftest import run_reel

QUIET = ["logging.wandb=false", "logging.progress=false"]


@pytest.fixture(scope="module")
def common(tmp_path_factory):
    cache = tmp_path_factory.mktemp("text_cache")
    return ["experiment=shapes-64", "data.num_frames=9", f"text_encoder.cache_dir={cache}", *QUIET]


@pytest.fixture(scope="module")
def latents(tmp_path_factory, common):
    out = tmp_path_factory.mktemp("latents")
    result = run_reel("data", "encode", *common, f"out_dir={out}", "num_clips=32", "batch_size=8",
                      "shard_size=12")
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1])["clips"] == 32
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory, common, latents):
    run_dir = tmp_path_factory.mktemp("dit_run")
    result = run_reel("train", "dit", *common, "data=latents", f"data.latents={latents}", f"train.run_dir={run_dir}",
                      "train.steps=40", "train.batch_size=4", "train.lr=2e-3", "train.warmup_steps=2",
                      "train.log_every=1", "train.ckpt_every=20", "train.preview_every=40",
                      "train.fm.preview_steps=3", "train.fm.preview_prompts=[a red square moving up]")
    assert result.returncode == 0, result.stderr[-2000:]
    return run_dir


def test_encode_writes_shards_with_captions_and_labels(latents):
    dataset = LatentShardDataset(latents)
    assert len(dataset) == 32 and len(dataset.index["shards"]) == 3  # 12 + 12 + 8
    item = dataset[31]
    assert item["latents"].shape == (16, 3, 8, 8) and item["text_emb"].shape == (32, 384)
    assert item["text_mask"].dtype == torch.bool and item["text_mask"].any()
    rows = [json.loads(line) for line in (latents / "captions.jsonl").read_text().splitlines()]
    assert {"caption", "color", "shape", "direction"} <= set(rows[0])
    assert 0.5 < dataset[0]["latents"].std() < 2  # normalised latents


def test_a_turning_world_records_each_clips_context_and_trains_block_causal(tmp_path, common):
    """data.shapes.turn_prob: encode stores how many leading latent frames are context (1 + turn_frame / 4),
    the latent dataset returns it, and a block-causal DiT trains on it (a bidirectional one is refused)."""
    out = tmp_path / "turns"
    result = run_reel("data", "encode", *common, "data.shapes.turn_prob=0.5", f"out_dir={out}", "num_clips=8",
                      "batch_size=8")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [json.loads(line) for line in (out / "captions.jsonl").read_text().splitlines()]
    assert {row["context_latent_frames"] for row in rows} == {0, 2}  # 9 frames: the only turn is at frame 4
    assert all(row["context_latent_frames"] == (2 if row["turn_frame"] else 0) for row in rows)
    dataset = LatentShardDataset(out)
    assert [dataset[i]["context_latent_frames"] for i in range(8)] == [r["context_latent_frames"] for r in rows]
    train = [*common, "data=latents", f"data.latents={out}", "train.steps=2", "train.batch_size=4",
             "train.preview_every=100"]
    causal = run_reel("train", "dit", *train, "model.causal_chunk=1", f"train.run_dir={tmp_path / 'c'}")
    assert causal.returncode == 0, causal.stderr[-2000:]
    bidirectional = run_reel("train", "dit", *train, f"train.run_dir={tmp_path / 'b'}")
    assert bidirectional.returncode == 2
    assert "turning clips need a block-causal model" in bidirectional.stderr.strip().splitlines()[-1]
    misaligned = run_reel("data", "encode", *common, "data.shapes.turn_prob=0.5", "data.shapes.turn_every=2",
                          f"out_dir={tmp_path / 'x'}", "num_clips=2")
    assert misaligned.returncode == 2
    assert "data.shapes.turn_every=2: must be a multiple" in misaligned.stderr.strip().splitlines()[-1]


def test_training_on_latents_lowers_the_flow_matching_loss(trained):
    losses = [json.loads(line)["loss"] for line in (trained / "log.jsonl").read_text().splitlines()]
    assert len(losses) == 40
    first, last = sum(losses[:8]) / 8, sum(losses[-8:]) / 8
    assert last < 0.8 * first, (first, last)


def test_training_writes_previews_checkpoints_and_a_loadable_dit(trained):
    assert sorted(p.name for p in (trained / "checkpoints").iterdir()) == ["step_0000020", "step_0000040"]
    previews = list((trained / "previews").rglob("*"))
    assert any(p.suffix == ".mp4" for p in previews) and any(p.suffix == ".png" for p in previews)
    model, cfg = load_dit(trained / "dit")
    assert cfg.model.name == "dit-tiny" and cfg.autoencoder.checkpoint == "bundled:demo_ae"
    assert cfg.data.num_frames == 9 and cfg.dit.latent_channels == 16
    out = model(torch.randn(1, 16, 3, 8, 8), torch.tensor([0.5]), torch.randn(1, 5, 384))
    assert out.shape == (1, 16, 3, 8, 8) and out.abs().sum() > 0
    info = json.loads(run_reel("info", f"checkpoint={trained / 'dit'}").stdout)
    assert info["kind"] == "dit" and info["params"]["total"] == sum(p.numel() for p in model.parameters())
    assert info["latent_space"]["checkpoint"] == "bundled:demo_ae" and info["training"]["steps"] == 40


def test_training_from_raw_clips_and_resume(tmp_path, common):
    args = ["train", "dit", *common, f"train.run_dir={tmp_path}", "train.batch_size=2", "train.preview_every=100",
            "train.resume=latest"]
    first = run_reel(*args, "train.steps=2", "train.ckpt_every=2")
    assert first.returncode == 0, first.stderr[-2000:]
    again = run_reel(*args, "train.steps=3")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resumed from" in again.stderr and "step_0000002" in again.stderr
    steps = [json.loads(line)["step"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert steps[-1] == 3


def test_latents_from_another_autoencoder_are_refused(tmp_path, common, latents):
    from reel.autoencoders import build_autoencoder, read_autoencoder_config, save_autoencoder

    other = tmp_path / "other_ae"
    cfg = read_autoencoder_config("bundled:demo_ae")
    save_autoencoder(build_autoencoder(cfg), other, cfg)
    result = run_reel("train", "dit", *common, "data=latents", f"data.latents={latents}",
                      f"autoencoder.checkpoint={other}", f"train.run_dir={tmp_path / 'run'}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: data.latents={latents}: encoded with")


@pytest.mark.parametrize("overrides, message", [
    (["autoencoder.checkpoint=null"], "autoencoder.checkpoint=None"),
    (["data=latents"], "data.latents"),
    (["data=latents", "data.latents=/no/such/folder"], "no index.json"),
])
def test_bad_dit_training_input_is_one_line(tmp_path, common, overrides, message):
    result = run_reel("train", "dit", *common, f"train.run_dir={tmp_path}", *overrides)
    assert result.returncode == 2, result.stderr[-1000:]
    lines = result.stderr.strip().splitlines()
    assert message in lines[-1] and "Traceback" not in result.stderr
