"""Does a DiT lay out what its prompt asks for at pure noise? The t = 1 layout probe.

At t = 1 the flow-matching optimum predicts the mean clip of everything the prompt allows, so
x0 = noise - velocity, averaged over noises, should differ between two prompts the way the mean
training latents of the two groups differ. For each attribute pair (red vs blue, left vs right,
up vs down) this prints the data's difference (rms), the model's (rms) and their cosine; a model
that follows a prompt's direction has a left-right cosine near its colour cosine (~0.9).

    python tools/layout_probe.py DIT_DIR LATENTS_DIR [--noises 32]

LATENTS_DIR is a `reel data encode` folder in the DiT's latent space (captions.jsonl + shards).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from reel.data.latent_shards import LatentShardDataset
from reel.data.shapes import caption
from reel.sample.pipeline import TextToVideoPipeline

PAIRS = {  # attribute pair -> the two groups of training clips and the two prompts compared
    "red-blue": (dict(color="red", shape="square"), dict(color="blue", shape="square"),
                 ("red", "square", "left"), ("blue", "square", "left")),
    "left-right": (dict(direction="left"), dict(direction="right"),
                   ("red", "square", "left"), ("red", "square", "right")),
    "up-down": (dict(direction="up"), dict(direction="down"),
                ("red", "square", "up"), ("red", "square", "down")),
}


def load_latents(folder: Path):
    dataset = LatentShardDataset(folder)
    return dataset.rows, torch.stack([dataset[i]["latents"] for i in range(len(dataset))]).float()


def group_mean(rows, latents, **labels) -> torch.Tensor:
    picked = [i for i, row in enumerate(rows) if all(row[k] == v for k, v in labels.items())]
    return latents[picked].mean(0)


@torch.no_grad()
def mean_x0(pipeline: TextToVideoPipeline, words, shape, noises: int) -> torch.Tensor:
    text = pipeline.text_encoder.encode([caption(*words, 0)])
    noise = torch.randn(noises, *shape, generator=torch.Generator().manual_seed(0))
    t = torch.ones(noises)
    velocity = pipeline.model(noise, t, text.embeddings.expand(noises, -1, -1), text.mask.expand(noises, -1))
    return (noise - velocity).mean(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dit")
    parser.add_argument("latents", type=Path)
    parser.add_argument("--noises", type=int, default=32)
    args = parser.parse_args()
    rows, latents = load_latents(args.latents)
    pipeline = TextToVideoPipeline.from_checkpoint(args.dit)
    result = {}
    for name, (a, b, words_a, words_b) in PAIRS.items():
        data = group_mean(rows, latents, **a) - group_mean(rows, latents, **b)
        model = (mean_x0(pipeline, words_a, latents.shape[1:], args.noises)
                 - mean_x0(pipeline, words_b, latents.shape[1:], args.noises))
        result[name] = {"data_rms": round(data.square().mean().sqrt().item(), 4),
                        "model_rms": round(model.square().mean().sqrt().item(), 4),
                        "cosine": round(F.cosine_similarity(data.flatten(), model.flatten(), dim=0).item(), 3)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
