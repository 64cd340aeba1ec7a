"""`reel train distill`: the bundled demo DiT distilled into a 2-step student that `reel sample` loads."""
import json

import pytest
import torch
from omegaconf import OmegaConf

from reel.cli import main
from reel.models.dit_checkpoint import read_dit_config, read_dit_extra_info
from tests.conftest import run_reel

QUIET = ["logging.wandb=false", "logging.progress=false"]


@pytest.mark.slow
def test_dmd_student_is_written_with_its_sampling_settings_and_samples(tmp_path, tiny_latents, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # tiny tensors on a busy 2-core machine: threads only contend
    run_dir = tmp_path / "distill"
    result = run_reel("train", "distill", "teacher=bundled:demo_dit", "method=dmd", "student_steps=2",
                      *tiny_latents, f"train.run_dir={run_dir}", "train.steps=2", "train.batch_size=2",
                      "train.precision=fp32", "train.log_every=1", "train.preview_every=100",
                      "train.distill.teacher_substeps=2", "train.distill.regression_steps=1")
    assert result.returncode == 0, result.stderr[-3000:]
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert "regression" in log[0] and "critic_loss" in log[1], log  # the warm start, then DMD with its critic
    critic = torch.load(run_dir / "checkpoints" / "step_0000002" / "objective.pt", weights_only=True)
    assert set(critic) == {"critic", "critic_opt"}

    student, teacher = read_dit_config(run_dir / "dit"), read_dit_config("bundled:demo_dit")
    assert (student.sample.steps, student.sample.guidance, student.sample.solver) == (2, 1.0, "euler")
    assert student.sample.shift == teacher.sample.shift
    teacher_model = OmegaConf.to_container(teacher.model)
    assert {key: student.model[key] for key in teacher_model} == teacher_model  # newer keys get defaults
    assert student.autoencoder.checkpoint == teacher.autoencoder.checkpoint
    info = read_dit_extra_info(run_dir / "dit")
    assert (info["method"], info["teacher_guidance"], info["teacher_substeps"]) == ("dmd", teacher.sample.guidance, 2)

    cache = next(a for a in tiny_latents if a.startswith("text_encoder.cache_dir="))
    out_dir = tmp_path / "samples"
    sampled = run_reel("sample", f"checkpoint={run_dir / 'dit'}", "steps=2", "guidance=1",
                       "prompt=a red circle moving left", f"out_dir={out_dir}", cache, *QUIET)
    assert sampled.returncode == 0, sampled.stderr[-3000:]
    row = json.loads((out_dir / "manifest.jsonl").read_text().splitlines()[0])
    assert (row["steps"], row["guidance"]) == (2, 1.0)
    assert (out_dir / row["path"]).stat().st_size > 0


@pytest.mark.parametrize("args, names", [
    (["teacher=/no/such/dit", "method=dmd"], "train.distill.teacher=/no/such/dit: no such folder"),
    (["teacher=bundled:demo_dit", "method=progressive"], "train.distill.method=progressive: must be one of"),
    (["teacher=bundled:demo_dit", "student_steps=0"], "train.distill.student_steps=0: must be at least 1"),
    ([], "train.distill.teacher=None: reel train distill needs teacher=DIR"),
])
def test_mistakes_end_in_one_line_naming_the_key(args, names, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["train", "distill", *args, *QUIET])
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and names in err and "\n" not in err, err


def causal_copy_of_the_demo_dit(folder):
    """The bundled demo DiT's weights saved block-causal (model.causal_chunk=1), as a teacher-forced
    fine-tune of it would be."""
    from reel.models.dit_checkpoint import load_dit, save_dit

    model, cfg = load_dit("bundled:demo_dit")
    cfg.model.causal_chunk = 1
    save_dit(model, folder, cfg)
    return folder


@pytest.mark.slow
def test_a_causal_student_of_a_bidirectional_teacher_self_forces(tmp_path, tiny_latents, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    student = causal_copy_of_the_demo_dit(tmp_path / "causal")
    run_dir = tmp_path / "distill"
    result = run_reel("train", "distill", "teacher=bundled:demo_dit", "method=dmd", "student_steps=2",
                      f"train.distill.student={student}", "train.distill.self_forcing=true",
                      *tiny_latents, f"train.run_dir={run_dir}", "train.steps=2", "train.batch_size=2",
                      "train.precision=fp32", "train.log_every=1", "train.preview_every=100",
                      "train.distill.teacher_substeps=2")
    assert result.returncode == 0, result.stderr[-3000:]
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert all("critic_loss" in row for row in log) and len(log) == 2, log
    written = read_dit_config(run_dir / "dit")
    assert written.model.causal_chunk == 1  # the student's mask, the teacher's everything else
    assert written.sample.rollout is True  # sampled chunk by chunk, as it was trained
    assert written.model.hidden_size == read_dit_config("bundled:demo_dit").model.hidden_size
    info = read_dit_extra_info(run_dir / "dit")
    assert info["self_forcing"] is True and info["student_init"] == str(student)


@pytest.fixture(scope="module")
def tiny_dit_folder(tmp_path_factory):
    from reel.config.compose import load_config
    from reel.models.dit import build_dit
    from reel.models.dit_checkpoint import save_dit
    from tests.models.dit_helpers import LATENT_CHANNELS, TEXT_DIM, tiny_config

    cfg, _ = load_config(QUIET)
    cfg.model = tiny_config()
    folder = tmp_path_factory.mktemp("tiny_dit") / "dit"
    save_dit(build_dit(cfg.model, LATENT_CHANNELS, TEXT_DIM), folder, cfg)
    return folder


@pytest.mark.parametrize("student, extra, names", [
    ("bundled:demo_dit", ["train.distill.self_forcing=true"],
     "train.distill.self_forcing=true: the student bundled:demo_dit is not block-causal"),
    ("/no/such/dit", [], "train.distill.student=/no/such/dit: no such folder"),
    ("TINY", [], "model.depth=2 where the teacher has 4; the student must be the teacher's architecture"),
])
def test_a_student_that_cannot_start_from_its_folder_is_one_line(student, extra, names, tiny_dit_folder, capsys):
    student = str(tiny_dit_folder) if student == "TINY" else student
    with pytest.raises(SystemExit) as exited:
        main(["train", "distill", "teacher=bundled:demo_dit", "method=dmd", f"train.distill.student={student}",
              *extra, *QUIET])
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and names in err and "\n" not in err, err
