"""Solver comparison: oracle accuracy and seconds per clip for each solver and step count.

Samples the shapes world's colour x shape x direction prompts (tools/world_prompts.py) with a DiT
checkpoint (default: the bundled demo model) through `reel sample`, scores every run with
`reel eval world`, and writes benchmarks/sampling.json with, per solver, the fewest steps whose
joint accuracy is within 2 points of 50-step Euler.
Usage: python tools/bench/sampling.py [--checkpoint DIR] [--solvers euler,dpmpp,unipc]
    [--steps 5,10,20,50] [--prompts 72] [--seeds 1]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REEL = [sys.executable, "-m", "reel.cli"]


def run(*args: str) -> str:
    result = subprocess.run([*REEL, *args], cwd=ROOT, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"reel {' '.join(args[:2])} failed: {result.stderr.strip()[-2000:]}")
    return result.stdout.strip().splitlines()[-1]


def prompts_file(out: Path, count: int, seeds: int) -> Path:
    subprocess.run([sys.executable, str(ROOT / "tools" / "world_prompts.py"), str(out), "--seeds", str(seeds)],
                   check=True, capture_output=True)
    lines = out.read_text().splitlines()
    per_seed = len(lines) // seeds
    # an even spread over the combinations when fewer than all are asked for
    keep = [line for s in range(seeds) for i, line in enumerate(lines[s * per_seed:(s + 1) * per_seed])
            if i % max(1, per_seed // count) == 0][:count * seeds]
    out.write_text("\n".join(keep) + "\n")
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--solvers", default="euler,dpmpp,unipc")
    parser.add_argument("--steps", default="5,10,20,50")
    parser.add_argument("--prompts", type=int, default=72)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--guidance", default=None)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "sampling.json"))
    args = parser.parse_args()
    checkpoint = [f"checkpoint={args.checkpoint}"] if args.checkpoint else []
    guidance = [f"guidance={args.guidance}"] if args.guidance else []
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        prompts = prompts_file(Path(tmp) / "prompts.jsonl", args.prompts, args.seeds)
        for solver in args.solvers.split(","):
            for steps in (int(s) for s in args.steps.split(",")):
                out_dir = Path(tmp) / f"{solver}_{steps}"
                sampled = json.loads(run("sample", *checkpoint, f"prompts={prompts}", f"out_dir={out_dir}",
                                         f"solver={solver}", f"steps={steps}", *guidance,
                                         "logging.progress=false"))
                scores = json.loads(run("eval", "world", f"manifest={out_dir}"))
                rows[f"{solver}_{steps}"] = {"solver": solver, "steps": steps, **scores["accuracy"],
                                             "seconds_per_clip": sampled["seconds_per_video"]}
                print(json.dumps(rows[f"{solver}_{steps}"]), flush=True)
    reference = rows.get("euler_50", {}).get("joint")
    fewest = {}
    if reference is not None:
        for solver in args.solvers.split(","):
            good = sorted(r["steps"] for r in rows.values() if r["solver"] == solver
                          and r["joint"] >= reference - 0.02)
            fewest[solver] = good[0] if good else None
    result = {"checkpoint": args.checkpoint or "bundled:demo_dit", "prompts": args.prompts, "seeds": args.seeds,
              "runs": rows, "euler_50_joint": reference, "fewest_steps_within_2_points_of_euler_50": fewest,
              "command": "python tools/bench/sampling.py " + " ".join(sys.argv[1:])}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(fewest))


if __name__ == "__main__":
    main()
