"""Tiny DiTs and inputs for the model tests."""
import pytest
import torch

from reel.config.schema import ModelConfig
from reel.models.dit import DiT, build_dit

LATENT_CHANNELS, TEXT_DIM = 4, 16


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The tensors are tiny: on a busy CPU, extra OpenMP threads only contend."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_config(**overrides) -> ModelConfig:
    values = dict(hidden_size=32, depth=2, num_heads=2, mlp_ratio=2.0, sparse_tile=[1, 2, 2])
    values.update(overrides)
    return ModelConfig(**values)


def tiny_dit(seed: int = 0, **overrides) -> DiT:
    """A tiny DiT with every weight random: the zero-initialised output layers would hide most of the model."""
    torch.manual_seed(seed)
    model = build_dit(tiny_config(**overrides), LATENT_CHANNELS, TEXT_DIM)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.normal_(1, 0.1)
            else:
                p.normal_(0, 0.3 if p.dim() > 1 else 0.1)
    return model


def tiny_inputs(batch: int = 2, frames: int = 5, height: int = 4, width: int = 4, text_len: int = 6, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(batch, LATENT_CHANNELS, frames, height, width, generator=g)
    timesteps = torch.rand(batch, generator=g)
    text = torch.randn(batch, text_len, TEXT_DIM, generator=g)
    mask = torch.ones(batch, text_len, dtype=torch.bool)
    mask[-1, text_len // 2:] = False
    return latents, timesteps, text, mask
