#!/usr/bin/env bash
# The dit-tiny loss curve on the shapes world in the bundled demo autoencoder's latent space
# (benchmarks/RESULTS.md): encode clips once, then train from the shards.
#   tools/train_dit_tiny_curve.sh [RUN_DIR] [STEPS] [CLIPS]
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_DIR=${1:-runs/dit_tiny_curve}
STEPS=${2:-600}
CLIPS=${3:-1024}
REEL=${REEL:-.venv/bin/reel}
LATENTS=runs/latents/shapes-64-$CLIPS

[ -f "$LATENTS/index.json" ] || $REEL data encode experiment=shapes-64 out_dir="$LATENTS" num_clips="$CLIPS" batch_size=16
$REEL train dit experiment=shapes-64 data=latents data.latents="$LATENTS" seed=0 \
    train.run_dir="$RUN_DIR" train.steps="$STEPS" train.batch_size=8 train.lr=5e-4 train.warmup_steps=50 \
    train.log_every=10 train.ckpt_every=200 train.preview_every=200 train.precision=fp32 train.resume=latest
