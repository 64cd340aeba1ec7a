"""`reel train adapt`: move a trained DiT (autoencoder A's latent space) to autoencoder B's.

Stage 1 aligns a new patch embedding (reel/train/adapt.py) on raw clips encoded by both
autoencoders, the transformer frozen, and writes RUN_DIR/aligned; stage 2 is `reel train dit` from
it (train.init_from) in B's latent space for train.steps steps (full fine-tuning: the new input and
output layers must train), writing RUN_DIR/dit.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from omegaconf import OmegaConf, open_dict

from reel.commands import Command
from reel.errors import ReelError


@dataclass
class AdaptArgs:
    source: Optional[str] = None  # the DiT folder to adapt (trained on autoencoder A)
    # stage 1 batches and lr: on the demo's f8c16 -> f8c8 move, 200 at 1e-3 left the alignment loss at 0.77
    # (adapted model: joint 0.83 after 2000 fine-tuning steps), 400 at 1e-2 brought it to 0.08 (0.92)
    align_steps: int = 400
    align_lr: float = 1e-2
    # stage 2 from latents `reel data encode` wrote with autoencoder B (data.* still feeds stage 1's raw
    # clips); unset, stage 2 encodes the clips of `data` with B as it trains
    latents: Optional[str] = None


def check_latents_of_b(latents: str, autoencoder_b: Optional[str]) -> None:
    """Before stage 1: stage 2's latents must be autoencoder B's."""
    from reel.autoencoders.checkpoint import autoencoder_identity
    from reel.data.latent_shards import INDEX_FILE

    index_path = Path(latents) / INDEX_FILE
    if not index_path.is_file():
        raise ReelError(f"latents={latents}: no {INDEX_FILE} (write it with reel data encode and autoencoder B)")
    encoded_with = json.loads(index_path.read_text()).get("autoencoder_identity")
    if not autoencoder_b or encoded_with != autoencoder_identity(autoencoder_b):
        raise ReelError(f"latents={latents}: encoded with autoencoder {encoded_with}, not autoencoder.checkpoint="
                        f"{autoencoder_b}; encode B's with reel data encode autoencoder.checkpoint={autoencoder_b}")


def adapt_command(cfg, args: AdaptArgs) -> int:
    from reel.autoencoders import load_autoencoder
    from reel.commands.conditioning import frozen_autoencoder
    from reel.commands.train import training_loader
    from reel.commands.train_dit import TrainDitArgs, train_dit_command
    from reel.distributed import barrier, init_distributed
    from reel.models.dit_checkpoint import load_dit, save_dit
    from reel.train.adapt import adapted_dit, align_embedding

    if not args.source:
        raise ReelError("reel train adapt needs source=DIR: the DiT folder to move to autoencoder.checkpoint's space")
    if args.align_steps < 1:
        raise ReelError(f"align_steps={args.align_steps}: must be at least 1")
    if cfg.train.lora.rank:
        raise ReelError(f"train.lora.rank={cfg.train.lora.rank}: adaptation fine-tunes the whole model (its new input "
                        "and output layers must train); LoRA on an adapted model: reel train dit "
                        "train.init_from=RUN_DIR/dit train.lora.rank=...")
    if cfg.data.kind == "latents":
        raise ReelError("data=latents: alignment encodes raw clips with both autoencoders; use a clip dataset")
    if args.latents:
        check_latents_of_b(args.latents, cfg.autoencoder.checkpoint)
    torch.manual_seed(cfg.seed)
    ranks = init_distributed(cfg.distributed.sp_size, cfg.distributed.backend)
    source, source_cfg = load_dit(args.source)
    if not source_cfg.autoencoder.get("checkpoint"):
        raise ReelError(f"source={args.source}: its config names no autoencoder.checkpoint (autoencoder A)")
    ae_a = load_autoencoder(source_cfg.autoencoder.checkpoint).requires_grad_(False)
    ae_b, _ = frozen_autoencoder(cfg)
    run_dir = Path(cfg.train.run_dir)
    aligned = run_dir / "aligned"
    if not (aligned / "config.yaml").is_file():  # stage 1 is cheap and deterministic; a rerun skips it
        target = adapted_dit(source, ae_b.latent_channels)
        loader = training_loader(cfg, ranks)

        def clips():
            while True:
                for _, batch in loader:
                    yield batch["video"].float()

        def log(step: int, loss: float) -> None:
            if ranks.is_main and (step == 1 or step % 20 == 0 or step == args.align_steps):
                print(json.dumps({"stage": "align", "step": step, "loss": round(loss, 5)}), flush=True)

        losses = align_embedding(source, target, clips(), ae_a.encode, ae_b.encode, args.align_steps,
                                 args.align_lr, log)
        if ranks.is_main:
            with open_dict(cfg):
                cfg.model = OmegaConf.merge(cfg.model, source_cfg.model)
            save_dit(target, aligned, cfg, extra_info={"adapted_from": args.source, "align_steps": args.align_steps,
                                                       "align_loss_first": losses[0], "align_loss_last": losses[-1],
                                                       "autoencoder_a": source_cfg.autoencoder.checkpoint})
        barrier()
    with open_dict(cfg):
        cfg.train.init_from = str(aligned)
        if args.latents:
            cfg.data.name, cfg.data.kind, cfg.data.latents = "latents", "latents", args.latents
    return train_dit_command(cfg, TrainDitArgs())


COMMAND = Command(
    ("train", "adapt"), "move a trained DiT to another autoencoder's latent space (align, then fine-tune)",
    adapt_command, AdaptArgs,
    doc="Example: reel train adapt source=runs/shapes-64/dit autoencoder=dc-ae-v-demo-f16t4c16 "
        "autoencoder.checkpoint=runs/ae16/autoencoder data=shapes train.run_dir=runs/adapt train.steps=500\n"
        "Stage 1 trains a new patch embedding so B's latents land where A's did (align_steps batches, the "
        "transformer frozen; RUN_DIR/aligned); stage 2 fine-tunes the whole model in B's space like reel train "
        "dit. The text encoder must be the source's. latents=DIR (written by reel data encode with autoencoder B) "
        "makes stage 2 read precomputed latents instead of encoding data's clips.")
