"""Write the shapes world's 72 colour x shape x direction prompts as a `reel sample prompts=` file.

    python tools/world_prompts.py OUT.jsonl [--seeds 4] [--template 0] [--first-seed 0]

One line per prompt and seed ({"prompt", "seed"}, seeds first_seed, first_seed + 1, ...); the templates of
WORLD.md are cycled over the combinations unless --template picks one. The benchmarks use seeds from 0;
training data drawn with this script (tools/train_light_decoder.sh) starts far from them.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reel.data.shapes import TEMPLATES, all_label_combos  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--template", type=int, default=None)
    parser.add_argument("--first-seed", type=int, default=0)
    args = parser.parse_args()
    lines = []
    for seed in range(args.seeds):
        for index, labels in enumerate(all_label_combos()):
            template = TEMPLATES[(index if args.template is None else args.template) % len(TEMPLATES)]
            lines.append({"prompt": template.format(**labels), "seed": args.first_seed + seed})
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("".join(json.dumps(line) + "\n" for line in lines))
    print(json.dumps({"out": args.out, "prompts": len(lines)}))


if __name__ == "__main__":
    main()
