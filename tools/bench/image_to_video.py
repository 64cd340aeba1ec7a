"""Image-to-video on the shapes world: does the video keep the object of its first frame?

For held-out shapes clips (world seed 999, one per colour x shape, a random direction), the first frame
becomes `image=` and the clip's caption the prompt; the oracle scores the generated clip. Reported:
colour and shape agreement with the image, direction against the caption, and the same for the
checkpoint without the image (text only) as the reference.
A block-causal checkpoint samples as `reel sample` does (its own sample.rollout unless --rollout says).
Usage: python tools/bench/image_to_video.py --checkpoint DIR [--steps 20] [--guidance 2] [--rollout true|false]
    [--repeats 1] [--out benchmarks/image_to_video.json]
--repeats R samples R clips per colour x shape (18 R in all; R = 1 scores in steps of 1/18, so 0.95 needs all 18).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    from reel.data.oracle import score_frames
    from reel.data.shapes import COLORS, DIRECTIONS, SHAPES, render_clip
    from reel.sample.pipeline import TextToVideoPipeline

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--guidance", type=float, default=None, help="default: the checkpoint's sample.guidance")
    parser.add_argument("--rollout", choices=["true", "false"], default=None,
                        help="a block-causal checkpoint: chunk by chunk (true) or all chunks together (false); "
                             "default the checkpoint's sample.rollout")
    parser.add_argument("--repeats", type=int, default=1, help="clips per colour x shape")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "image_to_video.json"))
    args = parser.parse_args()
    pipe = TextToVideoPipeline.from_checkpoint(args.checkpoint)
    rollout = None if args.rollout is None else args.rollout == "true"
    s = pipe.settings(steps=args.steps, guidance=args.guidance)
    rng = np.random.default_rng(0)
    rows = {"image": [], "text_only": []}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        pairs = [(c, sh) for _ in range(args.repeats) for c in COLORS for sh in SHAPES]
        for index, (color, shape) in enumerate(pairs):
            direction = DIRECTIONS[int(rng.integers(len(DIRECTIONS)))]
            clip = render_clip(999, index, s.height, s.width, s.num_frames,
                               labels={"color": color, "shape": shape, "direction": direction})
            image = Path(tmp) / f"{index}.png"
            Image.fromarray(clip.frames[0]).save(image)
            for kind in rows:
                video = pipe.generate([clip.caption], [index], steps=s.steps, guidance=s.guidance, progress=False,
                                      image=image if kind == "image" else None, rollout=rollout)[0]
                predicted = score_frames(video)
                rows[kind].append({"caption": clip.caption, "expected": clip.labels, "predicted": predicted})
    seconds = time.perf_counter() - started

    def rate(kind, attribute):
        return round(float(np.mean([r["predicted"][attribute] == r["expected"][attribute] for r in rows[kind]])), 4)

    result = {"checkpoint": pipe.checkpoint, "steps": s.steps, "guidance": s.guidance, "clips": len(rows["image"]),
              "rollout": pipe.rolls_out(rollout), "seconds": round(seconds, 1)}
    for kind in rows:
        result[kind] = {a: rate(kind, a) for a in ("color", "shape", "direction")}
        result[kind]["color_and_shape"] = round(float(np.mean(
            [r["predicted"]["color"] == r["expected"]["color"] and r["predicted"]["shape"] == r["expected"]["shape"]
             for r in rows[kind]])), 4)
    result["target"] = "image: colour and shape match the image in >= 0.95 of samples"
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
