"""Real processes: a run killed with SIGKILL and resumed, and ZeRO-2 data parallel under torchrun."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.launch import REPO, child_env, torchrun
from tiny_run import build_trainer, tiny_config

TINY_RUN = str(Path(__file__).with_name("tiny_run.py"))


def tiny_run(*args, timeout=180):
    result = subprocess.run([sys.executable, TINY_RUN, *args], cwd=REPO, env=child_env(), capture_output=True,
                            text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def logged_steps(run_dir):
    path = Path(run_dir) / "log.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line)["step"] for line in path.read_text().splitlines() if line.endswith("}")]


def final_weights(run_dir, step):
    folder = Path(run_dir) / "checkpoints" / f"step_{step:07d}"
    return load_file(str(folder / "model.safetensors")), load_file(str(folder / "ema.safetensors"))


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_gives_bitwise_identical_weights(tmp_path):
    common = ["train.steps=12", "train.ckpt_every=3", "seed=7"]
    tiny_run(f"run_dir={tmp_path / 'a'}", *common)

    killed = tmp_path / "b"
    process = subprocess.Popen([sys.executable, TINY_RUN, f"run_dir={killed}", *common, "--sleep", "0.25"],
                               cwd=REPO, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while not any(step >= 7 for step in logged_steps(killed)):  # then it is inside step 8
            assert process.poll() is None and time.time() < deadline, process.stderr.read().decode()[-3000:]
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    assert max(logged_steps(killed)) < 12 and not (killed / "checkpoints" / "step_0000012").exists()

    result = tiny_run(f"run_dir={killed}", *common, "train.resume=latest")
    assert "resumed from" in result.stderr
    assert logged_steps(killed) == list(range(1, 13))  # lines past the checkpoint were replaced, not doubled
    (model_a, ema_a), (model_b, ema_b) = final_weights(tmp_path / "a", 12), final_weights(killed, 12)
    for name in model_a:
        assert torch.equal(model_a[name], model_b[name]), name
        assert torch.equal(ema_a[name], ema_b[name]), name


@pytest.mark.slow
@pytest.mark.distributed
def test_zero2_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    steps = 5
    two = tmp_path / "two"
    result = torchrun(2, TINY_RUN, f"run_dir={two}", f"train.steps={steps}", "train.batch_size=2",
                      "train.zero_stage=2", "train.ckpt_every=100", "--dropout", "0", timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]

    one = tmp_path / "one"  # in this process: one rank, batch 4
    cfg = tiny_config(one, **{"train.steps": steps, "train.batch_size": 4, "train.zero_stage": 2,
                              "train.ckpt_every": 100})
    build_trainer(cfg, dropout=0.0, rank=0, world=1).fit()

    log_two = [json.loads(line) for line in (two / "log.jsonl").read_text().splitlines()]
    log_one = [json.loads(line) for line in (one / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log_two] == list(range(1, steps + 1))
    for a, b in zip(log_two, log_one):
        assert abs(a["loss"] - b["loss"]) <= 1e-5, (a["step"], a["loss"], b["loss"])
    assert log_two[0]["samples_per_s"] > 0
    (model_two, ema_two), (model_one, ema_one) = final_weights(two, steps), final_weights(one, steps)
    for name in model_one:
        torch.testing.assert_close(model_two[name], model_one[name], rtol=0, atol=1e-5)
        torch.testing.assert_close(ema_two[name], ema_one[name], rtol=0, atol=1e-5)
    state = json.loads((two / "checkpoints" / f"step_{steps:07d}" / "trainer_state.json").read_text())
    assert state["world_size"] == 2 and state["counters"]["samples_seen"] == steps * 4
    assert (two / "checkpoints" / f"step_{steps:07d}" / "ranks" / "rank_00001.json").is_file()
