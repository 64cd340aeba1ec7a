"""Residual autoencoding: the f32 and f64 presets at tiny widths, and their non-parametric shortcuts."""
import pytest
import torch

from ae_helpers import build, clip, preset
from reel.autoencoders.blocks import DownBlock, UpBlock
from reel.autoencoders.chunks import ChunkCache, run_whole_clip

# The research presets' layouts (stages, block types, temporal downs) at widths a test can run.
TINY_WIDTHS = {
    "dc-ae-v-f32t4c32": ([4, 8, 16, 32, 32, 64], 64),
    "dc-ae-v-f64t4c128": ([4, 8, 16, 32, 32, 64, 128], 128),
}


def tiny_research_model(name: str):
    widths, size = TINY_WIDTHS[name]
    stages = len(widths)
    depths = [0] + [1] * (stages - 1)
    cfg = preset(name, width_list=widths, depth_list=depths, decoder_depth_list=depths, decoder_width_list=widths,
                 head_dim=4, expand_ratio=1)
    return build(cfg), size


@torch.no_grad()
@pytest.mark.parametrize("name", sorted(TINY_WIDTHS))
def test_research_layouts_encode_and_decode_shapes(name):
    model, size = tiny_research_model(name)
    f, c = model.spatial_factor, model.latent_channels
    x = clip(5, size=size, batch=1)
    z = model.encode(x)
    assert z.shape == (1, c, 2, size // f, size // f)
    assert model.decode(z).shape == x.shape


@torch.no_grad()
@pytest.mark.parametrize("name", sorted(TINY_WIDTHS))
def test_shortcut_shapes_of_every_down_and_up_block(name):
    model, size = tiny_research_model(name)
    h = torch.zeros(1, model.arch.width_list[0], 4, size, size)
    cache = ChunkCache(1)
    cache.first_frame = False
    for layer in model.encoder.layers:
        if isinstance(layer, DownBlock):
            assert layer.shortcut(h, cache).shape == layer(h, cache).shape
        h = layer(h, cache)
    for layer in model.decoder.layers:
        if isinstance(layer, UpBlock):
            g = torch.zeros(1, layer.conv.in_channels, *h.shape[2:])
            assert layer.shortcut(g, cache).shape == layer(g, cache).shape
            h = layer(g, cache)
    assert h.shape == (1, model.arch.decoder_width_list[0], 4, size, size)


@torch.no_grad()
@pytest.mark.parametrize("name", sorted(TINY_WIDTHS))
def test_shortcut_path_round_trips_a_constant_per_patch_input_exactly(name):
    """With every learned weight zero, only the reshape-and-average / duplicate-and-reshape shortcuts remain:
    features constant over each f x f x (time-chunk) patch and across channels come back exactly."""
    model, size = tiny_research_model(name)
    for p in model.parameters():
        p.zero_()
    f = model.spatial_factor
    width = model.arch.width_list[0]
    patches = torch.randn(1, 1, 2, size // f, size // f)  # the first frame, then one chunk of 4 frames
    h = patches.repeat_interleave(f, 3).repeat_interleave(f, 4)
    h = torch.cat([h[:, :, :1], h[:, :, 1:].repeat_interleave(4, 2)], dim=2).expand(1, width, 5, size, size)

    def through_shortcuts(x, cache):
        for layer in model.encoder.layers:
            x = layer(x, cache)
        x = model.decoder.stem(model.encoder.head(x, cache), cache)
        for layer in model.decoder.layers:
            x = layer(x, cache)
        return x

    assert torch.equal(run_whole_clip(through_shortcuts, h.contiguous(), chunk_frames=4), h)


@torch.no_grad()
def test_shortcuts_reshape_without_learning():
    """The down shortcut is space/time-to-channel then group means; the up shortcut copies channels back."""
    down, up = DownBlock(2, 8, time_factor=2), UpBlock(8, 2, time_factor=2)
    cache = ChunkCache(1)
    cache.first_frame = False
    x = torch.arange(2 * 2 * 2 * 2, dtype=torch.float32).view(1, 2, 2, 2, 2)
    packed = down.shortcut(x, cache)
    assert packed.shape == (1, 8, 1, 1, 1)
    assert torch.equal(packed.flatten(), torch.tensor([0.5, 2.5, 4.5, 6.5, 8.5, 10.5, 12.5, 14.5]))
    unpacked = up.shortcut(packed, cache)
    assert unpacked.shape == x.shape
    assert torch.equal(unpacked.flatten()[:8], torch.tensor([0.5, 0.5, 2.5, 2.5, 4.5, 4.5, 6.5, 6.5]))


@torch.no_grad()
@pytest.mark.parametrize("time_factor", [1, 2])
@pytest.mark.parametrize("first_frame", [True, False])
def test_an_up_block_is_its_learned_path_plus_its_shortcut_bit_for_bit(time_factor, first_frame):
    """UpBlock adds the shortcut before its one unpack; that must equal unpacking each path and adding."""
    torch.manual_seed(0)
    up = UpBlock(8, 4, time_factor=time_factor)
    x = torch.randn(3, 8, 1 if first_frame else 2, 4, 4)
    cache = ChunkCache(3)
    cache.first_frame = first_frame
    learned = up.unpack(up.conv(x, ChunkCache(3)), cache)
    assert torch.equal(up(x, cache), learned + up.shortcut(x, cache))
