"""Attention cores against naive quadratic references: linear (with the RoPE-numerator rule),
block-causal linear and softmax, sparse sliding-tile against dense attention with the same mask."""
import pytest
import torch
import torch.nn.functional as F
from dit_helpers import one_thread  # noqa: F401

from reel.models.attention import CrossAttention
from reel.models.cache import KVCache, LinearStateCache
from reel.models.linear_attention import LinearAttention, linear_apply, linear_state
from reel.models.rope import Rope3D, apply_rope, grid_positions
from reel.models.softmax_attention import SoftmaxAttention
from reel.models.sparse_attention import (SlidingTileAttention, TileLayout, flex_tile_attention,
                                          gathered_tile_attention,
                                          sliding_tile_token_mask, tile_block_mask, tile_neighbours)
from reel.models.tokens import TokenGrid

HEAD_DIM = 16


def grid_of(frames, height, width, offset=0, chunk=None):
    return TokenGrid(frames, height, width, offset, chunk, Rope3D(HEAD_DIM))


def qkv(grid, batch=2, heads=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, heads, grid.num_tokens, HEAD_DIM, generator=g) for _ in range(3)]


def chunk_mask(grid):
    chunk = grid.chunk_index().repeat_interleave(grid.tokens_per_frame)
    return chunk[None] <= chunk[:, None]


def naive_linear(q, k, v, grid, mask=None, eps=1e-6):
    """out_i = sum_j (rope(phi q_i) . rope(phi k_j)) v_j / (sum_j phi q_i . phi k_j + eps), over allowed j."""
    q, k = F.relu(q), F.relu(k)
    cos, sin = grid.rope_cos_sin
    numerator = apply_rope(q, cos, sin) @ apply_rope(k, cos, sin).transpose(-1, -2)
    denominator = q @ k.transpose(-1, -2)
    if mask is not None:
        numerator, denominator = numerator * mask, denominator * mask
    return (numerator @ v) / (denominator.sum(-1, keepdim=True) + eps)


def test_linear_attention_equals_naive_reference():
    grid = grid_of(3, 4, 4)
    q, k, v = qkv(grid)
    torch.testing.assert_close(LinearAttention()(q, k, v, grid), naive_linear(q, k, v, grid), atol=1e-5, rtol=1e-4)


def test_block_causal_linear_equals_naive_with_block_mask():
    grid = grid_of(5, 2, 3, chunk=2)
    q, k, v = qkv(grid)
    expected = naive_linear(q, k, v, grid, chunk_mask(grid))
    torch.testing.assert_close(LinearAttention()(q, k, v, grid), expected, atol=1e-5, rtol=1e-4)


def test_linear_states_of_slices_add_up():
    """What sequence parallelism relies on: the slices' states summed (all-reduce) give the whole
    sequence's attention, and a block-causal slice given the earlier slices' total (exclusive scan) too."""
    grid = grid_of(4, 3, 3)
    q, k, v = [F.relu(x) for x in qkv(grid)]
    cos, sin = grid.rope_cos_sin
    q_rot, k_rot = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    half = grid.num_tokens // 2
    states = [linear_state(k_rot[:, :, s], k[:, :, s], v[:, :, s]) for s in (slice(0, half), slice(half, None))]
    kv, ksum = states[0][0] + states[1][0], states[0][1] + states[1][1]
    whole = linear_apply(q_rot, q, *linear_state(k_rot, k, v))
    torch.testing.assert_close(linear_apply(q_rot[:, :, half:], q[:, :, half:], kv, ksum), whole[:, :, half:])

    causal = grid.replace(causal_chunk=2)
    q, k, v = qkv(causal)
    whole = LinearAttention()(q, k, v, causal)
    first = causal.replace(frames=2)
    earlier = LinearStateCache()
    LinearAttention()(q[:, :, :half], k[:, :, :half], v[:, :, :half], first, earlier, update_cache=True)

    class SecondRank(LinearAttention):
        def earlier_ranks_state(self, kv, ksum):
            return earlier.state

    second = causal.replace(frames=2, frame_offset=2)
    torch.testing.assert_close(SecondRank()(q[:, :, half:], k[:, :, half:], v[:, :, half:], second), whole[:, :, half:])


def test_linear_state_is_fp32_under_bf16_autocast():
    grid = grid_of(2, 2, 2)
    q, k, v = [x.bfloat16() for x in qkv(grid)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        kv, ksum = linear_state(k, k, v)
    assert kv.dtype == ksum.dtype == torch.float32
    assert LinearAttention()(q, k, v, grid).dtype == torch.bfloat16


def test_block_causal_softmax_equals_masked_sdpa():
    grid = grid_of(5, 2, 2, chunk=2)
    q, k, v = qkv(grid)
    cos, sin = grid.rope_cos_sin
    expected = F.scaled_dot_product_attention(apply_rope(q, cos, sin), apply_rope(k, cos, sin), v,
                                              attn_mask=chunk_mask(grid))
    torch.testing.assert_close(SoftmaxAttention()(q, k, v, grid), expected, atol=1e-5, rtol=1e-4)


def dense_sliding_tile(q, k, v, grid, tile, window):
    cos, sin = grid.rope_cos_sin
    mask = sliding_tile_token_mask(grid, tile, window)
    return F.scaled_dot_product_attention(apply_rope(q, cos, sin), apply_rope(k, cos, sin), v, attn_mask=mask)


@pytest.mark.parametrize("tile,window,chunk", [
    ((1, 2, 2), (3, 3, 3), None),
    ((2, 2, 4), (3, 1, 3), None),  # padding: 5 x 6 x 7 tokens are not whole tiles
    ((1, 2, 2), (3, 3, 3), 2),
    ((2, 3, 2), (5, 1, 3), 2),
])
def test_sparse_equals_dense_with_the_same_mask(tile, window, chunk):
    grid = grid_of(5, 6, 7, chunk=chunk)
    q, k, v = qkv(grid, batch=1)
    expected = dense_sliding_tile(q, k, v, grid, tile, window)
    gathered = SlidingTileAttention(tile, window, backend="gather")(q, k, v, grid)
    torch.testing.assert_close(gathered, expected, atol=1e-5, rtol=1e-4)


def test_sparse_gather_in_groups_is_exact_with_gradients():
    """Long videos gather their windows a group of query tiles at a time, recomputed in backward."""
    grid, tile, window = grid_of(4, 6, 6), (1, 2, 2), (3, 3, 3)
    q, k, v = (x.requires_grad_() for x in qkv(grid, batch=1))
    layout = TileLayout(grid, tile)
    coords, valid = layout.coords(), layout.valid()
    index, kept = tile_neighbours(coords, coords, window)
    tiles = [layout.to_tiles(x) for x in (q, k, v)]
    whole = gathered_tile_attention(*tiles, index, kept, valid)
    per_tile = 2 * 27 * 4 * HEAD_DIM  # heads x window tiles x tile tokens x channels
    grouped = gathered_tile_attention(*tiles, index, kept, valid, max_gathered=5 * per_tile)  # 36 tiles in 8 groups
    assert torch.equal(grouped, whole)
    weight = torch.randn_like(whole)
    expected = torch.autograd.grad((whole * weight).sum(), (q, k, v))
    for got, want in zip(torch.autograd.grad((grouped * weight).sum(), (q, k, v)), expected):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_sparse_flex_block_mask_is_exact():
    """The flex path (compiled on GPU) with its BlockMask; eager here, where the mask_mod decides."""
    grid, tile, window = grid_of(4, 4, 6, chunk=2), (1, 2, 3), (3, 3, 1)
    q, k, v = qkv(grid, batch=1)
    cos, sin = grid.rope_cos_sin
    layout = TileLayout(grid, tile)
    coords, valid = layout.coords(), layout.valid()
    index, kept = tile_neighbours(coords, coords, window, chunk_rows=2)
    mask = tile_block_mask(index, kept, coords, coords, valid, window, chunk_rows=2)
    tiles = [layout.to_tiles(x) for x in (apply_rope(q, cos, sin), apply_rope(k, cos, sin), v)]
    out = layout.from_tiles(flex_tile_attention(*tiles, mask, compiled=False))
    expected = dense_sliding_tile(q, k, v, grid, tile, window)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-4)

    # the second chunk's queries against the keys of both chunks, as with a KV cache
    second = TileLayout(grid.replace(frames=2, frame_offset=2), tile)
    q_coords = second.coords()
    index, kept = tile_neighbours(q_coords, coords, window, chunk_rows=2)
    mask = tile_block_mask(index, kept, q_coords, coords, valid, window, chunk_rows=2)
    half = grid.num_tokens // 2
    q_tiles = second.to_tiles(apply_rope(q, cos, sin)[:, :, half:])
    out = second.from_tiles(flex_tile_attention(q_tiles, *tiles[1:], mask, compiled=False))
    torch.testing.assert_close(out, expected[:, :, half:], atol=1e-5, rtol=1e-4)


def test_sparse_compute_scales_with_kept_tiles():
    tile, window = (1, 4, 4), (3, 3, 3)
    kept_tiles = {}
    for frames in (8, 16):
        grid = grid_of(frames, 16, 16)
        layout = TileLayout(grid, tile)
        coords = layout.coords()
        index, kept = tile_neighbours(coords, coords, window)
        assert index.shape == (layout.num_tiles, 27)  # each query tile computes at most 27 key tiles
        interior = ((coords[:, 0] > 0) & (coords[:, 0] < frames - 1) & (coords[:, 1:] > 0).all(1)
                    & (coords[:, 1:] < 3).all(1))
        assert (kept[interior].sum(1) == 27).all()
        mask = tile_block_mask(index, kept, coords, coords, layout.valid(), window, None)
        assert int(mask.kv_num_blocks.sum()) == int(kept.sum())
        kept_tiles[frames] = int(kept.sum())
        dense_blocks = layout.num_tiles ** 2
        assert kept_tiles[frames] / dense_blocks < (0.25 if frames == 8 else 0.125)
        assert mask.sparsity() > (75 if frames == 8 else 87.5)
    # twice the frames, about twice the kept tiles (dense attention would be four times the blocks)
    assert 1.9 < kept_tiles[16] / kept_tiles[8] < 2.2


def test_sparse_window_truncates_rather_than_shifts_at_borders():
    coords = TileLayout(grid_of(1, 8, 8), (1, 2, 2)).coords()
    index, kept = tile_neighbours(coords, coords, (1, 3, 3))
    assert kept[0].sum() == 4 and kept[5].sum() == 9  # corner tile: itself and 3 neighbours


def test_cross_attention_masks_padding_and_handles_an_empty_caption():
    torch.manual_seed(0)
    layer = CrossAttention(32, 2)
    x, text = torch.randn(3, 10, 32), torch.randn(3, 6, 32)
    mask = torch.ones(3, 6, dtype=torch.bool)
    mask[1, 2:] = False
    mask[2] = False
    out = layer(x, text, mask)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[1], layer(x[1:2], text[1:2, :2], None)[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out[2], layer.out.bias.expand(10, -1))  # attends to nothing
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters())


def test_kv_cache_window_keeps_sink_and_latest_frames():
    cache = KVCache(window_frames=2, sink_frames=1)
    for frame in range(6):
        cache.append(torch.randn(1, 1, 1, 3, 4), torch.randn(1, 1, 1, 3, 4), torch.tensor([frame]))
        assert len(cache) <= 3
    assert cache.frames.tolist() == [0, 4, 5]
