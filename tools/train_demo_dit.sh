#!/usr/bin/env bash
# Recipe for the bundled demo DiT (reel/assets/demo_dit): dit-tiny on the shapes world in the bundled
# demo autoencoder's latent space. Rerun it to reproduce the weights; a killed run resumes.
#   tools/train_demo_dit.sh [RUN_DIR] [STEPS] [CLIPS]
# Then score it: tools/world_prompts.py runs/prompts72.jsonl && reel sample prompts=runs/prompts72.jsonl
#   out_dir=runs/demo_samples && reel eval world manifest=runs/demo_samples
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_DIR=${1:-runs/demo_dit}
STEPS=${2:-4000}
CLIPS=${3:-4096}
REEL=${REEL:-.venv/bin/reel}
OUT=reel/assets/demo_dit
LATENTS=runs/latents/demo-$CLIPS

[ -f "$LATENTS/index.json" ] || $REEL data encode experiment=shapes-64 out_dir="$LATENTS" num_clips="$CLIPS" batch_size=16
$REEL train dit experiment=shapes-64 data=latents data.latents="$LATENTS" seed=0 \
    train.run_dir="$RUN_DIR" train.steps="$STEPS" train.batch_size=8 train.lr=5e-4 train.warmup_steps=100 \
    train.ema_decay=0.998 train.log_every=20 train.ckpt_every=250 train.preview_every=500 train.precision=fp32 \
    train.resume=latest

# bundle: EMA weights in fp16, the config pointing at the bundled autoencoder, no embedding cache path
.venv/bin/python - "$RUN_DIR/dit" "$OUT" <<'PY'
import sys, torch
from omegaconf import OmegaConf
from reel.models.dit_checkpoint import load_dit, read_dit_extra_info, save_dit
src, out = sys.argv[1], sys.argv[2]
model, cfg = load_dit(src)
cfg = OmegaConf.merge(cfg, {"autoencoder": {"checkpoint": "bundled:demo_ae"}, "text_encoder": {"cache_dir": None}})
save_dit(model, out, cfg, dtype=torch.float16, extra_info=read_dit_extra_info(src))
print("bundled", out)
PY
