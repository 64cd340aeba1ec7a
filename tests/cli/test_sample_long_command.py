"""`reel sample long=true` (segments, prompt switch, streamed mp4) and `image=` end to end, and scoring
a long video chunk by chunk with `reel eval world`."""
import json
import re

import numpy as np
import pytest
from PIL import Image

from reel.data.video_io import read_video
from tests.conftest import run_reel

QUIET = ["logging.wandb=false", "logging.progress=false"]


@pytest.fixture(scope="module")
def causal_checkpoint(tmp_path_factory, tiny_latents):
    run_dir = tmp_path_factory.mktemp("causal_dit")
    result = run_reel("train", "dit", *tiny_latents, "model.causal_chunk=1", "model.attention=[linear,softmax]",
                      "model.depth=2", "train.steps=2", "train.batch_size=2", "train.fm.first_frame_prob=0.5",
                      f"train.run_dir={run_dir}", *QUIET)
    assert result.returncode == 0, result.stderr[-2000:]
    return run_dir / "dit"


def test_long_video_with_a_prompt_switch_is_written_and_scored_by_chunk(causal_checkpoint, tmp_path):
    segments = tmp_path / "segments.jsonl"
    segments.write_text(json.dumps({"prompt": "a red circle moving right", "frames": 27}) + "\n"
                        + json.dumps({"prompt": "a red circle moving left", "frames": 18}) + "\n")
    out = tmp_path / "long"
    result = run_reel("sample", f"checkpoint={causal_checkpoint}", f"prompts={segments}", "long=true",
                      f"out_dir={out}", "steps=2", "sample.long_window=2", "sample.precision=bf16",
                      "sample.long_positions=cache", *QUIET)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["frames"] == 45 and report["peak_rss_mb"] > 0 and report["steady_seconds_per_frame"] > 0
    assert read_video(out / "000000.mp4").shape == (45, 64, 64, 3)
    row = json.loads((out / "manifest.jsonl").read_text())
    assert row["long"] and row["chunk_frames"] == 9 and [s["frames"] for s in row["segments"]] == [27, 18]
    assert row["precision"] == "bf16" and row["long_positions"] == "cache"
    assert (out / "contact_sheet.png").is_file()

    scored = run_reel("eval", "world", f"manifest={out}", "per_clip=true", *QUIET)
    assert scored.returncode == 0, scored.stderr[-2000:]
    clips = json.loads(scored.stdout)["clips"]
    # windows of the training clip's latent span: 0-8, then 8 frames at a time: 9-16 and 17-24 under the first
    # prompt, 25-32 straddles the switch at 27, 33-40 under the second, 41-44 is too short
    assert [c["path"] for c in clips] == ["000000.mp4#0-8"] + [f"000000.mp4#{a}-{a + 7}" for a in (9, 17, 33)]
    assert [c["expected"]["direction"] for c in clips] == ["right"] * 3 + ["left"]


def test_image_to_video_starts_from_the_image(causal_checkpoint, tmp_path):
    pixels = np.full((64, 64, 3), 30, dtype=np.uint8)
    pixels[20:40, 20:40] = (230, 40, 40)
    Image.fromarray(pixels).save(tmp_path / "first.png")
    result = run_reel("sample", f"checkpoint={causal_checkpoint}", "prompt=a red square moving up",
                      f"image={tmp_path / 'first.png'}", f"out_dir={tmp_path / 'i2v'}", "steps=2", *QUIET)
    assert result.returncode == 0, result.stderr[-2000:]
    row = json.loads((tmp_path / "i2v" / "manifest.jsonl").read_text())
    assert row["image"].endswith("first.png") and read_video(tmp_path / "i2v" / "000000.mp4").shape[0] == 9


@pytest.mark.parametrize("causal, extra, message", [
    (False, ["long=true", "prompt=a red circle moving left"], "block-causal"),  # the bundled demo attends everywhere
    (False, ["prompt=a red circle moving left", "image=/no/such.png"], "image=/no/such.png: no such file"),
    (True, ["long=true", "prompt=a red circle moving left", "num_frames=20"], "1 \\+ 4k"),
    (True, ["long=true", "prompts=/no/such.jsonl"], "prompts=/no/such.jsonl"),
    (True, ["long=true", "prompt=a red circle moving left", "sample.first_chunk_guidance=-2"],
     "sample.first_chunk_guidance=-2.0: must be non-negative"),
])
def test_long_and_image_errors_are_one_line(causal, extra, message, causal_checkpoint, tmp_path):
    checkpoint = [f"checkpoint={causal_checkpoint}"] if causal else []
    result = run_reel("sample", *checkpoint, f"out_dir={tmp_path}", "steps=1", *extra, *QUIET)
    assert result.returncode == 2
    assert re.search(message, result.stderr) and len(result.stderr.strip().splitlines()) == 1


def test_a_causal_checkpoint_rolls_clips_out_chunk_by_chunk_as_long_videos_do(causal_checkpoint, tmp_path, monkeypatch):
    from reel.sample.long_video import LongVideoGenerator, Segment
    from reel.sample.pipeline import TextToVideoPipeline

    # in one process: across processes the kernels may round differently in the last bits, and an untrained
    # model at guidance 4 can turn that into visible differences
    pipeline = TextToVideoPipeline.from_checkpoint(causal_checkpoint)
    s, prompt = pipeline.settings(steps=2), "a blue triangle moving down"
    rolled = pipeline.generate([prompt], [3], steps=2, progress=False, rollout=True)[0]
    long = np.concatenate(list(pipeline.long_video().frames([Segment(prompt, s.num_frames)], 3, s.height, s.width,
                                                             2, s.guidance, s.shift, s.solver, s.negative_prompt)))
    assert rolled.shape == (9, 64, 64, 3)
    np.testing.assert_array_equal(rolled, long)  # the same chunks from the same noise
    # the first chunk guided on its own, the same way in both (an untrained model's frames barely depend on
    # the guidance, so the guidance each chunk is denoised with is what is checked)
    seen, denoise = [], LongVideoGenerator._denoise
    monkeypatch.setattr(LongVideoGenerator, "_denoise", lambda gen, noise, offset, text, negative, steps, guidance,
                        *rest: seen.append((offset, guidance)) or denoise(gen, noise, offset, text, negative, steps,
                                                                          guidance, *rest))
    first = pipeline.generate([prompt], [3], steps=2, progress=False, rollout=True, first_chunk_guidance=1.0)[0]
    assert s.guidance != 1.0 and seen == [(0, 1.0), (1, s.guidance), (2, s.guidance)]
    np.testing.assert_array_equal(first, np.concatenate(list(pipeline.long_video().frames(
        [Segment(prompt, s.num_frames)], 3, s.height, s.width, 2, s.guidance, s.shift, s.solver,
        s.negative_prompt, first_chunk_guidance=1.0))))
    joint = pipeline.generate([prompt], [3], steps=2, progress=False)[0]  # the checkpoint sets no rollout
    assert not np.array_equal(rolled, joint)  # all chunks denoised together under the causal mask differ
    assert not pipeline.rolls_out() and pipeline.rolls_out(True)

    for name, extra in (("rollout", ["sample.rollout=true"]), ("joint", [])):
        out = tmp_path / name
        result = run_reel("sample", f"checkpoint={causal_checkpoint}", f"prompt={prompt}", f"out_dir={out}",
                          "steps=2", *extra, *QUIET)
        assert result.returncode == 0, result.stderr[-2000:]
        assert json.loads((out / "manifest.jsonl").read_text())["rollout"] is (name == "rollout")


def test_the_bundled_causal_model_follows_a_prompt_switch(tmp_path):
    """bundled:demo_causal (tools/train_causal_dit.sh) with its stored settings: a red circle goes right, then
    left, then right again over 3 training lengths, and every window reads back its own prompt."""
    segments = tmp_path / "segments.jsonl"
    ways = ["right", "left", "right"]
    segments.write_text("".join(json.dumps({"prompt": f"a red circle moving {way}", "frames": 17 if i == 0 else 16})
                                + "\n" for i, way in enumerate(ways)))
    out = tmp_path / "long"
    result = run_reel("sample", "checkpoint=bundled:demo_causal", f"prompts={segments}", "long=true",
                      f"out_dir={out}", *QUIET)
    assert result.returncode == 0, result.stderr[-2000:]
    row = json.loads((out / "manifest.jsonl").read_text())
    assert row["steps"] == 8 and row["guidance"] == 1.25 and row["long_positions"] == "cache"
    scored = run_reel("eval", "world", f"manifest={out}", "per_clip=true", *QUIET)
    assert scored.returncode == 0, scored.stderr[-2000:]
    clips = json.loads(scored.stdout)["clips"]
    assert [c["predicted"]["direction"] for c in clips] == ways
    assert all(c["correct"] for c in clips), [c["predicted"] for c in clips]


def test_an_opening_checkpoint_draws_the_first_frame_of_chunk_by_chunk_generation(causal_checkpoint):
    """sample.opening: the whole-clip teacher samples the prompt with the same seed (its own settings) and the
    first latent frame of its clip is the rollout's clean first chunk, exactly as an image latent would be."""
    import torch
    from omegaconf import OmegaConf

    from reel.sample.long_video import Segment
    from reel.sample.pipeline import TextToVideoPipeline, sample_settings

    pipeline = TextToVideoPipeline.from_checkpoint(causal_checkpoint)
    teacher = TextToVideoPipeline.from_checkpoint("bundled:demo_dit")
    s, prompt = pipeline.settings(steps=2), "a blue triangle moving right"
    kept = []
    teacher.generate([prompt], [3], height=s.height, width=s.width, progress=False, latents_out=kept)
    opening = pipeline.opening_latent("bundled:demo_dit", prompt, 3, s.height, s.width)
    assert opening.shape == (1, 16, 1, 8, 8) and torch.equal(opening[0], kept[0][:, :1])
    shared = pipeline.opening_pipeline("bundled:demo_dit")
    assert shared.autoencoder is pipeline.autoencoder and shared.text_encoder is pipeline.text_encoder

    opened = pipeline.generate([prompt], [3], steps=2, progress=False, rollout=True, opening="bundled:demo_dit")[0]
    held = np.concatenate(list(pipeline.long_video().frames([Segment(prompt, s.num_frames)], 3, s.height, s.width,
                                                            2, s.guidance, s.shift, s.solver, s.negative_prompt,
                                                            image_latent=opening)))
    np.testing.assert_array_equal(opened, held)
    assert not np.array_equal(opened, pipeline.generate([prompt], [3], steps=2, progress=False, rollout=True)[0])

    stored = OmegaConf.merge(pipeline.cfg, {"sample": {"opening": "bundled:demo_dit"}})
    assert sample_settings(stored).opening == "bundled:demo_dit"
    assert sample_settings(stored, opening="none").opening is None and sample_settings(pipeline.cfg).opening is None


def test_an_opening_must_be_a_whole_clip_dit_of_the_same_latents(causal_checkpoint, tmp_path):
    import torch

    from reel.autoencoders import load_autoencoder, save_autoencoder
    from reel.autoencoders.checkpoint import read_autoencoder_config
    from reel.errors import ReelError
    from reel.sample.pipeline import TextToVideoPipeline, check_opening

    pipeline = TextToVideoPipeline.from_checkpoint(causal_checkpoint)
    with pytest.raises(ReelError, match="sample.opening=.*a block-causal DiT"):
        pipeline.opening_pipeline(str(causal_checkpoint))
    check_opening("bundled:demo_dit", "bundled:demo_ae_light")  # another decoder of the same latents
    other = load_autoencoder("bundled:demo_ae")
    other.set_latent_stats(torch.zeros(16), torch.ones(16))
    save_autoencoder(other, tmp_path / "other", read_autoencoder_config("bundled:demo_ae"))
    with pytest.raises(ReelError, match=f"sample.opening=bundled:demo_dit: trained on autoencoder bundled:demo_ae, "
                                        f"whose latents differ from those of {tmp_path / 'other'}"):
        check_opening("bundled:demo_dit", str(tmp_path / "other"))
    result = run_reel("sample", f"checkpoint={causal_checkpoint}", "long=true", "prompt=a red circle moving left",
                      "sample.opening=/no/such", f"out_dir={tmp_path / 'out'}", "steps=1", *QUIET)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.strip() == "error: sample.opening=/no/such: checkpoint /no/such: no such folder"
    assert not (tmp_path / "out" / "000000.mp4").exists()


def test_a_long_video_records_its_opening(causal_checkpoint, tmp_path):
    out = tmp_path / "long"
    result = run_reel("sample", f"checkpoint={causal_checkpoint}", "long=true", "prompt=a red circle moving left",
                      "num_frames=17", "sample.opening=bundled:demo_dit", f"out_dir={out}", "steps=1", *QUIET)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((out / "manifest.jsonl").read_text())["opening"] == "bundled:demo_dit"
    result = run_reel("sample", f"checkpoint={causal_checkpoint}", "long=true", "prompt=a red circle moving left",
                      "num_frames=17", f"out_dir={tmp_path / 'none'}", "steps=1", *QUIET)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((tmp_path / "none" / "manifest.jsonl").read_text())["opening"] is None
    opened, plain = read_video(out / "000000.mp4"), read_video(tmp_path / "none" / "000000.mp4")
    assert opened.shape[0] == 17 and not np.array_equal(opened[:1], plain[:1])  # another first frame


def test_the_bundled_causal_models_stored_opening_applies_unless_turned_off(tmp_path):
    videos = {}
    for name, extra in (("stored", []), ("off", ["sample.opening=none"])):
        out = tmp_path / name
        result = run_reel("sample", "checkpoint=bundled:demo_causal", "prompt=a blue triangle moving right",
                          "num_frames=5", f"out_dir={out}", *extra, *QUIET)
        assert result.returncode == 0, result.stderr[-2000:]
        row = json.loads((out / "manifest.jsonl").read_text())
        assert row["rollout"] and row["opening"] == ("bundled:demo_dit" if name == "stored" else None)
        videos[name] = read_video(out / "000000.mp4")
    assert not np.array_equal(videos["stored"], videos["off"])
