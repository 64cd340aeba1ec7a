"""Long videos from a block-causal DiT, chunk by chunk, in memory that does not grow with length.

Each chunk (model.causal_chunk latent frames) is denoised against the cache of the chunks before
it, committed with its clean latents (run at t = 0 once more), decoded by the streaming autoencoder
decoder and handed out as pixel frames. Linear layers carry their constant-size state; softmax and
sparse layers keep a KV window of the last `window_chunks` chunks plus the first `sink_chunks` (the
attention sink).
With positions="cache" (the default) every frame sits at its slot in the cache, as StreamingLLM places
tokens: once the cache is full, each new chunk rebuilds it from the sink and window chunks' latents at
positions 0, 1, ... and is denoised at the next slot, so no position ever exceeds (sink + window + 1)
chunks: a model trained on clips that long never sees a frame index (or a linear layer's running sum
over more chunks) it was not trained on. The cache then never evicts, so the commit needs no pass of
its own: the clean chunks to commit (the previous chunk, or the sink and window chunks of a rebuild)
run at t = 0 in front of the next chunk in its first solver forward (per-frame timesteps), and only
they are stored (DiT.forward_chunk's commit_frames). The last chunk is never committed.
With positions="absolute", frame (and RoPE) positions keep growing and each chunk is committed by a
pass of its own (a commit there can evict the window's oldest chunk before the next chunk attends).

Prompt switching (segments): when a chunk's prompt differs from the one before, the cache is
rebuilt under the new prompt from the sink and window chunks' latents (KV recache, as in
LongLive), so the scene stays continuous while the text changes.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import numpy as np
import torch

from reel.config.schema import LONG_POSITIONS
from reel.errors import ReelError
from reel.sample.guidance import guided_velocity
from reel.sample.image_condition import set_prefix, with_clean_prefix
from reel.sample.solvers import SOLVERS
from reel.sample.timesteps import sampling_times


@dataclass(frozen=True)
class Segment:
    prompt: str
    frames: int  # pixel frames this prompt covers


@dataclass
class _Chunk:
    offset: int  # first latent frame
    latents: torch.Tensor  # (1, C, n, h, w), clean


def latent_to_pixel_frame(latent_frame: int, temporal_factor: int) -> int:
    """The first pixel frame a latent frame decodes to (the first latent frame is the first pixel frame alone)."""
    return 0 if latent_frame == 0 else 1 + temporal_factor * (latent_frame - 1)


def check_segments(segments: Sequence[Segment], temporal_factor: int) -> int:
    """The total pixel frames of the segments; it must be 1 + temporal_factor * k."""
    if not segments:
        raise ReelError("long video: no prompt segments")
    for index, segment in enumerate(segments):
        if not segment.prompt.strip():
            raise ReelError(f"long video: segment {index} has an empty prompt")
        if segment.frames < 1:
            raise ReelError(f"long video: segment {index} ({segment.prompt!r}) has frames={segment.frames}; "
                            f"each segment needs at least one frame")
    total = sum(segment.frames for segment in segments)
    if (total - 1) % temporal_factor:
        raise ReelError(f"long video: the segments add up to {total} frames; the total must be 1 + "
                        f"{temporal_factor}k")
    return total


class LongVideoGenerator:
    """generator.frames(segments, ...) yields uint8 frames (t, H, W, 3) as each chunk is decoded."""

    def __init__(self, model, autoencoder, text_encoder, window_chunks: int = 3, sink_chunks: int = 1,
                 encode_text=None, positions: str = "cache"):
        """`encode_text(prompt) -> TextEmbeddings` on the model's device, when given, encodes the prompts and the
        negative prompt (a pipeline passes its memo, so clip-by-clip rollouts encode each once). `positions`: cache
        (each frame at its slot in the cache; see the module) or absolute (frame positions keep growing)."""
        if model.causal_chunk is None:
            raise ReelError("long=true needs a block-causal DiT (trained with model.causal_chunk set); this "
                            "checkpoint attends over the whole clip")
        if window_chunks < 1 or sink_chunks < 0:
            raise ReelError(f"sample.long_window={window_chunks}, sample.long_sink={sink_chunks}: the window needs "
                            f"at least one chunk and the sink a non-negative number")
        if positions not in LONG_POSITIONS:
            raise ReelError(f"sample.long_positions={positions!r}: must be one of {', '.join(LONG_POSITIONS)}")
        self.positions = positions
        self.model, self.autoencoder, self.text_encoder = model, autoencoder, text_encoder
        self.encode_text = encode_text or (lambda prompt: text_encoder.encode([prompt]).to(
            next(model.parameters()).device))
        self.chunk = int(model.config.causal_chunk)  # latent frames
        self.window_chunks, self.sink_chunks = window_chunks, sink_chunks
        self.cache = None
        self.uncommitted: Optional[torch.Tensor] = None  # cache positions: clean chunks the next forward commits
        self.cache_sizes: list[int] = []  # entries the cache holds after each chunk is made (memory checks)

    def new_cache(self):
        return self.model.init_cache(window_frames=self.window_chunks * self.chunk,
                                     sink_frames=self.sink_chunks * self.chunk)

    @torch.no_grad()
    def frames(self, segments: Sequence[Segment], seed: int, height: int, width: int, steps: int,
               guidance: float, shift: float = 1.0, solver: str = "euler", negative_prompt: str = "",
               image_latent: Optional[torch.Tensor] = None, progress=None,
               first_chunk_guidance: Optional[float] = None) -> Iterator[np.ndarray]:
        """`first_chunk_guidance` guides the first chunk alone (None: `guidance`): a causal model draws the
        first frame from the prompt alone, and where it puts the object there is where the video starts."""
        from reel.data.video_io import to_uint8

        ae, model = self.autoencoder, self.model
        total = check_segments(segments, ae.temporal_factor)
        _, latent_frames, h, w = ae.latent_shape(total, height, width)
        device = next(model.parameters()).device
        texts = {p: self.encode_text(p) for p in {s.prompt for s in segments}}
        negative = self.encode_text(negative_prompt)
        generator = torch.Generator().manual_seed(int(seed))
        decoder = ae.streaming_decoder()
        sinks: list[_Chunk] = []
        window: deque[_Chunk] = deque(maxlen=self.window_chunks)
        self.cache, self.cache_sizes = self.new_cache(), []
        prompt = None
        held = (self.sink_chunks + self.window_chunks) * self.chunk  # latent frames the cache holds when full
        self.uncommitted = None
        for offset in range(0, latent_frames, self.chunk):
            n = min(self.chunk, latent_frames - offset)
            chunk_prompt = _prompt_at(segments, latent_to_pixel_frame(offset, ae.temporal_factor))
            text = texts[chunk_prompt]
            # cache positions: past a full cache, rebuild it at slots 0, 1, ... and take the next slot
            slot = min(offset, held) if self.positions == "cache" else offset
            if slot < offset:  # this chunk's first forward runs the sink and window chunks at slots 0, 1, ...
                self.cache = self.new_cache()
                self.uncommitted = torch.cat([record.latents for record in (*sinks, *window)], dim=2)
            elif prompt is not None and chunk_prompt != prompt:
                self._recache(sinks, window, text, negative, guidance)  # the window holds the previous chunk
                self.uncommitted = None
            prompt = chunk_prompt
            noise = torch.randn((1, ae.latent_channels, n, h, w), generator=generator).to(device)
            known = image_latent if offset == 0 else None
            chunk_guidance = guidance if offset or first_chunk_guidance is None else first_chunk_guidance
            latents = self._denoise(noise, slot, text, negative, steps, chunk_guidance, shift, solver, known,
                                    progress)
            if self.positions == "cache":
                self.uncommitted = latents  # the next chunk's first forward commits it
            else:
                self._commit(latents, slot, text, negative, guidance)
            self.cache_sizes.append(self.cache_entries())
            record = _Chunk(offset, latents)
            if len(sinks) < self.sink_chunks:
                sinks.append(record)
            else:
                window.append(record)
            pixels = decoder.push(latents)
            if pixels.shape[2]:
                yield to_uint8(pixels[0].float().clamp(-1, 1))
        rest = decoder.flush()
        if rest.dim() == 5 and rest.shape[2]:
            yield to_uint8(rest[0].float().clamp(-1, 1))

    def _chunk_fn(self, offset: int):
        """model_fn(x, t, emb, mask) for the chunk at latent frame `offset`. The first call runs the clean
        chunks right before it that the cache lacks (self.uncommitted) at t = 0 in front of it and commits
        them (under both CFG branches when guided, as _commit does)."""
        cache, model = self.cache, self.model

        def run(x, t, emb, mask):
            ahead, self.uncommitted = self.uncommitted, None
            if ahead is None:
                return model.forward_chunk(x, t, emb, mask, cache, frame_offset=offset)
            ahead = ahead.to(x.dtype).repeat(x.shape[0] // ahead.shape[0], 1, 1, 1, 1)
            n, pt = ahead.shape[2], model.patch_size[0]
            times = t.to(x.dtype).reshape(x.shape[0], -1).expand(-1, x.shape[2] // pt)  # (B,) or (B, G) -> (B, G)
            times = torch.cat([times.new_zeros(x.shape[0], n // pt), times], dim=1)
            out = model.forward_chunk(torch.cat([ahead, x], dim=2), times, emb, mask, cache, frame_offset=offset - n,
                                      update_cache=True, commit_frames=n)
            return out[:, :, n:]

        return run

    def _denoise(self, noise, offset, text, negative, steps, guidance, shift, solver, known, progress):
        model_fn = self._chunk_fn(offset)
        if known is not None:
            if known.shape[2] >= noise.shape[2]:  # the image fills the whole first chunk: it is the chunk
                if progress is not None:
                    progress.update(steps)
                return known[:, :, :noise.shape[2]].to(noise.dtype)
            model_fn = with_clean_prefix(model_fn, known, self.model.patch_size[0])
        velocity = guided_velocity(model_fn, text.embeddings, text.mask, negative.embeddings, negative.mask,
                                   guidance)
        latents = SOLVERS[solver](velocity, set_prefix(noise, known), sampling_times(steps, shift),
                                  progress=progress)
        return set_prefix(latents, known)

    def _commit(self, latents, offset, text, negative, guidance) -> None:
        """Run the clean chunk at t = 0 once more, adding it to the cache (both CFG branches when guided)."""
        emb, mask = text.embeddings, text.mask
        x = latents
        if guidance > 1.0:
            x = torch.cat([latents, latents])
            emb = torch.cat([text.embeddings, negative.embeddings])
            mask = torch.cat([text.mask, negative.mask])
        t = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
        self.model.forward_chunk(x, t, emb, mask, self.cache, frame_offset=offset, update_cache=True)

    def _recache(self, sinks, window, text, negative, guidance) -> None:
        """A fresh cache holding the sink and window chunks, committed again under the new prompt."""
        self.cache = self.new_cache()
        for record in [*sinks, *window]:
            self._commit(record.latents, record.offset, text, negative, guidance)

    def cache_entries(self) -> int:
        """Cached key/value entries over all softmax/sparse layers (linear layers hold a fixed-size state)."""
        return sum(len(block.attn) for block in self.cache.blocks if hasattr(block.attn, "k"))


def _prompt_at(segments: Sequence[Segment], pixel_frame: int) -> str:
    end = 0
    for segment in segments:
        end += segment.frames
        if pixel_frame < end:
            return segment.prompt
    return segments[-1].prompt
