"""Latent-space adaptation against training from scratch: oracle accuracy against steps on autoencoder B.

Both runs train the source DiT's architecture in autoencoder B's latent space with the same settings
(batch, lr schedule, EMA, noise levels, data) for the same number of steps; one starts from the source
DiT through `reel train adapt` (stage 1 aligns a new patch embedding, stage 2 fine-tunes), the other
from random weights (`reel train dit`). At each evaluation step the EMA weights are exported and the
colour x shape x direction prompts (tools/world_prompts.py) are sampled and scored by `reel eval world`.
Target: adaptation reaches --goal joint accuracy in at most a quarter of the steps from scratch needs
(or from scratch never does within the run).
Usage: python tools/bench/adapt.py --autoencoder-b DIR --ae-config NAME [--source DIR] [--steps 2000]
    [--eval-at 125,250,500,1000,2000] [--latents DIR] [--run-root runs/adapt_bench] [--out benchmarks/adapt.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sampling import ROOT, prompts_file, run  # noqa: E402

from reel.models.dit_checkpoint import read_dit_config  # noqa: E402


def model_overrides(source_cfg) -> list:
    """`model.KEY=VALUE` for every key of the source DiT's model config (the scratch run builds the same DiT)."""
    model = OmegaConf.to_container(source_cfg.model)
    return [f"model.{key}={json.dumps(value)}" for key, value in model.items() if key != "name"]


def score(run_dir: Path, step: int, prompts: Path, work: Path, sampling: list) -> dict:
    export = work / f"{run_dir.name}_{step}"
    run("export", f"checkpoint={run_dir / 'checkpoints' / f'step_{step:07d}'}", f"out={export}", "weights=ema")
    samples = work / f"{run_dir.name}_{step}_samples"
    sampled = json.loads(run("sample", f"checkpoint={export}", f"prompts={prompts}", f"out_dir={samples}",
                             *sampling, "logging.progress=false"))
    accuracy = json.loads(run("eval", "world", f"manifest={samples}"))["accuracy"]
    return {"step": step, **accuracy, "seconds_per_clip": sampled["seconds_per_video"]}


def first_reaching(curve: list, goal: float):
    return next((row["step"] for row in curve if row["joint"] >= goal), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="bundled:demo_dit")
    parser.add_argument("--autoencoder-b", required=True, help="autoencoder B's folder")
    parser.add_argument("--ae-config", required=True, help="autoencoder B's config name (configs/autoencoder)")
    parser.add_argument("--latents", default=None, help="B's latents (reel data encode); encoded when missing")
    parser.add_argument("--clips", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--eval-at", default="125,250,500,1000,2000")
    parser.add_argument("--align-steps", type=int, default=400)
    parser.add_argument("--align-lr", default="1e-2")
    parser.add_argument("--lr", default="5e-4")
    parser.add_argument("--prompts", type=int, default=72)
    parser.add_argument("--goal", type=float, default=0.85)
    parser.add_argument("--sample-steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=2.0)
    parser.add_argument("--run-root", default="runs/adapt_bench")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "adapt.json"))
    args = parser.parse_args()
    eval_at = [int(s) for s in args.eval_at.split(",")]
    source_cfg = read_dit_config(args.source)
    sampling = [f"steps={args.sample_steps}", f"guidance={args.guidance}", "solver=euler"]  # the same for both
    root = Path(args.run_root)
    latents = Path(args.latents or root / f"latents-{args.clips}")
    space = [f"autoencoder={args.ae_config}", f"autoencoder.checkpoint={args.autoencoder_b}"]
    if not (latents / "index.json").is_file():
        run("data", "encode", "experiment=shapes-64", *space, f"out_dir={latents}", f"num_clips={args.clips}",
            "batch_size=16", "logging.progress=false")
    shared = ["experiment=shapes-64", *space, f"train.steps={args.steps}", "train.batch_size=8", f"train.lr={args.lr}",
              "train.warmup_steps=50", "train.min_lr_ratio=0.1", "train.ema_decay=0.99", "train.log_every=50",
              f"train.ckpt_every={min(eval_at)}", f"train.keep_last={args.steps // min(eval_at) + 1}",
              "train.preview_every=1000000", "train.precision=fp32", "train.resume=latest", "seed=0",
              "logging.wandb=false", "logging.progress=false"]
    runs = {"adapt": root / "adapt", "scratch": root / "scratch"}
    timing = {}
    start = time.perf_counter()
    run("train", "adapt", f"source={args.source}", *shared, "data=shapes", f"latents={latents}",
        f"align_steps={args.align_steps}", f"align_lr={args.align_lr}", f"train.run_dir={runs['adapt']}")
    timing["adapt"] = round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    run("train", "dit", *shared, *model_overrides(source_cfg), "data=latents", f"data.latents={latents}",
        f"train.run_dir={runs['scratch']}")
    timing["scratch"] = round(time.perf_counter() - start, 1)
    curves = {}
    work = root / "eval"
    prompts = prompts_file(root / "prompts.jsonl", args.prompts, 1)
    for label, run_dir in runs.items():
        curves[label] = []
        for step in eval_at:
            curves[label].append(score(run_dir, step, prompts, work, sampling))
            print(json.dumps({"run": label, **curves[label][-1]}), flush=True)
    adapt_at, scratch_at = (first_reaching(curves[k], args.goal) for k in ("adapt", "scratch"))
    met = adapt_at is not None and (scratch_at is None or 4 * adapt_at <= scratch_at)
    result = {
        "source": args.source, "autoencoder_a": source_cfg.autoencoder.name, "autoencoder_b": args.ae_config,
        "prompts": args.prompts, "steps": args.steps,
        "train_seconds": timing, "sampling": sampling, "curves": curves,
        "first_step_at_goal": {"adapt": adapt_at, "scratch": scratch_at, "goal": args.goal},
        "target": f"adaptation reaches joint {args.goal} in at most a quarter of the steps from scratch needs "
                  "(or from scratch never does)",
        "target_met": met, "command": "python tools/bench/adapt.py " + " ".join(sys.argv[1:])}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
