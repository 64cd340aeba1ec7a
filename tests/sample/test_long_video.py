"""Long video: chunk-by-chunk generation with a bounded cache, streamed decoding, prompt switches, images."""
import numpy as np
import pytest
import torch
from PIL import Image

from reel.errors import ReelError
from reel.models.text_encoder import TextEmbeddings
from reel.sample.image_condition import encode_image, read_image
from reel.sample.latents import sample_latents
from reel.sample.long_video import LongVideoGenerator, Segment, check_segments
from tests.autoencoders.ae_helpers import build, preset
from tests.models.dit_helpers import TEXT_DIM, one_thread, tiny_dit  # noqa: F401 (fixture)

SIZE = 16  # pixels: 2 x 2 latents


class HashTextEncoder:
    """A deterministic stand-in text encoder: each prompt gets its own random embeddings."""
    dim = TEXT_DIM

    def encode(self, prompts):
        embs = [torch.randn(1, 3, TEXT_DIM, generator=torch.Generator().manual_seed(sum(map(ord, p)) + len(p)))
                for p in prompts]
        mask = torch.ones(len(prompts), 3, dtype=torch.bool)
        if not prompts or prompts == [""]:
            mask[:] = False
        emb = torch.cat(embs)
        return TextEmbeddings(emb, mask, emb.mean(1))


@pytest.fixture(scope="module")
def autoencoder():
    return build(preset("dc-ae-v-tiny"))


def _generator(autoencoder, window=2, sink=1, positions="absolute", **model):
    dit = tiny_dit(attention=["linear", "softmax"], causal_chunk=1, **model).eval()
    dit.latent_channels = autoencoder.latent_channels
    return LongVideoGenerator(dit, autoencoder, HashTextEncoder(), window_chunks=window, sink_chunks=sink,
                              positions=positions)


def _run(gen, segments, guidance=1.0, image_latent=None):
    chunks = list(gen.frames(segments, seed=3, height=SIZE, width=SIZE, steps=2, guidance=guidance,
                             image_latent=image_latent))
    return chunks, np.concatenate(chunks)


def test_long_generation_keeps_the_cache_bounded_and_streams_every_frame(autoencoder):
    gen = _generator(autoencoder, window=2, sink=1)
    chunks, video = _run(gen, [Segment("a red circle moving left", 1 + 4 * 9)], guidance=2.0)
    assert video.shape == (37, SIZE, SIZE, 3) and video.dtype == np.uint8
    assert [len(c) for c in chunks] == [1] + [4] * 9  # each latent chunk is decoded as soon as it is made
    sizes = gen.cache_sizes  # softmax entries: frames kept (sink 1 + window 2), one layer
    assert sizes[:3] == [1, 2, 3] and set(sizes[3:]) == {3}
    kept = gen.cache.blocks[1].attn.frames.tolist()
    assert kept == [0, 8, 9]  # the sink and the last two chunks; positions keep growing


def record_chunks(gen) -> list:
    """The clean latents of every chunk the generator makes, in order."""
    made, denoise = [], gen._denoise
    gen._denoise = lambda *args: made.append(denoise(*args)) or made[-1]
    return made


def test_streamed_frames_equal_decoding_the_generated_latents_whole(autoencoder):
    gen = _generator(autoencoder)
    made = record_chunks(gen)
    _, video = _run(gen, [Segment("a blue square moving up", 1 + 4 * 4)])
    with torch.no_grad():
        whole = autoencoder.decode(torch.cat(made, dim=2))[0].clamp(-1, 1)
    expected = ((whole + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 3, 0).numpy()
    assert np.abs(video.astype(int) - expected.astype(int)).max() <= 1


def test_a_chunk_committed_by_the_next_ones_first_forward_equals_a_separate_commit(autoencoder):
    """positions=cache commits each chunk (or rebuilds the cache) in front of the next chunk, one forward
    fewer per chunk; made with separate t = 0 passes instead, every chunk comes out the same."""
    gen = _generator(autoencoder, window=2, sink=1, positions="cache")
    made = record_chunks(gen)
    _run(gen, [Segment("a green circle moving down", 1 + 4 * 6)], guidance=2.0)
    reference = _generator(autoencoder, window=2, sink=1)
    reference.cache = reference.new_cache()
    text, negative = reference.text_encoder.encode(["a green circle moving down"]), reference.text_encoder.encode([""])
    generator = torch.Generator().manual_seed(3)
    for index, chunk in enumerate(made):
        slot = min(index, 3)  # sink 1 + window 2 chunks, then the chunk itself
        if slot < index:  # rebuild from the sink and window chunks at slots 0, 1, 2
            reference.cache = reference.new_cache()
            for held, source in enumerate((0, index - 2, index - 1)):
                reference._commit(made[source], held, text, negative, 2.0)
        noise = torch.randn((1, autoencoder.latent_channels, 1, 2, 2), generator=generator)
        latents = reference._denoise(noise, slot, text, negative, 2, 2.0, 1.0, "euler", None, None)
        if slot == index:
            reference._commit(latents, slot, text, negative, 2.0)
        torch.testing.assert_close(chunk, latents, rtol=0, atol=1e-4)
    assert len(made) == 7 and (made[-1] - made[-2]).abs().max() > 1e-2


def test_prompt_switch_rebuilds_the_cache_from_the_window_under_the_new_prompt(autoencoder):
    first, second = "a red circle moving right", "a red circle moving left"
    gen = _generator(autoencoder, window=2, sink=1)
    _, plain = _run(gen, [Segment(first, 1 + 4 * 6)])
    gen = _generator(autoencoder, window=2, sink=1)
    rebuilt = []
    original = gen._recache

    def spy(sinks, window, text, negative, guidance):
        original(sinks, window, text, negative, guidance)
        rebuilt.append(([(r.offset, r.latents) for r in [*sinks, *window]], gen.cache.blocks[1].attn.k.clone()))

    gen._recache = spy
    _, switched = _run(gen, [Segment(first, 1 + 4 * 3), Segment(second, 4 * 3)])
    assert [[offset for offset, _ in records] for records, _ in rebuilt] == [[0, 2, 3]]  # once, at latent frame 4
    assert np.array_equal(switched[:13], plain[:13])  # before the switch nothing changes
    assert not np.array_equal(switched[13:], plain[13:])  # after it the new prompt steers

    # the rebuilt cache is what committing the sink and window chunks under the new prompt gives
    records, keys = rebuilt[0]
    reference = _generator(autoencoder, window=2, sink=1)
    reference.cache = reference.new_cache()
    text, negative = reference.text_encoder.encode([second]), reference.text_encoder.encode([""])
    for offset, latents in records:
        reference._commit(latents, offset, text, negative, 1.0)
    torch.testing.assert_close(keys, reference.cache.blocks[1].attn.k, rtol=0, atol=1e-6)
    first_text = reference.text_encoder.encode([first])
    stale = reference.new_cache()
    reference.cache = stale
    for offset, latents in records:
        reference._commit(latents, offset, first_text, negative, 1.0)
    assert not torch.allclose(keys, stale.blocks[1].attn.k)  # the text does reach the cached keys


def test_segments_are_checked(autoencoder):
    with pytest.raises(ReelError, match="1 \\+ 4k"):
        check_segments([Segment("a", 4), Segment("b", 4)], 4)
    with pytest.raises(ReelError, match="empty prompt"):
        check_segments([Segment(" ", 5)], 4)
    dit = tiny_dit(attention="linear").eval()
    with pytest.raises(ReelError, match="block-causal"):
        LongVideoGenerator(dit, autoencoder, HashTextEncoder())


def test_image_conditioning_holds_the_first_latent_frame(autoencoder, tmp_path):
    pixels = np.zeros((24, 32, 3), dtype=np.uint8)
    pixels[4:12, 8:20] = (230, 40, 40)
    Image.fromarray(pixels).save(tmp_path / "first.png")
    clip = read_image(tmp_path / "first.png", SIZE, SIZE)
    assert clip.shape == (1, 3, 1, SIZE, SIZE) and -1 <= clip.min() and clip.max() <= 1
    latent = encode_image(autoencoder, tmp_path / "first.png", SIZE, SIZE)
    assert latent.shape == (1, autoencoder.latent_channels, 1, 2, 2)
    with pytest.raises(ReelError, match="no such file"):
        read_image(tmp_path / "missing.png", SIZE, SIZE)

    # the causal generator: with one latent frame per chunk the image is the first chunk
    gen = _generator(autoencoder, positions="cache")
    made, inputs, forward = record_chunks(gen), [], gen.model.forward_chunk
    gen.model.forward_chunk = lambda x, *a, **k: (inputs.append((x, k.get("commit_frames"))), forward(x, *a, **k))[1]
    _run(gen, [Segment("a red square moving up", 9)], image_latent=latent)
    assert torch.equal(made[0], latent)
    assert torch.equal(inputs[0][0][:, :, :1], latent) and inputs[0][1] == 1  # chunk 1 commits it, untouched

    # the whole-clip sampler: the first frame stays the image, per-frame times reach the model
    dit = tiny_dit(attention="linear").eval()
    text = HashTextEncoder().encode(["a red square moving up"])
    seen = []

    def model(x, t, emb, mask):
        seen.append(t)
        return dit(x, t, emb, mask)

    noise = torch.randn(1, 4, 3, 2, 2)
    out = sample_latents(model, text.embeddings, text.mask, text.embeddings, text.mask, noise, 3, 1.0,
                         known=latent, temporal_patch=1)
    assert torch.equal(out[:, :, :1], latent) and not torch.equal(out[:, :, 1:], noise[:, :, 1:])
    assert all(t.shape == (1, 3) and bool((t[:, 0] == 0).all()) and bool((t[:, 1:] > 0).all()) for t in seen)


def test_cache_positions_keep_every_frame_inside_the_cache(autoencoder):
    """positions=cache: past a full cache each chunk rebuilds it at slots 0, 1, ... in one forward and is
    denoised at the next slot; the chunks before that are made exactly as with absolute positions."""
    segments = [Segment("a red circle moving right", 1 + 4 * 7)]
    _, absolute = _run(_generator(autoencoder, window=2, sink=1), segments)
    gen = _generator(autoencoder, window=2, sink=1, positions="cache")
    offsets, rebuilt = [], []
    made, model_chunk = record_chunks(gen), gen.model.forward_chunk

    def spy_chunk(x, *args, frame_offset=None, update_cache=False, commit_frames=None):
        offsets.append((frame_offset, x.shape[2]))
        out = model_chunk(x, *args, frame_offset=frame_offset, update_cache=update_cache, commit_frames=commit_frames)
        if commit_frames == 3:  # a rebuild: the sink and window chunks in front of the new one
            rebuilt.append((len(made), x[:, :, :3], gen.cache.blocks[1].attn.k.clone()))
        return out

    gen.model.forward_chunk = spy_chunk
    _, video = _run(gen, segments)
    assert video.shape == absolute.shape
    assert np.array_equal(video[:13], absolute[:13])  # chunks 0-3 (latent frames 0-3): the cache was not full yet
    assert not np.array_equal(video[13:], absolute[13:])
    assert max(offset + frames for offset, frames in offsets) == 4  # sink 1 + window 2 + the chunk itself
    assert [chunk for chunk, _, _ in rebuilt] == [4, 5, 6, 7]  # each chunk from latent frame 4 on rebuilds
    for chunk, clean, _ in rebuilt:  # from the sink and the window's latents: chunks 0, chunk - 2, chunk - 1
        assert torch.equal(clean, torch.cat([made[0], made[chunk - 2], made[chunk - 1]], dim=2))
    assert gen.cache.blocks[1].attn.frames.tolist() == [0, 1, 2] and set(gen.cache_sizes) <= {0, 1, 2, 3}

    # one forward over the cached chunks gives the cache committing them one by one at slots 0, 1, 2 would
    _, clean, keys = rebuilt[-1]
    latents = clean.split(1, dim=2)
    reference = _generator(autoencoder, window=2, sink=1)
    reference.cache = reference.new_cache()
    text, negative = reference.text_encoder.encode([segments[0].prompt]), reference.text_encoder.encode([""])
    for slot, chunk in enumerate(latents):
        reference._commit(chunk, slot, text, negative, 1.0)
    torch.testing.assert_close(keys, reference.cache.blocks[1].attn.k, rtol=0, atol=1e-5)

    with pytest.raises(ReelError, match="sample.long_positions='slots'"):
        LongVideoGenerator(gen.model, autoencoder, HashTextEncoder(), positions="slots")


@pytest.mark.parametrize("positions", ["cache", "absolute"])
def test_first_chunk_guidance_guides_the_first_chunk_alone(autoencoder, positions):
    """The first chunk is the one a guidance-3 run makes; every later chunk is what the base guidance makes
    after that first chunk (the same as holding it fixed as an image), so only the layout is guided."""
    segments = [Segment("a green triangle moving right", 1 + 4 * 4)]
    guided, base, split = (_generator(autoencoder, positions=positions) for _ in range(3))
    for gen in (base, split):
        gen.model.load_state_dict(guided.model.state_dict())
    made = {name: record_chunks(gen) for name, gen in (("guided", guided), ("base", base), ("split", split))}
    _, guided_video = _run(guided, segments, guidance=3.0)
    _, base_video = _run(base, segments, guidance=1.0)
    split_chunks = list(split.frames(segments, seed=3, height=SIZE, width=SIZE, steps=2, guidance=1.0,
                                     first_chunk_guidance=3.0))
    assert torch.equal(made["split"][0], made["guided"][0])
    assert not torch.equal(made["split"][0], made["base"][0])
    assert np.array_equal(split_chunks[0], guided_video[:1])

    held = _generator(autoencoder, positions=positions)
    held.model.load_state_dict(guided.model.state_dict())
    made["held"] = record_chunks(held)
    _, held_video = _run(held, segments, guidance=1.0, image_latent=made["guided"][0])
    assert all(torch.equal(a, b) for a, b in zip(made["split"][1:], made["held"][1:]))
    assert np.array_equal(np.concatenate(split_chunks), held_video)
    assert not np.array_equal(held_video, guided_video)
