"""Under torchrun: short `reel train dit` runs under several ZeRO stages, one after another in the same
processes (one launch instead of three).

    torchrun --nproc_per_node=2 tests/train/zero_stage_runs.py BASE_DIR STAGES [override ...]

Each stage writes BASE_DIR/zero{stage}.
"""
import sys

from reel.commands.train_dit import TrainDitArgs, train_dit_command
from reel.config.compose import load_config

if __name__ == "__main__":
    base, stages, overrides = sys.argv[1], sys.argv[2].split(","), sys.argv[3:]
    for stage in stages:
        cfg, _ = load_config([*overrides, f"train.zero_stage={stage}", f"train.run_dir={base}/zero{stage}"])
        train_dit_command(cfg, TrainDitArgs())
