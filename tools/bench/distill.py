"""Few-step students against their teacher: oracle accuracy and seconds per clip on the shapes world.

The teacher samples with 50 Euler steps and its own guidance; each student with its own stored settings
(S steps, guidance 1). Every run samples the colour x shape x direction prompts (tools/world_prompts.py)
through `reel sample` and is scored by `reel eval world`.
Every run samples at the same `--precision` (fp32, or bf16 autocast: sample.precision).
With --autoencoder DIR (an autoencoder of the same latents with a lighter decoder, sample.autoencoder) the
students decode with it, and the teacher runs twice, with its own autoencoder and with DIR: each student's
speedup is given against both ("speedup" and "speedup_same_decoder").
Usage: python tools/bench/distill.py --teacher DIR --student LABEL=DIR [--student ...] [--prompts 72]
    [--seeds 1] [--precision fp32|bf16] [--autoencoder DIR] [--out benchmarks/distill.json]
One seed per prompt scores in steps of 1/72: a few borderline squares flip with any change (even bf16 vs fp32),
so --seeds 4 (288 clips per model) is the steadier comparison.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sampling import ROOT, prompts_file, run  # noqa: E402


def score(checkpoint: str, prompts: Path, out_dir: Path, *extra: str) -> dict:
    sampled = json.loads(run("sample", f"checkpoint={checkpoint}", f"prompts={prompts}", f"out_dir={out_dir}",
                             *extra, "logging.progress=false"))
    accuracy = json.loads(run("eval", "world", f"manifest={out_dir}"))["accuracy"]
    manifest = json.loads((out_dir / "manifest.jsonl").read_text().splitlines()[0])
    return {"checkpoint": checkpoint, "steps": manifest["steps"], "guidance": manifest["guidance"], **accuracy,
            "seconds_per_clip": sampled["seconds_per_video"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="bundled:demo_dit")
    parser.add_argument("--teacher-steps", type=int, default=50)
    parser.add_argument("--student", action="append", default=[], help="LABEL=DIR")
    parser.add_argument("--prompts", type=int, default=72)
    parser.add_argument("--seeds", type=int, default=1, help="seeds per prompt")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--autoencoder", default=None, help="the students decode with this autoencoder folder")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "distill.json"))
    args = parser.parse_args()
    rows, precision = {}, f"sample.precision={args.precision}"
    light = [f"sample.autoencoder={args.autoencoder}"] if args.autoencoder else []
    with tempfile.TemporaryDirectory() as tmp:
        prompts = prompts_file(Path(tmp) / "prompts.jsonl", args.prompts, args.seeds)
        teacher = (f"steps={args.teacher_steps}", "solver=euler", precision)
        rows["teacher"] = score(args.teacher, prompts, Path(tmp) / "teacher", *teacher)
        print(json.dumps(rows["teacher"]), flush=True)
        if light:
            rows["teacher_same_decoder"] = score(args.teacher, prompts, Path(tmp) / "teacher_light", *teacher, *light)
            rows["teacher_same_decoder"]["autoencoder"] = args.autoencoder
            print(json.dumps(rows["teacher_same_decoder"]), flush=True)
        for item in args.student:
            label, path = item.split("=", 1)
            row = rows[label] = score(path, prompts, Path(tmp) / label, precision, *light)
            row["speedup"] = round(rows["teacher"]["seconds_per_clip"] / row["seconds_per_clip"], 2)
            row["joint_minus_teacher"] = round(row["joint"] - rows["teacher"]["joint"], 4)
            if light:
                same = rows["teacher_same_decoder"]
                row["autoencoder"] = args.autoencoder
                row["speedup_same_decoder"] = round(same["seconds_per_clip"] / row["seconds_per_clip"], 2)
                row["joint_minus_teacher_same_decoder"] = round(row["joint"] - same["joint"], 4)
            print(json.dumps(row), flush=True)
    result = {"prompts": args.prompts, "seeds": args.seeds, "clips": args.prompts * args.seeds,
              "precision": args.precision, "runs": rows,
              "target": "4-step student >= 10x faster than the teacher, joint accuracy within 5 points",
              "command": "python tools/bench/distill.py " + " ".join(sys.argv[1:])}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
