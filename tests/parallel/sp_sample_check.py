"""Under torchrun (or alone): TextToVideoPipeline with each video split over every rank; rank 0 saves
the uint8 videos to argv[2] (.npy). argv[1]: a DiT checkpoint folder."""
import os
import sys

import numpy as np
import torch

from reel.distributed import init_distributed
from reel.parallel.groups import build_parallel_groups
from reel.sample.pipeline import TextToVideoPipeline

if __name__ == "__main__":
    torch.set_num_threads(1)
    ranks = init_distributed(int(os.environ.get("WORLD_SIZE", 1)))
    pipeline = TextToVideoPipeline.from_checkpoint(sys.argv[1])
    if ranks.sp_size > 1:
        pipeline.split_sequence(build_parallel_groups(ranks))
    videos = pipeline.generate(["a red square moving up", "a blue circle moving left"], [5, 6], steps=3,
                               progress=False)
    if ranks.is_main:
        np.save(sys.argv[2], videos)
