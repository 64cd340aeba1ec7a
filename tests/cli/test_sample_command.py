"""`reel sample` end to end on a tiny DiT trained for two steps, and the TextToVideoPipeline API."""
import json
import re

import numpy as np
import pytest
import torch

from reel.cli import main
from reel.commands.sample import SampleArgs, read_requests
from reel.data.video_io import read_video
from reel.errors import ReelError
from reel.sample.pipeline import TextToVideoPipeline
from tests.conftest import run_reel

torch.set_num_threads(1)

QUIET = ["logging.wandb=false", "logging.progress=false"]
MANIFEST_KEYS = {"prompt", "seed", "path", "steps", "guidance", "solver", "shift", "num_frames", "height", "width",
                 "seconds", "checkpoint"}
PROMPTS = [
    {"prompt": "a red square moving up", "seed": 11},
    {"prompt": "a blue circle moving left"},
    {"prompt": "a green triangle moving down", "num_frames": 5},
]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    run_dir, cache = tmp_path_factory.mktemp("dit_run"), tmp_path_factory.mktemp("text_cache")
    result = run_reel("train", "dit", "experiment=shapes-64", "data.num_frames=9", "train.steps=2",
                      "train.batch_size=2", f"train.run_dir={run_dir}", f"text_encoder.cache_dir={cache}", *QUIET)
    assert result.returncode == 0, result.stderr[-2000:]
    return run_dir / "dit"


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("prompts") / "prompts.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in PROMPTS) + "\n")
    return path


def sample(checkpoint, prompts_file, out_dir, batch_size):
    result = run_reel("sample", f"checkpoint={checkpoint}", f"prompts={prompts_file}", f"out_dir={out_dir}",
                      f"batch_size={batch_size}", "steps=3", "solver=dpmpp", "seed=100", *QUIET)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def sampled(tmp_path_factory, checkpoint, prompts_file):
    out_dir = tmp_path_factory.mktemp("samples")
    return out_dir, sample(checkpoint, prompts_file, out_dir, batch_size=2)


def manifest_rows(out_dir):
    return [json.loads(line) for line in (out_dir / "manifest.jsonl").read_text().splitlines()]


def test_sample_writes_videos_manifest_and_contact_sheet(sampled, checkpoint):
    out_dir, summary = sampled
    assert summary["videos"] == 3 and summary["manifest"] == str(out_dir / "manifest.jsonl")
    rows = manifest_rows(out_dir)
    assert [row["path"] for row in rows] == ["000000.mp4", "000001.mp4", "000002.mp4"]
    assert all(set(row) >= MANIFEST_KEYS for row in rows)
    assert [row["prompt"] for row in rows] == [p["prompt"] for p in PROMPTS]
    assert [row["seed"] for row in rows] == [11, 101, 102]  # its own seed, else sample.seed + index
    assert [row["num_frames"] for row in rows] == [9, 9, 5]  # the checkpoint's 9 unless the line says
    first = rows[0]
    assert (first["steps"], first["solver"], first["guidance"], first["height"], first["width"]) == \
        (3, "dpmpp", 4.0, 64, 64)
    assert first["checkpoint"] == str(checkpoint) and first["seconds"] > 0 and first["precision"] == "fp32"
    for row in rows:
        assert read_video(out_dir / row["path"]).shape == (row["num_frames"], 64, 64, 3)
    assert (out_dir / "contact_sheet.png").stat().st_size > 0


def test_sampling_is_the_same_whatever_the_batch_size(sampled, checkpoint, prompts_file, tmp_path):
    """The generated frames are bit-identical (test_pipeline_is_deterministic_... below); the mp4s are compared
    within the encoder's rounding: on some CPUs (AVX-512 here) libx264 in a process that has run torch makes
    other, equally good, encoding choices from one run to the next (same frames in, ~1.6 mean error either
    way), so a file-level bit comparison would test the encoder, not reel."""
    out_dir, _ = sampled
    sample(checkpoint, prompts_file, tmp_path, batch_size=3)  # one batch instead of two
    for row in manifest_rows(out_dir):
        first, again = read_video(out_dir / row["path"]), read_video(tmp_path / row["path"])
        difference = np.abs(first.astype(np.int16) - again.astype(np.int16))
        assert first.shape == again.shape and difference.mean() < 1.5, (row["path"], difference.mean())


def test_eval_world_scores_a_sample_folder(sampled):
    out_dir, _ = sampled
    result = run_reel("eval", "world", f"manifest={out_dir}")
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["num_clips"] == 3 and set(report["accuracy"]) == {"color", "shape", "direction", "joint"}


def run_in_process(capsys, *args):
    with pytest.raises(SystemExit) as exit_info:
        main(["sample", *args, *QUIET])
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def test_user_errors_are_one_line_naming_the_key_or_file(checkpoint, tmp_path, capsys):
    ckpt = f"checkpoint={checkpoint}"
    assert "prompt=TEXT or prompts=FILE" in run_in_process(capsys, ckpt)
    assert "both given" in run_in_process(capsys, ckpt, "prompt=a red square moving up", "prompts=x.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    assert f"prompts={empty}: the file holds no prompts" in run_in_process(capsys, ckpt, f"prompts={empty}")
    missing = tmp_path / "missing.txt"
    assert f"prompts={missing}: no such file" in run_in_process(capsys, ckpt, f"prompts={missing}")
    bad = tmp_path / "bad.jsonl"
    for line, fragment in [('{"prompt": "a red square moving up"', "not valid JSON"),
                           ('{"caption": "a red square moving up"}', '"prompt"'),
                           ('{"prompt": "a red square moving up", "seed": "seven"}', 'seed="seven"')]:
        bad.write_text('{"prompt": "a blue circle moving left"}\n' + line + "\n")
        message = run_in_process(capsys, ckpt, f"prompts={bad}")
        assert f"{bad}:2" in message and fragment in message
    assert "no such folder" in run_in_process(capsys, f"checkpoint={tmp_path / 'no_run'}", "prompt=a red square")
    assert "batch_size=0" in run_in_process(capsys, ckpt, "prompt=a red square", "batch_size=0")
    assert "sample.num_frames=10: must be 1 + 4k" in run_in_process(capsys, ckpt, "prompt=a red square",
                                                                     "num_frames=10")
    assert "sample.height=60" in run_in_process(capsys, ckpt, "prompt=a red square", "height=60")
    assert "sample.precision='fp16': must be one of fp32, bf16" in run_in_process(
        capsys, ckpt, "prompt=a red square", "sample.precision=fp16")


def test_a_prompt_line_with_a_bad_clip_length_names_its_line(checkpoint, tmp_path, capsys):
    bad = tmp_path / "frames.jsonl"
    bad.write_text('{"prompt": "a red square moving up", "num_frames": 6}\n')
    message = run_in_process(capsys, f"checkpoint={checkpoint}", f"prompts={bad}")
    assert f"{bad}:1: sample.num_frames=6: must be 1 + 4k" in message


def test_text_prompt_files_skip_blank_lines_and_number_seeds_by_prompt(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("a red square moving up\n\n  a blue circle moving left  \n")
    requests = read_requests(SampleArgs(prompts=str(path)), base_seed=7)
    assert [(r.prompt, r.seed, r.num_frames) for r in requests] == [
        ("a red square moving up", 7, None), ("a blue circle moving left", 8, None)]
    assert [(r.prompt, r.seed) for r in read_requests(SampleArgs(prompt="a cyan circle"), 3)] == [("a cyan circle", 3)]


@pytest.fixture(scope="module")
def pipeline(checkpoint):
    return TextToVideoPipeline.from_checkpoint(checkpoint)


def test_pipeline_is_deterministic_and_independent_of_batch_companions(pipeline):
    prompts = ["a red square moving up", "a blue circle moving left", "a green triangle moving down"]
    videos = pipeline.generate(prompts, [0, 1, 2], steps=2, solver="unipc", progress=False)
    assert videos.shape == (3, 9, 64, 64, 3) and videos.dtype == np.uint8
    again = pipeline.generate(prompts, [0, 1, 2], steps=2, solver="unipc", progress=False)
    assert np.array_equal(videos, again)
    alone = pipeline.generate(prompts[1:2], [1], steps=2, solver="unipc", progress=False)
    other_company = pipeline.generate(["a cyan circle moving right", prompts[1]], [5, 1], steps=2, solver="unipc",
                                      progress=False)
    assert np.array_equal(alone[0], videos[1]) and np.array_equal(other_company[1], videos[1])
    other_seed = pipeline.generate(prompts[1:2], [2], steps=2, solver="unipc", progress=False)
    assert not np.array_equal(other_seed[0], videos[1])


def test_bf16_sampling_runs_in_bf16_and_stays_within_a_few_levels_of_fp32(pipeline):
    args = (["a red square moving up"], [0])
    exact = pipeline.generate(*args, steps=2, progress=False)
    fast = pipeline.generate(*args, steps=2, progress=False, precision="bf16")
    difference = np.abs(exact.astype(int) - fast.astype(int))
    assert difference.max() > 0 and difference.mean() < 2.0, (difference.max(), difference.mean())
    assert np.array_equal(fast, pipeline.generate(*args, steps=2, progress=False, precision="bf16"))
    with pytest.raises(ReelError, match="sample.precision='half'"):
        pipeline.generate(*args, steps=2, progress=False, precision="half")


def test_prompts_and_the_negative_prompt_are_encoded_once_per_pipeline(checkpoint, monkeypatch):
    pipeline = TextToVideoPipeline.from_checkpoint(checkpoint)
    encoded = []
    encode = pipeline.text_encoder.encode
    monkeypatch.setattr(pipeline.text_encoder, "encode", lambda prompts: encoded.extend(prompts) or encode(prompts))
    first = pipeline.generate(["a red square moving up"], [0], steps=1, progress=False, negative_prompt="a blur")
    pipeline.generate(["a blue circle moving left", "a red square moving up"], [0, 1], steps=1, progress=False,
                      negative_prompt="a blur")
    assert encoded == ["a blur", "a red square moving up", "a blue circle moving left"]
    monkeypatch.undo()
    fresh = TextToVideoPipeline.from_checkpoint(pipeline.checkpoint)
    again = fresh.generate(["a red square moving up"], [0], steps=1, progress=False, negative_prompt="a blur")
    assert np.array_equal(first, again)
    monkeypatch.setattr("reel.sample.pipeline.TEXT_MEMO", 2)  # the memo keeps the prompts used last
    for prompt in ["a cyan circle", "a blur", "a red square moving up", "a green square"]:
        fresh.text_embedding(prompt)
    assert list(fresh._texts) == ["a red square moving up", "a green square"]


def test_pipeline_defaults_come_from_the_checkpoint_and_are_checked(pipeline):
    s = pipeline.settings()
    assert (s.num_frames, s.height, s.width, s.steps, s.solver) == (9, 64, 64, 20, "euler")
    assert pipeline.fps == 8.0
    for kwargs, message in [({"num_frames": 10}, "sample.num_frames=10: must be 1 + 4k"),
                            ({"height": 60}, "sample.height=60: must be a positive multiple of 8"),
                            ({"width": 0}, "sample.width=0"), ({"steps": 0}, "sample.steps=0"),
                            ({"solver": "heun"}, "sample.solver=heun: unknown solver"),
                            ({"first_chunk_guidance": -1.0}, "sample.first_chunk_guidance=-1.0: must be non-negative")]:
        with pytest.raises(ReelError, match=re.escape(message)):
            pipeline.generate(["a red square moving up"], [0], progress=False, **kwargs)
    with pytest.raises(ReelError, match="2 prompts but 1 seeds"):
        pipeline.generate(["a red square", "a blue circle"], [0], progress=False)


def test_the_bundled_demo_model_is_the_default():
    pipeline = TextToVideoPipeline.from_checkpoint(None)
    assert pipeline.checkpoint == "bundled:demo_dit" and pipeline.cfg.autoencoder.checkpoint == "bundled:demo_ae"
    videos = pipeline.generate(["a red square moving up"], [0], steps=2, progress=False)
    assert videos.shape == (1, 17, 64, 64, 3) and videos.std() > 1


def test_a_lighter_decoder_of_the_same_latents_decodes_the_same_denoised_latents(checkpoint, pipeline, tmp_path,
                                                                                  capsys):
    from reel.autoencoders import load_autoencoder, save_autoencoder
    from reel.autoencoders.prune import drop_decoder_blocks

    source = load_autoencoder(pipeline.cfg.autoencoder.checkpoint)  # the bundled demo AE
    light, light_cfg = drop_decoder_blocks(source, [0, 0, 1, 1], "demo-light")
    save_autoencoder(light, tmp_path / "light", light_cfg, dtype=torch.float16)
    out_dir = tmp_path / "samples"
    result = run_reel("sample", f"checkpoint={checkpoint}", "prompt=a red square moving up", "steps=2",
                      f"sample.autoencoder={tmp_path / 'light'}", f"out_dir={out_dir}", *QUIET)
    assert result.returncode == 0, result.stderr[-2000:]
    row = manifest_rows(out_dir)[0]
    assert row["autoencoder"] == str(tmp_path / "light")
    lighter = TextToVideoPipeline.from_checkpoint(checkpoint, autoencoder=tmp_path / "light")
    assert lighter.autoencoder.arch.decoder_depth_list == [0, 0, 1, 1]
    videos = [p.generate(["a red square moving up"], [0], steps=2, progress=False) for p in (pipeline, lighter)]
    assert not np.array_equal(*videos)  # another decoder, other frames ...
    assert np.array_equal(read_video(out_dir / row["path"]).shape, videos[1][0].shape)
    light.set_latent_stats(torch.zeros(16), torch.ones(16))  # ... but another latent space is refused
    save_autoencoder(light, tmp_path / "other", light_cfg, dtype=torch.float16)
    capsys.readouterr()  # what loading the models above printed
    message = run_in_process(capsys, f"checkpoint={checkpoint}", "prompt=a red square",
                             f"sample.autoencoder={tmp_path / 'other'}")
    assert f"sample.autoencoder={tmp_path / 'other'}: its encoder or latent statistics differ" in message


def test_sampled_latents_distil_a_lighter_decoder(checkpoint, pipeline, tmp_path):
    """latents_dir= keeps what the DiT denoised as a data=latents folder; reel train ae learns a pruned decoder
    from them with the checkpoint's own decoder drawing the targets (train.ae.decoder_teacher)."""
    from reel.autoencoders import load_autoencoder, save_autoencoder
    from reel.autoencoders.prune import drop_decoder_blocks
    from reel.data.latent_shards import LatentShardDataset

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red square moving up\na blue circle moving left\na green triangle moving down\n")
    data = tmp_path / "latents"
    result = run_reel("sample", f"checkpoint={checkpoint}", f"prompts={prompts}", "steps=2", "seed=5",
                      f"out_dir={tmp_path / 'samples'}", f"latents_dir={data}", *QUIET)
    assert result.returncode == 0, result.stderr[-2000:]
    folder = LatentShardDataset(data)
    assert len(folder) == 3 and folder.index["clip_size"] == [64, 64, 9] and folder.index["steps"] == 2
    assert [folder[i]["caption"] for i in range(3)] == prompts.read_text().splitlines()
    kept = []
    video = pipeline.generate(["a blue circle moving left"], [6], steps=2, progress=False, latents_out=kept)
    assert torch.equal(folder[1]["latents"], kept[0])  # the same latents the clip was decoded from
    decoded = pipeline.autoencoder.decode(kept[0][None]).float().clamp(-1, 1)
    assert np.array_equal(((decoded[0].permute(1, 2, 3, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy(),
                          video[0])

    light, light_cfg = drop_decoder_blocks(load_autoencoder("bundled:demo_ae"), [0, 0, 1, 1], "demo-light")
    save_autoencoder(light, tmp_path / "light", light_cfg, dtype=torch.float16)
    distil = ["data=latents", f"data.latents={data}", "data.height=64", "data.width=64", "data.num_frames=9",
              "autoencoder=dc-ae-v-demo-f8t4c16", "++autoencoder.arch.decoder_depth_list=[0,0,1,1]",
              f"autoencoder.checkpoint={tmp_path / 'light'}", "train.ae.freeze_encoder=true", "train.steps=2",
              "train.batch_size=2", "train.warmup_steps=1", "train.log_every=1", "train.preview_every=100",
              "train.precision=fp32", *QUIET]
    result = run_reel("train", "ae", *distil, "train.ae.decoder_teacher=bundled:demo_ae",
                      f"train.run_dir={tmp_path / 'run'}")
    assert result.returncode == 0, result.stderr[-2000:]
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == [1, 2] and all(0 < row["psnr"] < 60 for row in log)
    tuned = load_autoencoder(tmp_path / "run" / "autoencoder")
    assert tuned.arch.decoder_depth_list == [0, 0, 1, 1]
    assert not torch.equal(tuned.decoder.head.conv.weight, light.decoder.head.conv.weight.float())
    missing = run_reel("train", "ae", *distil, f"train.run_dir={tmp_path / 'no_teacher'}")
    assert missing.returncode == 2 and "train.ae.decoder_teacher=DIR" in missing.stderr.strip().splitlines()[-1]
