"""`reel train distill`: a trained DiT folder into a few-step student, sampled at guidance 1.

The student starts as a copy of the teacher and trains with the engine like any DiT; its folder
RUN_DIR/dit keeps the teacher's model, latent space and text encoder, and sample settings of S
Euler steps on the teacher's shifted grid at guidance 1 (guidance is distilled into it), so
`reel sample checkpoint=RUN_DIR/dit` samples it as trained (its config.yaml holds those settings).
Methods: reel/train/distill_consistency.py and reel/train/distill_dmd.py.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from omegaconf import OmegaConf, open_dict

from reel.commands import Command
from reel.errors import ReelError

TEXT_ENCODER_KEYS = ("name", "path", "max_length")  # what makes two text encoders the same embeddings
# model keys a student may hold apart from its teacher: the attention mask and training-time memory options
STUDENT_OWN_KEYS = ("causal_chunk", "gradient_checkpointing", "recompute_activations")


def read_teacher(cfg):
    """(the teacher's folder, its config); the folder must exist and hold a DiT."""
    from reel.assets import resolve_checkpoint_path
    from reel.models.dit_checkpoint import read_dit_config

    given = cfg.train.distill.teacher
    if not given:
        raise ReelError("train.distill.teacher=None: reel train distill needs teacher=DIR, a DiT folder (RUN_DIR/dit "
                        "of reel train dit, or bundled:demo_dit)")
    path = resolve_checkpoint_path(given)
    if not path.is_dir():
        raise ReelError(f"train.distill.teacher={given}: no such folder (a DiT folder such as RUN_DIR/dit)")
    return path, read_dit_config(path)


def read_student(cfg, teacher_path, teacher_cfg):
    """(the folder the student starts from, its config): train.distill.student, else the teacher itself.
    A separate student must be the teacher's architecture in the teacher's latent space (only
    model.causal_chunk may differ), so the teacher's scores apply to its samples."""
    from reel.assets import resolve_checkpoint_path
    from reel.autoencoders.checkpoint import autoencoder_identity
    from reel.models.dit_checkpoint import read_dit_config

    given = cfg.train.distill.student
    if not given:
        return teacher_path, teacher_cfg
    path = resolve_checkpoint_path(given)
    if not path.is_dir():
        raise ReelError(f"train.distill.student={given}: no such folder (a DiT folder such as RUN_DIR/dit)")
    student_cfg = read_dit_config(path)
    where = f"train.distill.student={given}"
    for key in sorted(set(teacher_cfg.model) | set(student_cfg.model)):
        ours, theirs = student_cfg.model.get(key), teacher_cfg.model.get(key)
        if key not in STUDENT_OWN_KEYS and ours != theirs:
            raise ReelError(f"{where}: model.{key}={ours} where the teacher has {theirs}; the student must be the "
                            f"teacher's architecture (only model.causal_chunk may differ)")
    for key in ("latent_channels", "text_dim"):
        if student_cfg.dit.get(key) != teacher_cfg.dit.get(key):
            raise ReelError(f"{where}: dit.{key}={student_cfg.dit.get(key)} where the teacher has "
                            f"{teacher_cfg.dit.get(key)}")
    ours, theirs = student_cfg.autoencoder.get("checkpoint"), teacher_cfg.autoencoder.get("checkpoint")
    if str(ours) != str(theirs) and (not ours or autoencoder_identity(ours) != autoencoder_identity(theirs)):
        raise ReelError(f"{where}: it works in {ours}'s latent space, the teacher in {theirs}'s")
    for key in TEXT_ENCODER_KEYS:
        if student_cfg.text_encoder.get(key) != teacher_cfg.text_encoder.get(key):
            raise ReelError(f"{where}: text_encoder.{key}={student_cfg.text_encoder.get(key)} where the teacher "
                            f"has {teacher_cfg.text_encoder.get(key)}")
    return path, student_cfg


def adopt_teacher(cfg, teacher_cfg, student_cfg=None) -> None:
    """The student lives where the teacher does (its model, autoencoder and text encoder) and samples with
    S Euler steps at guidance 1 on the teacher's time grid; the teacher's own settings fill in the
    distillation options left unset."""
    from reel.autoencoders.checkpoint import autoencoder_identity
    from reel.config.schema import AutoencoderConfig, ModelConfig, SampleConfig
    from reel.config.validate import validate_config
    from reel.sample.pipeline import DEFAULT_GUIDANCE, DEFAULT_STEPS
    from reel.train.distill import default_substeps

    distill = cfg.train.distill
    teacher_ae = teacher_cfg.autoencoder.get("checkpoint")
    if not teacher_ae:
        raise ReelError(f"train.distill.teacher={distill.teacher}: its config names no autoencoder.checkpoint")
    ours = cfg.autoencoder.checkpoint
    if ours and str(ours) != str(teacher_ae) and autoencoder_identity(ours) != autoencoder_identity(teacher_ae):
        raise ReelError(f"autoencoder.checkpoint={ours}: the teacher works in {teacher_ae}'s latent space; leave "
                        f"autoencoder.* unset (the teacher's is used) or move the teacher with reel train adapt")
    for key in TEXT_ENCODER_KEYS:
        if teacher_cfg.text_encoder.get(key) != cfg.text_encoder.get(key):
            raise ReelError(f"text_encoder.{key}={cfg.text_encoder.get(key)}: the teacher was trained with "
                            f"text_encoder.{key}={teacher_cfg.text_encoder.get(key)}")
    teacher_sample = teacher_cfg.get("sample") or OmegaConf.create({})
    steps = int(distill.student_steps)
    with open_dict(cfg):
        cfg.model = OmegaConf.merge(OmegaConf.structured(ModelConfig), teacher_cfg.model)
        if student_cfg is not None:  # the student's own attention mask
            cfg.model.causal_chunk = student_cfg.model.get("causal_chunk")
        cfg.autoencoder = OmegaConf.merge(OmegaConf.structured(AutoencoderConfig), teacher_cfg.autoencoder)
        if distill.teacher_guidance is None:
            guidance = teacher_sample.get("guidance")
            distill.teacher_guidance = float(DEFAULT_GUIDANCE if guidance is None else guidance)
        if distill.teacher_substeps is None:
            distill.teacher_substeps = default_substeps(teacher_sample.get("steps") or DEFAULT_STEPS, steps)
        cfg.sample = OmegaConf.merge(OmegaConf.structured(SampleConfig), teacher_sample)
        cfg.sample.steps, cfg.sample.guidance, cfg.sample.solver = steps, 1.0, "euler"
        if distill.self_forcing:  # sampled chunk by chunk, as it is trained
            cfg.sample.rollout = True
        cfg.train.fm.preview_steps, cfg.train.fm.preview_guidance = steps, 1.0
    validate_config(cfg)  # the teacher's autoencoder and patch size against the clip size


def distill_objective(cfg, teacher_model, autoencoder, text_encoder):
    from reel.train.distill import Teacher
    from reel.train.distill_consistency import ConsistencyDistillObjective
    from reel.train.distill_dmd import DMDObjective
    from reel.train.flow_matching import Conditioner

    distill = cfg.train.distill
    teacher = Teacher(teacher_model, text_encoder.encode([""]), distill.teacher_guidance)
    common = dict(student_steps=distill.student_steps, substeps=distill.teacher_substeps,
                  shift=cfg.sample.shift or 1.0)
    if distill.method == "consistency":
        return ConsistencyDistillObjective(teacher, Conditioner(autoencoder, text_encoder), **common)
    data = cfg.data
    return DMDObjective(teacher, text_encoder, autoencoder.latent_shape(data.num_frames, data.height, data.width),
                        critic_lr=distill.critic_lr, critic_updates=distill.critic_updates,
                        regression_steps=distill.regression_steps, grad_clip=cfg.train.grad_clip, seed=cfg.seed,
                        self_forcing=distill.self_forcing, causal_chunk=cfg.model.causal_chunk, **common)


def distill_command(cfg, args=None) -> int:
    from reel.commands.conditioning import frozen_autoencoder, text_encoder_of
    from reel.commands.train_dit import _dit_loader, dit_preview
    from reel.distributed import init_distributed
    from reel.models.dit import dit_summary, format_count
    from reel.models.dit_checkpoint import load_dit, save_dit
    from reel.train.engine import Trainer

    teacher_path, teacher_cfg = read_teacher(cfg)
    student_path, student_cfg = read_student(cfg, teacher_path, teacher_cfg)
    if cfg.train.distill.self_forcing and student_cfg.model.get("causal_chunk") is None:
        which = (f"the student {cfg.train.distill.student}" if cfg.train.distill.student
                 else f"the teacher {cfg.train.distill.teacher}")
        raise ReelError(f"train.distill.self_forcing=true: {which} is not block-causal (model.causal_chunk=null); "
                        f"fine-tune the teacher first with reel train dit train.init_from=TEACHER model.causal_chunk=1 "
                        f"train.fm.chunk_times=true and pass it as train.distill.student")
    if cfg.train.lora.rank:
        raise ReelError(f"train.lora.rank={cfg.train.lora.rank}: distillation trains the whole student")
    if cfg.train.init_from:
        raise ReelError(f"train.init_from={cfg.train.init_from}: the student starts from train.distill.teacher")
    if cfg.distributed.sp_size != 1:
        raise ReelError(f"distributed.sp_size={cfg.distributed.sp_size}: distillation runs data-parallel only; use 1")
    adopt_teacher(cfg, teacher_cfg, student_cfg)
    torch.manual_seed(cfg.seed)
    ranks = init_distributed(cfg.distributed.sp_size, cfg.distributed.backend)
    autoencoder, ae_identity = frozen_autoencoder(cfg)
    text_encoder = text_encoder_of(cfg)
    if int(teacher_cfg.dit.text_dim) != int(text_encoder.dim):
        raise ReelError(f"train.distill.teacher={cfg.train.distill.teacher}: the DiT takes text of width "
                        f"{teacher_cfg.dit.text_dim}, the text encoder gives {text_encoder.dim}")
    loader = _dit_loader(cfg, ranks, ae_identity, text_encoder.identity)
    teacher_model, _ = load_dit(teacher_path)
    student, _ = load_dit(student_path)
    objective = distill_objective(cfg, teacher_model, autoencoder, text_encoder)
    trainer = Trainer(cfg, student.train(), objective, loader, preview=dit_preview(cfg, autoencoder, text_encoder))
    objective.to(trainer.device)
    state = trainer.fit()
    if ranks.rank == 0:
        distill = cfg.train.distill
        out = save_dit(trainer.ema.module, Path(cfg.train.run_dir) / "dit", cfg, extra_info={
            "steps": state.step, "data": cfg.data.name, "weights": "ema", "autoencoder_identity": ae_identity,
            "distilled_from": str(distill.teacher), "method": distill.method, "student_steps": distill.student_steps,
            "teacher_guidance": distill.teacher_guidance, "teacher_substeps": distill.teacher_substeps,
            "self_forcing": distill.self_forcing, "student_init": str(student_path)})
        print(json.dumps({"run_dir": cfg.train.run_dir, "dit": str(out), "steps": state.step,
                          "method": distill.method, "student_steps": distill.student_steps,
                          "params": format_count(dit_summary(trainer.ema.module)["total"])}))
    return 0


COMMAND = Command(
    ("train", "distill"), "distil a trained DiT into a few-step student (consistency or DMD), sampled at guidance 1",
    distill_command,
    aliases={"teacher": "train.distill.teacher", "method": "train.distill.method",
             "student_steps": "train.distill.student_steps"},
    doc="Example: reel train distill teacher=runs/shapes-64/dit method=consistency student_steps=4 "
        "experiment=shapes-64 data=latents data.latents=runs/latents/shapes-64 train.run_dir=runs/distill "
        "train.steps=500\n"
        "method=consistency: the student's velocity at a point of each of its S segments regresses onto the "
        "guided teacher's K Euler steps across it (train.distill.teacher_substeps). method=dmd: DMD2 distribution "
        "matching, data-free (only the text of the batches), a fake-score critic trained alongside "
        "(train.distill.critic_lr, critic_updates), optional regression warm start (regression_steps); with a "
        "block-causal teacher, train.distill.self_forcing=true rolls the student out chunk by chunk against its "
        "cache, as reel sample long=true does; train.distill.student=CAUSAL_DIT starts the student from a block-causal "
        "fine-tune of a bidirectional teacher (the teacher and the critic then score whole clips).\n"
        "The teacher's guidance (train.distill.teacher_guidance, default its sample.guidance) is distilled: "
        "RUN_DIR/dit samples with sample.steps=S, sample.guidance=1: "
        "reel sample checkpoint=RUN_DIR/dit steps=S guidance=1. Resume with train.resume=latest.")
