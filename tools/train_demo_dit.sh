#!/usr/bin/env bash
# Recipe for the bundled demo DiT (reel/assets/demo_dit): dit-tiny with 2x2 patches on the shapes world in
# the bundled demo autoencoder's latent space. Rerun it to reproduce the weights; a killed run resumes.
#   tools/train_demo_dit.sh [RUN_DIR] [STEPS] [CLIPS]
# Four stages (2 CPU cores, ~5-7 steps/s at batch 8; ~85 minutes with the encoding):
#   1. layout: 2500 steps at t ~ 1 only, where the target is the prompt's mean clip. This is where the
#      model learns a prompt-dependent layout (which way the object travels); in ordinary training under 2%
#      of samples land there and the direction stays on a plateau (benchmarks/RESULTS.md).
#   2. STEPS steps over all noise levels (more mass at high noise than the default), warm-started from 1.
#   3. 3000 steps at the default noise levels and a lower lr, for sharper objects.
#   4. 3000 steps with image-to-video clips mixed in (train.fm.first_frame_prob=0.4). The bundled stage 4 was
#      warm-started from the previous bundle (stage 3 in fp16); this recipe starts it from stage 3's fp32 output.
# Then score it: tools/world_prompts.py runs/prompts72.jsonl && reel sample prompts=runs/prompts72.jsonl
#   out_dir=runs/demo_samples && reel eval world manifest=runs/demo_samples
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_DIR=${1:-runs/demo_dit}
STEPS=${2:-10000}
CLIPS=${3:-4096}
GUIDANCE=${GUIDANCE:-2}
REEL=${REEL:-.venv/bin/reel}
OUT=reel/assets/demo_dit
LATENTS=runs/latents/demo-$CLIPS
MODEL="model.patch_size=[1,2,2] model.frame_embedding=true model.spatial_embedding=true model.pooled_text=true"
train_dit() {  # the settings every stage shares; later arguments override them
    $REEL train dit experiment=shapes-64 data=latents data.latents="$LATENTS" train.batch_size=8 \
        train.ema_decay=0.998 train.log_every=50 train.ckpt_every=500 train.keep_last=2 \
        train.preview_every=100000 train.precision=fp32 train.resume=latest "$@"
}

[ -f "$LATENTS/index.json" ] || $REEL data encode experiment=shapes-64 out_dir="$LATENTS" num_clips="$CLIPS" batch_size=16

# stage 1: the prompt's layout, at t ~ 0.9975 (logit-normal at 6 +- 0.1), no caption dropout
train_dit seed=0 $MODEL \
    train.run_dir="${RUN_DIR}_layout" train.steps=2500 train.lr=2e-3 train.lr_schedule=constant \
    train.warmup_steps=100 train.ema_decay=0.99 train.fm.logit_mean=6 train.fm.logit_std=0.1 \
    train.fm.caption_dropout=0

# stage 2: every noise level (logit-normal at 1 +- 1.5: ~20% of samples above t = 0.9)
train_dit seed=1 \
    train.init_from="${RUN_DIR}_layout/dit" train.run_dir="$RUN_DIR" train.steps="$STEPS" train.lr=1e-3 \
    train.warmup_steps=100 train.min_lr_ratio=0.1 train.fm.logit_mean=1 train.fm.logit_std=1.5

# stage 3: sharper objects (squares' corners) at the default noise levels, lower lr, from stage 2
train_dit seed=2 \
    train.init_from="$RUN_DIR/dit" train.run_dir="${RUN_DIR}_detail" train.steps=3000 train.lr=3e-4 \
    train.warmup_steps=50 train.min_lr_ratio=0.1

# stage 4: image-to-video as well: 40% of clips keep their first latent frame clean (at t = 0, out of the
# loss), as `image=` samples them; this also lifted text-to-video (72 x 4 prompts 0.944 -> 0.965)
train_dit seed=3 \
    train.init_from="${RUN_DIR}_detail/dit" train.run_dir="${RUN_DIR}_i2v" train.steps=3000 train.lr=3e-4 \
    train.warmup_steps=50 train.min_lr_ratio=0.1 train.fm.first_frame_prob=0.4

# bundle: EMA weights in fp16, the config pointing at the bundled autoencoder, no embedding cache path, and
# the sampling defaults measured best on the 72 prompts (benchmarks/RESULTS.md)
.venv/bin/python - "${RUN_DIR}_i2v/dit" "$OUT" "$GUIDANCE" <<'PY'
import sys, torch
from omegaconf import OmegaConf
from reel.models.dit_checkpoint import load_dit, read_dit_extra_info, save_dit
src, out, guidance = sys.argv[1], sys.argv[2], float(sys.argv[3])
model, cfg = load_dit(src)
cfg = OmegaConf.merge(cfg, {"autoencoder": {"checkpoint": "bundled:demo_ae"}, "text_encoder": {"cache_dir": None},
                            "sample": {"steps": 20, "guidance": guidance, "solver": "euler"}})
save_dit(model, out, cfg, dtype=torch.float16, extra_info=read_dit_extra_info(src))
print("bundled", out)
PY
