"""`reel export` round trips: DiTs trained by 2 processes under ZeRO-1, -2 and -3, exported and reloaded."""
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from reel.cli import run
from reel.commands.export import build_from_state
from reel.models.dit_checkpoint import load_dit
from reel.train.checkpoint import load_training_checkpoint
from tests.conftest import run_reel
from tests.launch import torchrun

STAGE_RUNS = str(Path(__file__).resolve().parents[1] / "train" / "zero_stage_runs.py")
QUIET = ["logging.wandb=false", "logging.progress=false"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_latents):
    base = tmp_path_factory.mktemp("zero")
    result = torchrun(2, STAGE_RUNS, str(base), "1,2,3", *tiny_latents, "train.steps=3", "train.batch_size=2",
                      "train.lr=2e-3", "train.warmup_steps=1", "train.ckpt_every=3", "train.preview_every=100")
    assert result.returncode == 0, result.stderr[-3000:]
    return base


def probe(model):
    g = torch.Generator().manual_seed(3)
    args = (torch.randn(2, 16, 3, 8, 8, generator=g), torch.tensor([0.3, 0.8]), torch.randn(2, 5, 384, generator=g))
    with torch.no_grad():
        return model(*args)


def export(capsys, run_dir, out, *args):
    """`reel export` in this process (the command line as a user gives it; no interpreter start-up)."""
    capsys.readouterr()
    assert run(["export", f"checkpoint={run_dir}", f"out={out}", *args]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("stage", [1, 2, 3])
def test_export_of_a_zero_checkpoint_reproduces_the_training_weights(runs, tmp_path, stage, capsys):
    run_dir = runs / f"zero{stage}"
    ckpt = load_training_checkpoint(run_dir)
    assert ckpt.step == 3 and ckpt.trainer_state["zero_stage"] == stage and ckpt.trainer_state["world_size"] == 2
    trained = build_from_state("dit", ckpt.config, load_file(str(ckpt.path / "model.safetensors")))
    expected = probe(trained)

    report = export(capsys, run_dir, tmp_path / "fp32", "weights=model", "dtype=fp32")
    assert report["output_difference"] == 0.0 and report["step"] == 3
    exported, cfg = load_dit(tmp_path / "fp32")
    assert torch.equal(probe(exported), expected)  # fp32: exact
    assert (tmp_path / "fp32" / "README.md").read_text().count("ZeRO stage") == 1

    export(capsys, run_dir, tmp_path / "bf16", "weights=model", "dtype=bf16", "max_shard_mb=0.5")
    assert (tmp_path / "bf16" / "model.safetensors.index.json").is_file()  # sharded above 0.5 MB
    half, _ = load_dit(tmp_path / "bf16")
    error = (probe(half) - expected).abs().max() / expected.abs().max()
    assert 0 < error < 2e-2  # bf16 keeps 8 bits of mantissa

    export(capsys, run_dir, tmp_path / "ema", "weights=ema", "dtype=fp32")
    ema = build_from_state("dit", ckpt.config, ckpt.ema)
    assert torch.equal(probe(load_dit(tmp_path / "ema")[0]), probe(ema))


@pytest.mark.slow
@pytest.mark.distributed
def test_export_is_what_reel_sample_and_info_load(runs, tmp_path, capsys):
    export(capsys, runs / "zero2", tmp_path / "dit", "dtype=fp16")
    info = json.loads(run_reel("info", f"checkpoint={tmp_path / 'dit'}").stdout)
    assert info["kind"] == "dit" and info["stored_dtypes"] == ["float16"] and info["training"]["steps"] == 3
    sampled = run_reel("sample", f"checkpoint={tmp_path / 'dit'}", "prompt=a red square moving up", "steps=2",
                       f"out_dir={tmp_path / 'samples'}", *QUIET)
    assert sampled.returncode == 0, sampled.stderr[-2000:]
    assert (tmp_path / "samples" / "000000.mp4").is_file()


@pytest.mark.slow
@pytest.mark.distributed
def test_exporting_a_damaged_checkpoint_is_a_one_line_error(runs, tmp_path):
    folder = load_training_checkpoint(runs / "zero1").path
    damaged = tmp_path / folder.name
    import shutil

    shutil.copytree(folder, damaged)
    weights = damaged / "ema.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    result = run_reel("export", f"checkpoint={damaged}", f"out={tmp_path / 'out'}")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "damaged" in result.stderr and "ema.safetensors" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.distributed
def test_lora_run_saves_adapters_resumes_and_merges_like_unmerged(runs, tiny_latents, tmp_path, capsys):
    from reel.models.lora_checkpoint import apply_lora

    export(capsys, runs / "zero2", tmp_path / "base", "dtype=fp32")
    run_dir = tmp_path / "lora_run"
    args = ["train", "dit", *tiny_latents, f"train.init_from={tmp_path / 'base'}", "train.lora.rank=4",
            f"train.run_dir={run_dir}", "train.batch_size=2", "train.lr=1e-2", "train.ckpt_every=2",
            "train.preview_every=100", "train.resume=latest"]
    first = run_reel(*args, "train.steps=2")
    assert first.returncode == 0, first.stderr[-2000:]
    again = run_reel(*args, "train.steps=3")
    assert again.returncode == 0 and "resumed from" in again.stderr, again.stderr[-2000:]
    saved = load_file(str(run_dir / "checkpoints" / "step_0000003" / "ema.safetensors"))
    assert saved and all(name.startswith("lora.") for name in saved)  # only the adapters are saved
    assert sorted(p.name for p in (run_dir / "lora").iterdir()) == ["lora.safetensors", "lora.yaml"]

    export(capsys, run_dir, tmp_path / "merged", "merge_lora=true")
    export(capsys, run_dir, tmp_path / "adapters")
    merged = probe(load_dit(tmp_path / "merged")[0])
    unmerged = probe(apply_lora(load_dit(tmp_path / "base")[0], tmp_path / "adapters"))
    assert not torch.allclose(unmerged, probe(load_dit(tmp_path / "base")[0]))  # the adapters changed something
    torch.testing.assert_close(merged, unmerged, rtol=1e-5, atol=1e-5)

    sampled = run_reel("sample", f"lora={tmp_path / 'adapters'}", "prompt=a red square moving up", "steps=2",
                       f"out_dir={tmp_path / 'samples'}", *QUIET)
    assert sampled.returncode == 0, sampled.stderr[-2000:]
