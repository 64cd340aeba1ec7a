"""The DiT end to end: shapes, block-causal generation chunk by chunk with a cache, causality,
gradient checkpointing, empty captions."""
import pytest
import torch
from dit_helpers import one_thread, tiny_dit, tiny_inputs  # noqa: F401

KINDS = ["linear", "softmax", "sparse", ["linear", "softmax", "sparse", "linear"]]


def depth_of(attention):
    return len(attention) if isinstance(attention, list) else 2


@pytest.mark.parametrize("patch", [[1, 1, 1], [1, 2, 2]])
@pytest.mark.parametrize("frames", [1, 5])
def test_output_has_the_latent_shape_for_images_and_video(patch, frames):
    model = tiny_dit(patch_size=patch, attention=["linear", "sparse"])
    latents, t, text, mask = tiny_inputs(frames=frames)
    out = model(latents, t, text, mask)
    assert out.shape == latents.shape and torch.isfinite(out).all()


def test_latents_must_fill_whole_patches():
    model = tiny_dit(patch_size=[1, 2, 2])
    latents, t, text, mask = tiny_inputs(height=5)
    with pytest.raises(ValueError, match="whole patches"):
        model(latents, t, text, mask)


def test_bf16_autocast_runs_close_to_fp32():
    model = tiny_dit(attention=["linear", "sparse"], causal_chunk=2)
    latents, t, text, mask = tiny_inputs()
    reference = model(latents, t, text, mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(latents, t, text, mask)
    out.float().square().mean().backward()
    assert torch.isfinite(out).all() and all(torch.isfinite(p.grad).all() for p in model.parameters())
    assert (out.float() - reference).abs().mean() < 0.05 * reference.abs().mean()


def test_per_frame_timesteps_match_a_shared_one():
    model = tiny_dit().eval()
    latents, t, text, mask = tiny_inputs()
    with torch.no_grad():
        shared = model(latents, t, text, mask)
        per_frame = model(latents, t[:, None].expand(-1, 5), text, mask)
        mixed = model(latents, torch.stack([t, t, t, t, torch.zeros_like(t)], dim=1), text, mask)
    torch.testing.assert_close(per_frame, shared, atol=1e-4, rtol=1e-4)
    assert (mixed - shared).abs().max() > 1e-3
    with pytest.raises(ValueError):
        model(latents, torch.rand(2, 3), text, mask)


def run_by_chunks(model, latents, t, text, mask, chunk):
    cache = model.init_cache()
    outs = []
    for start in range(0, latents.shape[2], chunk):
        piece = latents[:, :, start:start + chunk]
        model.forward_chunk(piece, t, text, mask, cache)  # a read-only denoising step leaves the cache alone
        outs.append(model.forward_chunk(piece, t, text, mask, cache, update_cache=True))
    assert cache.frames == latents.shape[2]
    return torch.cat(outs, dim=2)


@pytest.mark.parametrize("attention", KINDS, ids=str)
@pytest.mark.parametrize("temporal", ["depthwise", "dense"])
def test_causal_whole_equals_chunk_by_chunk_with_cache(attention, temporal):
    model = tiny_dit(attention=attention, depth=depth_of(attention), causal_chunk=2, mixffn_temporal=temporal).eval()
    latents, t, text, mask = tiny_inputs(frames=5)  # the last chunk is a single frame
    with torch.no_grad():
        whole = model(latents, t, text, mask)
        chunked = run_by_chunks(model, latents, t, text, mask, chunk=2)
    assert (whole - chunked).abs().max() < 1e-4


def test_chunks_can_come_several_at_a_time_and_with_a_patch_in_time():
    model = tiny_dit(attention=KINDS[-1], depth=4, causal_chunk=2, patch_size=[2, 1, 1], ffn="mlp").eval()
    latents, t, text, mask = tiny_inputs(frames=8)
    with torch.no_grad():
        whole = model(latents, t, text, mask)
        cache = model.init_cache()
        first = model.forward_chunk(latents[:, :, :4], t, text, mask, cache, update_cache=True)
        rest = model.forward_chunk(latents[:, :, 4:], t, text, mask, cache, frame_offset=4)
    assert (whole - torch.cat((first, rest), dim=2)).abs().max() < 1e-4
    with pytest.raises(ValueError):
        model.forward_chunk(latents[:, :, :2], t, text, mask, cache, frame_offset=3)


def cache_state(cache):
    tensors = []
    for block in cache.blocks:
        attn = block.attn
        tensors += [attn.kv, attn.ksum] if hasattr(attn, "kv") else [attn.k, attn.v, attn.frames, *attn.extras.values()]
        tensors.append(block.ffn.frames)
    return tensors


@pytest.mark.parametrize("attention", KINDS, ids=str)
@pytest.mark.parametrize("patch", [[1, 1, 1], [2, 1, 1]], ids=str)
def test_a_forward_can_commit_the_clean_chunks_in_front_of_a_noisy_one(attention, patch):
    """commit_frames: clean chunks at t = 0 and a chunk being denoised in one forward store only the clean ones,
    and the noisy chunk's output is that of a separate commit followed by a read-only step."""
    model = tiny_dit(attention=attention, depth=depth_of(attention), causal_chunk=2, patch_size=patch).eval()
    latents, t, text, mask = tiny_inputs(frames=8)
    clean, noisy = latents[:, :, 2:6], latents[:, :, 6:]
    groups = 2 // patch[0]  # the noisy chunk's timesteps, per patched frame
    times = torch.cat([torch.zeros(2, 4 // patch[0]), t[:, None].expand(-1, groups)], dim=1)
    with torch.no_grad():
        separate, fused = model.init_cache(), model.init_cache()
        for cache in (separate, fused):
            model.forward_chunk(latents[:, :, :2], torch.zeros(2), text, mask, cache, update_cache=True)
        model.forward_chunk(clean, torch.zeros(2), text, mask, separate, update_cache=True)
        expected = model.forward_chunk(noisy, t, text, mask, separate)
        out = model.forward_chunk(torch.cat([clean, noisy], dim=2), times, text, mask, fused, update_cache=True,
                                  commit_frames=4)
    assert fused.frames == separate.frames == 6
    torch.testing.assert_close(out[:, :, 4:], expected, rtol=0, atol=1e-4)
    for got, want in zip(cache_state(fused), cache_state(separate)):
        assert (got is None) == (want is None)
        if got is not None and got.is_floating_point():
            assert (got - want).abs().max() <= 1e-5 * want.abs().max()  # fp32 sums in another order
        elif got is not None:
            assert torch.equal(got, want)  # frame labels, tile coordinates and masks
    with pytest.raises(ValueError, match="commit_frames=3"):
        model.forward_chunk(latents[:, :, 6:], t, text, mask, fused, update_cache=True, commit_frames=3)


@pytest.mark.parametrize("attention", KINDS, ids=str)
def test_later_chunks_never_change_earlier_outputs(attention):
    model = tiny_dit(attention=attention, depth=depth_of(attention), causal_chunk=2).eval()
    latents, t, text, mask = tiny_inputs(frames=6)
    changed = latents.clone()
    changed[:, :, 4:] += torch.randn_like(changed[:, :, 4:])
    with torch.no_grad():
        before, after = model(latents, t, text, mask), model(changed, t, text, mask)
    assert (before[:, :, :4] - after[:, :, :4]).abs().max() < 1e-6
    assert (before[:, :, 4:] - after[:, :, 4:]).abs().max() > 1e-3
    non_causal = tiny_dit(attention=attention, depth=depth_of(attention)).eval()
    with torch.no_grad():
        assert (non_causal(latents, t, text, mask) - non_causal(changed, t, text, mask))[:, :, :4].abs().max() > 1e-4


def test_windowed_cache_stays_bounded():
    model = tiny_dit(attention=["softmax", "linear"], causal_chunk=1).eval()
    latents, t, text, mask = tiny_inputs(frames=6)
    cache = model.init_cache(window_frames=2, sink_frames=1)
    with torch.no_grad():
        for frame in range(6):
            model.forward_chunk(latents[:, :, frame:frame + 1], t, text, mask, cache, update_cache=True)
            assert len(cache.blocks[0].attn) <= 3
    assert cache.blocks[0].attn.frames.tolist() == [0, 4, 5]
    assert cache.blocks[1].attn.kv.shape == (2, 2, 16, 16)  # linear: one constant-size state


@pytest.mark.parametrize("attention", [["linear", "sparse"], ["softmax", "linear"]], ids=str)
def test_gradient_checkpointing_gives_the_same_gradients(attention):
    latents, t, text, mask = tiny_inputs(frames=3)
    grads = []
    for checkpointing in (False, True):
        model = tiny_dit(attention=attention, causal_chunk=2, gradient_checkpointing=checkpointing)
        model(latents, t, text, mask).square().mean().backward()
        grads.append({name: p.grad for name, p in model.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, msg=name)


def test_empty_caption_gives_finite_output_and_gradients():
    model = tiny_dit(attention=["linear", "softmax"])
    latents, t, text, mask = tiny_inputs()
    mask[0] = False
    out = model(latents, t, text, mask)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_fresh_model_predicts_zero_and_trains():
    from reel.models.dit import build_dit
    from dit_helpers import tiny_config, LATENT_CHANNELS, TEXT_DIM

    torch.manual_seed(0)
    model = build_dit(tiny_config(attention=["linear", "sparse"]), LATENT_CHANNELS, TEXT_DIM)
    latents, t, text, mask = tiny_inputs()
    out = model(latents, t, text, mask)
    assert out.abs().max() == 0  # zero-initialised output layer
    out.sub(latents).square().mean().backward()
    assert model.final_proj.weight.grad.abs().max() > 0


def test_forward_chunk_needs_a_causal_model():
    model = tiny_dit()
    latents, t, text, mask = tiny_inputs()
    with pytest.raises(ValueError):
        model.forward_chunk(latents, t, text, mask, model.init_cache())


@pytest.mark.parametrize("temporal", ["depthwise", "dense"])
@pytest.mark.parametrize("attention", KINDS)
def test_recomputed_activations_give_the_same_outputs_and_gradients(attention, temporal):
    latents, t, text, mask = tiny_inputs(frames=3)
    results = []
    for recompute in ("none", "attention", "all"):
        model = tiny_dit(attention=attention, depth=depth_of(attention), mixffn_temporal=temporal,
                         recompute_activations=recompute)
        out = model(latents, t, text, mask)
        out.square().mean().backward()
        results.append((out, {name: p.grad for name, p in model.named_parameters()}))
    for out, grads in results[1:]:
        torch.testing.assert_close(out, results[0][0], atol=0, rtol=0)
        for name, grad in results[0][1].items():
            torch.testing.assert_close(grads[name], grad, atol=1e-7, rtol=1e-6, msg=name)


def assert_chunked_equals_whole(latents, t, text, mask, **overrides):
    """A block-causal tiny DiT with these options gives the same output chunk by chunk (cache) as whole."""
    causal = tiny_dit(attention=["linear", "softmax"], causal_chunk=2, **overrides).eval()
    whole = causal(latents, t, text, mask)
    cache = causal.init_cache()
    pieces = [causal.forward_chunk(latents[:, :, i:i + 2], t, text, mask, cache, update_cache=True)
              for i in (0, 2)]
    torch.testing.assert_close(torch.cat(pieces, dim=2), whole, atol=1e-4, rtol=0)


@pytest.mark.parametrize("embedding, module", [("frame_embedding", "frame_embed"),
                                               ("spatial_embedding", "spatial_embed")])
def test_position_embedding_reaches_the_output_and_keeps_chunked_equal_to_whole(embedding, module):
    latents, t, text, mask = tiny_inputs(frames=4)
    embedded = tiny_dit(attention="linear", **{embedding: True}).eval()
    with torch.no_grad():
        out = embedded(latents, t, text, mask)
        getattr(embedded, module).weight.zero_()
        getattr(embedded, module).bias.zero_()
        assert (embedded(latents, t, text, mask) - out).abs().max() > 1e-2
        assert_chunked_equals_whole(latents, t, text, mask, **{embedding: True})



def test_pooled_text_conditions_every_block_and_ignores_padding():
    latents, t, text, mask = tiny_inputs(frames=3)
    model = tiny_dit(attention="linear", pooled_text=True).eval()
    mask = mask.clone()
    mask[:, -2:] = False
    padded = text.clone()
    padded[:, -2:] += 5.0  # states behind the mask
    with torch.no_grad():
        out = model(latents, t, text, mask)
        torch.testing.assert_close(model(latents, t, padded, mask), out, rtol=0, atol=0)
        for block in model.blocks:  # without cross-attention the caption still reaches the output
            block.cross_attn.out.weight.zero_()
            block.cross_attn.out.bias.zero_()
        other = text.roll(1, dims=0)
        assert (model(latents, t, other, mask) - model(latents, t, text, mask)).abs().max() > 1e-3
        model.pooled_text[2].weight.zero_()
        model.pooled_text[2].bias.zero_()
        torch.testing.assert_close(model(latents, t, other, mask), model(latents, t, text, mask), rtol=0, atol=0)


def test_frame_text_modulates_each_frame_by_caption_and_keeps_chunked_equal_to_whole():
    latents, t, text, mask = tiny_inputs(frames=4)
    same = latents[:, :, :1].expand_as(latents).contiguous()  # every frame alike: only frame_text tells them apart
    model = tiny_dit(attention="linear", mixffn_temporal="none", frame_text=True).eval()
    with torch.no_grad():
        for block in model.blocks:  # no cross-attention, self-attention (RoPE) or temporal conv: the caption and
            block.cross_attn.out.weight.zero_()  # the frame index reach the output through frame_text alone
            block.cross_attn.out.bias.zero_()
            block.attn.out.weight.zero_()
            block.attn.out.bias.zero_()
        model.frame_text[2].weight.mul_(3.0)
        out = model(same, t, text, mask)
        frame_spread = (out - out[:, :, :1]).abs().amax(dim=(0, 1, 3, 4))
        assert (frame_spread[1:] > 1e-2).all()
        other = text.roll(1, dims=0)
        assert (model(same, t, other, mask) - out).abs().max() > 1e-2
        model.frame_text[2].weight.zero_()
        model.frame_text[2].bias.zero_()
        plain = model(same, t, text, mask)
        torch.testing.assert_close(plain, model(same, t, other, mask), rtol=0, atol=0)
        torch.testing.assert_close(plain, plain[:, :, :1].expand_as(plain), rtol=0, atol=0)
        assert_chunked_equals_whole(latents, t, text, mask, frame_text=True)
