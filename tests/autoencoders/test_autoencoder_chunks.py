"""Chunk causality, chunked == whole, streaming, and the shapes of T = 1 + 4k clips."""
import pytest
import torch

from ae_helpers import build, clip, preset
from reel.errors import ReelError

TOLERANCE = 1e-4  # the contract: chunk by chunk equals the whole clip to 1e-4 in fp32


@torch.no_grad()
@pytest.mark.parametrize("frames", [1, 5, 9, 17])
def test_shapes_of_1_plus_4k_frames(tiny, frames):
    x = clip(frames, size=32)
    z = tiny.encode(x)
    k = (frames - 1) // 4
    assert z.shape == (2, 4, 1 + k, 4, 4)
    assert tiny.latent_shape(frames, 32, 32) == (4, 1 + k, 4, 4)
    assert tiny.decode(z).shape == x.shape


@torch.no_grad()
def test_image_is_a_one_frame_video(tiny):
    image = clip(1, size=16)
    z = tiny.encode(image)
    assert z.shape == (2, 4, 1, 2, 2)
    assert tiny.decode(z).shape == (2, 3, 1, 16, 16)
    # The first frame of a video is encoded exactly as that frame alone.
    video = torch.cat([image, clip(4, size=16, seed=7)], dim=2)
    assert torch.equal(tiny.encode(video)[:, :, :1], z)


@torch.no_grad()
def test_later_chunks_never_change_earlier_latents(tiny):
    x = clip(17)
    z = tiny.encode(x)
    for chunk in range(1, 5):  # pixel frames 1+4(c-1) .. 4c form latent frame c
        changed = x.clone()
        changed[:, :, 1 + 4 * (chunk - 1):] = clip(17 - 1 - 4 * (chunk - 1), seed=10 + chunk)
        z_changed = tiny.encode(changed)
        assert torch.equal(z_changed[:, :, :chunk], z[:, :, :chunk])
        assert not torch.allclose(z_changed[:, :, chunk], z[:, :, chunk])


@torch.no_grad()
def test_later_latents_never_change_earlier_frames(tiny):
    z = tiny.encode(clip(17))
    x = tiny.decode(z)
    changed = z.clone()
    changed[:, :, 3:] += 1.0
    x_changed = tiny.decode(changed)
    assert torch.equal(x_changed[:, :, :1 + 4 * 2], x[:, :, :1 + 4 * 2])
    assert not torch.allclose(x_changed[:, :, 9:], x[:, :, 9:])


@torch.no_grad()
def test_chunks_see_their_past(tiny):
    """The left temporal context is real: changing the first frame changes later latents."""
    x = clip(9)
    changed = x.clone()
    changed[:, :, 0] = -x[:, :, 0]
    assert not torch.allclose(tiny.encode(changed)[:, :, 1], tiny.encode(x)[:, :, 1])


@torch.no_grad()
@pytest.mark.parametrize("frames", [17, 33])
def test_chunked_equals_whole(tiny, frames):
    x = clip(frames)
    z = tiny.encode(x)
    z_chunked = tiny.encode(x, chunked=True)
    assert (z_chunked - z).abs().max().item() <= TOLERANCE
    y = tiny.decode(z)
    y_chunked = tiny.decode(z, chunked=True)
    assert (y_chunked - y).abs().max().item() <= TOLERANCE


@torch.no_grad()
def test_streaming_decoder_takes_one_latent_chunk_at_a_time(tiny):
    z = tiny.encode(clip(17))
    whole = tiny.decode(z)
    stream = tiny.streaming_decoder()
    pieces = [stream.push(z[:, :, i:i + 1]) for i in range(z.shape[2])]
    assert [p.shape[2] for p in pieces] == [1, 4, 4, 4, 4]
    assert stream.flush().shape[2] == 0
    assert (torch.cat(pieces, dim=2) - whole).abs().max().item() <= TOLERANCE
    # flush ends the clip: the same stream then decodes a new one from its first frame
    again = torch.cat([stream.push(z[:, :, :3]), stream.flush()], dim=2)
    assert (again - tiny.decode(z[:, :, :3])).abs().max().item() <= TOLERANCE


@torch.no_grad()
def test_streaming_encoder_buffers_frames_that_do_not_fill_a_chunk(tiny):
    x = clip(17)
    stream = tiny.streaming_encoder()
    pieces, start = [], 0
    for size in (3, 5, 2, 7):
        pieces.append(stream.push(x[:, :, start:start + size]))
        start += size
    pieces.append(stream.flush())
    assert [p.shape[2] for p in pieces] == [1, 1, 1, 2, 0]  # latent frames as their chunks complete
    assert (torch.cat(pieces, dim=2) - tiny.encode(x)).abs().max().item() <= TOLERANCE


@torch.no_grad()
def test_a_shorter_last_chunk():
    """chunk_frames=8 on 13 frames: [1 | 8 | 4], the last chunk shorter; chunked still equals whole."""
    model = build(preset("dc-ae-v-tiny", chunk_frames=8))
    x = clip(13)
    z = model.encode(x)
    assert z.shape[2] == 4
    assert (model.encode(x, chunked=True) - z).abs().max().item() <= TOLERANCE
    assert (model.decode(z, chunked=True) - model.decode(z)).abs().max().item() <= TOLERANCE


def test_training_pass_reaches_every_parameter(tiny_cfg):
    model = build(tiny_cfg).train()
    x = clip(5, size=16)
    reconstruction, z_raw = model(x)
    assert reconstruction.shape == x.shape and z_raw.shape == (2, 4, 2, 2, 2)
    (reconstruction - x).abs().mean().backward()
    unused = [name for name, p in model.named_parameters() if p.grad is None]
    assert not unused


@pytest.mark.parametrize("shape, rule", [
    ((2, 3, 4, 32, 32), "must be 1 + 4k"),
    ((2, 3, 5, 30, 32), "divisible by the spatial factor 8"),
    ((2, 1, 5, 32, 32), "(B, 3, T, H, W)"),
])
def test_bad_clips_are_user_errors(tiny, shape, rule):
    with pytest.raises(ReelError, match=rule.replace("(", r"\(").replace(")", r"\)").replace("+", r"\+")):
        tiny.encode(torch.zeros(shape))


def test_bad_latents_are_user_errors(tiny):
    with pytest.raises(ReelError, match="latents must be"):
        tiny.decode(torch.zeros(1, 5, 2, 4, 4))


@torch.no_grad()
def test_context_dropout_rebuilds_chosen_chunks_from_their_own_latent(tiny):
    """train.ae.context_dropout: each (clip, chunk) is decoded either exactly as usual or exactly as
    that chunk's latent alone with zero past context in every layer; both happen at 0.5."""
    from reel.autoencoders.chunks import ChunkCache, run_chunk, run_whole_clip

    z = tiny.encode_raw(clip(17, batch=4))
    usual = tiny.decode_raw(z)
    torch.manual_seed(3)
    mixed = run_whole_clip(tiny.decoder, z, 1, ChunkCache(4, context_dropout=0.5))
    kinds = []
    for b in range(4):
        assert torch.equal(mixed[b, :, :1], usual[b, :, :1])  # the first frame has no past anyway
        all_kept = True
        for c in range(1, 5):
            frames = slice(1 + 4 * (c - 1), 1 + 4 * c)
            no_past = ChunkCache(1)
            no_past.first_frame = False  # a chunk, not the lone first frame, with nothing before it
            alone = run_chunk(tiny.decoder, z[b:b + 1, :, c:c + 1], no_past)[0]
            if torch.allclose(mixed[b, :, frames], alone, atol=1e-5):
                kinds.append("dropped")
                all_kept = False
            else:
                kinds.append("kept")
                if all_kept:  # a kept chunk after kept ones is decoded exactly as usual
                    assert torch.allclose(mixed[b, :, frames], usual[b, :, frames], atol=1e-6)
    assert set(kinds) == {"kept", "dropped"}
    x = clip(17, batch=4)  # the default leaves the training pass untouched
    assert torch.equal(tiny(x)[0], tiny.decode_raw(tiny.encode_raw(x)))


@torch.no_grad()
def test_latent_noise_decodes_perturbed_latents_and_returns_the_clean_ones(tiny):
    """train.ae.latent_noise: the decoder sees z + u * s * latent_std * eps (u ~ U(0, 1) per clip), the
    returned latents stay clean, and u differs between clips."""
    x = clip(9, batch=3)
    z = tiny.encode_raw(x)
    torch.manual_seed(5)
    recon, z_out = tiny(x, latent_noise=0.3)
    assert torch.equal(z_out, z)
    torch.manual_seed(5)
    u = torch.rand(3, 1, 1, 1, 1) * 0.3
    noisy = z + u * tiny.latent_std.view(1, -1, 1, 1, 1) * torch.randn_like(z)
    assert torch.equal(recon, tiny.decode_raw(noisy))
    assert not torch.allclose(recon, tiny.decode_raw(z), atol=1e-3) and len(set(u.flatten().tolist())) == 3
