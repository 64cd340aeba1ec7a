"""`reel train dit`: flow-matching training of the DiT in a frozen autoencoder's latent space."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from reel.commands import Command
from reel.errors import ReelError


@dataclass
class TrainDitArgs:
    pass


def dit_preview(cfg, autoencoder, text_encoder):
    """Sample train.fm.preview_prompts with Euler + guidance, decode, write mp4s and a contact sheet."""
    from reel.data.contact_sheet import write_contact_sheet
    from reel.data.video_io import to_uint8, write_video
    from reel.sample.latents import initial_noise, sample_latents

    fm, data = cfg.train.fm, cfg.data
    prompts = list(fm.preview_prompts)
    if not prompts:
        return None
    text = text_encoder.encode(prompts)
    negative = text_encoder.encode([cfg.sample.negative_prompt])
    shape = autoencoder.latent_shape(data.num_frames, data.height, data.width)

    @torch.no_grad()
    def preview(model, step: int, out_dir: Path) -> list:
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        noise = initial_noise(shape, list(range(len(prompts))), device)
        latents = sample_latents(model, text.embeddings.to(device), text.mask.to(device),
                                 negative.embeddings.to(device), negative.mask.to(device), noise,
                                 fm.preview_steps, fm.preview_guidance, cfg.sample.shift or fm.shift)
        model.train(was_training)
        videos = autoencoder.to(device).decode(latents).float().clamp(-1, 1).cpu()
        clips = [to_uint8(video) for video in videos]
        paths = [write_video(Path(out_dir) / f"sample_{i}.mp4", clip, data.fps) for i, clip in enumerate(clips)]
        sheet = write_contact_sheet(Path(out_dir) / f"samples_{step:07d}.png", clips,
                                    [f"{p} (step {step})" for p in prompts])
        return [sheet, *paths]

    return preview


def _dit_loader(cfg, ranks, ae_identity: str, text_identity: str):
    from reel.commands.train import training_loader
    from reel.data.latent_shards import check_shards_match, read_index

    if cfg.data.kind == "latents":
        index = read_index(cfg.data.latents)
        check_shards_match(index, ae_identity, text_identity, cfg.data.latents)
        if list(index["clip_size"]) != [cfg.data.height, cfg.data.width, cfg.data.num_frames]:
            height, width, frames = index["clip_size"]
            raise ReelError(f"data.latents={cfg.data.latents}: encoded at {height}x{width}x{frames}; set "
                            f"data.height={height} data.width={width} data.num_frames={frames}")
    return training_loader(cfg, ranks)


def check_turning_world(cfg, dataset, model) -> None:
    """Clips that turn (data.shapes.turn_prob, raw or encoded) are captioned after the turn, so the frames
    before it must be clean context, which only a block-causal model can take."""
    rows = getattr(dataset, "rows", None)
    turning = (cfg.data.kind in ("shapes", "mix") and cfg.data.shapes.turn_prob > 0) or \
        bool(rows and "context_latent_frames" in rows[0])
    if turning and getattr(model, "causal_chunk", None) is None:
        source = f"data.latents={cfg.data.latents} (encoded from a turning world)" if rows else \
            f"data.shapes.turn_prob={cfg.data.shapes.turn_prob}"
        raise ReelError(f"{source}: turning clips need a block-causal model (model.causal_chunk), whose clean "
                        "context holds the frames before the turn")


def initial_model(cfg, latent_channels: int, text_dim: int):
    """A new DiT from cfg.model, or the DiT folder train.init_from (whose model config then replaces
    cfg.model, except a model.causal_chunk set here: the same weights fine-tuned block-causal, and position
    embeddings switched on here: added at zero; its sampling settings fill the ones left unset); with
    train.lora.rank > 0, adapters on it and only they train."""
    from omegaconf import OmegaConf, open_dict

    from reel.models.dit import POSITION_EMBEDDINGS, build_dit

    if cfg.train.init_from:
        from reel.config.validate import validate_config
        from reel.models.dit_checkpoint import load_dit

        model, folder = load_dit(cfg.train.init_from)
        for key, ours in (("latent_channels", latent_channels), ("text_dim", text_dim)):
            if int(folder.dit[key]) != int(ours):
                raise ReelError(f"train.init_from={cfg.train.init_from}: the DiT has {key}={folder.dit[key]}, the "
                                f"configured autoencoder/text encoder give {ours} (adapt it with reel train adapt)")
        causal_chunk = cfg.model.causal_chunk
        # zero-initialised position embeddings asked for here are added to the folder's model
        gained = [key for key in POSITION_EMBEDDINGS if cfg.model.get(key) and not folder.model.get(key)]
        with open_dict(cfg):
            cfg.model = OmegaConf.merge(cfg.model, folder.model)
            if causal_chunk is not None and causal_chunk != cfg.model.causal_chunk:
                cfg.model.causal_chunk = causal_chunk  # causality changes no weight: rebuild and load them
            for key in gained:
                cfg.model[key] = True
            # a fine-tune samples like the model it starts from (steps, guidance, solver, ...) unless set here
            for key, value in (folder.get("sample") or {}).items():
                if value is not None and cfg.sample.get(key) is None:
                    cfg.sample[key] = value
        if cfg.model.causal_chunk != folder.model.get("causal_chunk") or gained:
            validate_config(cfg)  # the chunk against the folder's patch size and sparse tiles
            rebuilt = build_dit(cfg.model, latent_channels, text_dim)
            missing, unexpected = rebuilt.load_state_dict(model.state_dict(), strict=False)
            if unexpected or any(not name.startswith(tuple(POSITION_EMBEDDINGS.values())) for name in missing):
                raise ReelError(f"train.init_from={cfg.train.init_from}: weights do not fit model "
                                f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
            rebuilt.zero_position_embeddings(gained)
            model = rebuilt
    else:
        model = build_dit(cfg.model, latent_channels, text_dim)
    for key in ("chunk_times", "clean_context_prob"):  # what only a block-causal model can train with
        if cfg.train.fm[key] and model.causal_chunk is None:
            raise ReelError(f"train.fm.{key}={str(cfg.train.fm[key]).lower()}: the DiT of "
                            f"train.init_from={cfg.train.init_from} is not block-causal; set model.causal_chunk")
    lora = cfg.train.lora
    if lora.rank:
        from reel.models.lora import add_lora

        add_lora(model, int(lora.rank), lora.alpha, list(lora.targets), float(lora.dropout))
    return model.train()


def train_dit_command(cfg, args: TrainDitArgs) -> int:
    from reel.commands.conditioning import frozen_autoencoder, text_encoder_of
    from reel.distributed import init_distributed
    from reel.models.dit import dit_summary, format_count
    from reel.models.dit_checkpoint import save_dit
    from reel.train.engine import Trainer
    from reel.train.flow_matching import Conditioner, FlowMatchingObjective

    torch.manual_seed(cfg.seed)
    if cfg.sample.shift is None:  # the trained model samples on the time shift it was trained with
        from omegaconf import open_dict

        with open_dict(cfg):
            cfg.sample.shift = float(cfg.train.fm.shift)
    ranks = init_distributed(cfg.distributed.sp_size, cfg.distributed.backend)
    autoencoder, ae_identity = frozen_autoencoder(cfg)
    text_encoder = text_encoder_of(cfg)
    loader = _dit_loader(cfg, ranks, ae_identity, text_encoder.identity)
    model = initial_model(cfg, autoencoder.latent_channels, text_encoder.dim)
    check_turning_world(cfg, loader.dataset, model)
    objective = FlowMatchingObjective(cfg.train.fm, Conditioner(autoencoder, text_encoder),
                                      text_encoder.encode([""]), tuple(cfg.model.patch_size))
    trainer = Trainer(cfg, model, objective, loader, preview=dit_preview(cfg, autoencoder, text_encoder))
    objective.to(trainer.device)
    state = trainer.fit()
    if ranks.rank == 0:
        out = Path(cfg.train.run_dir) / "dit"
        ema_model = trainer.ema.module
        facts = {"steps": state.step, "data": cfg.data.name, "weights": "ema", "autoencoder_identity": ae_identity}
        if getattr(ema_model, "lora", None) is not None:  # only the adapters were trained: only they are saved
            from reel.models.lora_checkpoint import save_lora

            out = save_lora(ema_model, Path(cfg.train.run_dir) / "lora", cfg.train.init_from, facts)
        else:
            save_dit(ema_model, out, cfg, extra_info=facts)
        print(json.dumps({"run_dir": cfg.train.run_dir, out.name: str(out), "steps": state.step,
                          "params": format_count(dit_summary(ema_model)["total"]),
                          "trained_params": format_count(sum(p.numel() for p in model.parameters()
                                                             if p.requires_grad))}))
    return 0


COMMAND = Command(
    ("train", "dit"), "train the diffusion transformer (flow matching, DeepSpeed engine, EMA, resumable)",
    train_dit_command, TrainDitArgs,
    doc="Example: reel train dit experiment=shapes-64 train.steps=3000\n"
        "On precomputed latents: reel data encode experiment=shapes-64 out_dir=runs/latents/shapes-64, then "
        "add data=latents data.latents=runs/latents/shapes-64. Resume with train.resume=latest. "
        "The EMA weights are written to RUN_DIR/dit at the end (what reel sample checkpoint= loads).")
