"""Prompts -> uint8 videos with a DiT checkpoint folder, its autoencoder and its text encoder.

    pipeline = TextToVideoPipeline.from_checkpoint("runs/shapes-64/dit")
    videos = pipeline.generate(["a red square moving up"], seeds=[0])  # (1, T, H, W, 3) uint8

Each prompt is encoded, denoised and decoded on its own (its CFG pair in one forward): a batched
forward changes results in the last bits with the batch's size and companions (small-M matmuls
and batch-1 convolutions take other kernels), and a seed must give the same video whatever else
is sampled beside it. On a CPU one prompt at a time measured no slower than a batch of 8.
A block-causal DiT generates each clip chunk by chunk through its cache with rollout=True (the way long
videos are made and self-forcing students are trained), or denoises all chunks together with
rollout=False; None takes the checkpoint's sample.rollout (true for a self-forcing student), else False.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from reel.assets import ASSETS, BUNDLED_PREFIX
from reel.errors import ReelError

DEMO_NAME = "demo_dit"
DEFAULT_STEPS, DEFAULT_GUIDANCE = 20, 4.0  # for a checkpoint that stores no sample settings
DEMO_CHECKPOINT = BUNDLED_PREFIX + DEMO_NAME
TEXT_MEMO = 256  # prompts whose embeddings a pipeline keeps (~50 KB each with the demo's MiniLM)
NO_OPENING = "none"  # sample.opening=none: a checkpoint's stored opening is not used


@dataclass(frozen=True)
class SampleSettings:
    num_frames: int
    height: int
    width: int
    steps: int
    guidance: float
    solver: str
    shift: float
    negative_prompt: str
    first_chunk_guidance: Optional[float] = None  # chunk-by-chunk generation's first chunk (None: guidance)
    opening: Optional[str] = None  # a whole-clip DiT that draws chunk-by-chunk generation's first frame


def resolve_checkpoint(path: Optional[Union[str, os.PathLike]]) -> str:
    """The checkpoint to load: `path`, or the bundled demo model when it is None."""
    if path is not None:
        return str(path)
    if not (ASSETS / DEMO_NAME).is_dir():
        raise ReelError(f"checkpoint=None: the bundled demo model ({DEMO_CHECKPOINT}) is not in this version; "
                        f"pass checkpoint=DIR, a DiT folder such as RUN_DIR/dit from reel train dit")
    return DEMO_CHECKPOINT


def sample_settings(cfg: DictConfig, num_frames: Optional[int] = None, height: Optional[int] = None,
                    width: Optional[int] = None, steps: Optional[int] = None, guidance: Optional[float] = None,
                    solver: Optional[str] = None, shift: Optional[float] = None,
                    negative_prompt: Optional[str] = None,
                    first_chunk_guidance: Optional[float] = None,
                    opening: Optional[str] = None) -> SampleSettings:
    """Settings for a checkpoint whose config.yaml is `cfg`: what is None comes from its `sample` settings,
    then its training clip size (`data`); the result is checked against its autoencoder and patch size, so
    a bad request fails before any model is loaded."""
    from reel.sample.solvers import SOLVERS

    defaults, data = cfg.sample, cfg.data

    def pick(value, key, fallback=None):
        if value is not None:
            return value
        stored = defaults.get(key)
        return fallback if stored is None else stored

    chosen = SampleSettings(
        num_frames=pick(num_frames, "num_frames", data.num_frames), height=pick(height, "height", data.height),
        width=pick(width, "width", data.width), steps=pick(steps, "steps", DEFAULT_STEPS),
        guidance=pick(guidance, "guidance", DEFAULT_GUIDANCE), solver=str(pick(solver, "solver", "euler")),
        shift=pick(shift, "shift", 1.0), negative_prompt=str(pick(negative_prompt, "negative_prompt", "")),
        first_chunk_guidance=pick(first_chunk_guidance, "first_chunk_guidance"),
        opening=_opening(pick(opening, "opening")))
    _check(chosen, cfg.autoencoder.temporal_factor, cfg.autoencoder.spatial_factor, tuple(cfg.model.patch_size))
    SOLVERS[chosen.solver]  # an unknown name is a ReelError naming sample.solver
    return chosen


def _opening(value) -> Optional[str]:
    if value is None or str(value).strip().lower() == NO_OPENING:
        return None
    if not str(value).strip():
        raise ReelError(f"sample.opening='': name a whole-clip DiT folder, or {NO_OPENING} for no opening")
    return str(value)


def _check(s: SampleSettings, tf: int, sf: int, patch_size: tuple) -> None:
    pt, ph, pw = patch_size
    if not _is_int(s.num_frames) or s.num_frames < 1 or (s.num_frames - 1) % tf:
        raise ReelError(f"sample.num_frames={s.num_frames}: must be 1 + {tf}k (the first frame alone, then "
                        f"groups of {tf})")
    latent_frames = 1 + (s.num_frames - 1) // tf
    if latent_frames % pt:
        raise ReelError(f"sample.num_frames={s.num_frames}: gives {latent_frames} latent frames, not divisible "
                        f"by the DiT's temporal patch {pt}")
    for key, size, patch in (("height", s.height, ph), ("width", s.width, pw)):
        if not _is_int(size) or size < 1 or size % (sf * patch):
            raise ReelError(f"sample.{key}={size}: must be a positive multiple of {sf * patch} (autoencoder "
                            f"spatial factor {sf} x patch {patch})")
    if not _is_int(s.steps) or s.steps < 1:
        raise ReelError(f"sample.steps={s.steps}: must be at least 1")
    if s.guidance < 0:
        raise ReelError(f"sample.guidance={s.guidance}: must be non-negative")
    if s.first_chunk_guidance is not None and s.first_chunk_guidance < 0:
        raise ReelError(f"sample.first_chunk_guidance={s.first_chunk_guidance}: must be non-negative (or null: "
                        f"sample.guidance)")
    if s.shift <= 0:
        raise ReelError(f"sample.shift={s.shift}: must be positive")


class TextToVideoPipeline:
    def __init__(self, model, autoencoder, text_encoder, cfg: DictConfig, checkpoint: str,
                 device: Union[str, torch.device] = "cpu"):
        self.model, self.autoencoder, self.text_encoder = model, autoencoder, text_encoder
        self.cfg = cfg  # the checkpoint folder's config.yaml
        self.checkpoint = checkpoint
        self.device = torch.device(device)
        self.fps = float(cfg.data.fps)
        self._texts: OrderedDict = OrderedDict()  # prompt -> its TextEmbeddings on the device (text_embedding)
        self._openings: dict = {}  # sample.opening checkpoint -> its pipeline (opening_pipeline)

    @classmethod
    def from_checkpoint(cls, path: Optional[Union[str, os.PathLike]] = None,
                        device: Union[str, torch.device] = "cpu",
                        autoencoder: Optional[Union[str, os.PathLike]] = None,
                        share: Optional["TextToVideoPipeline"] = None) -> "TextToVideoPipeline":
        """A DiT folder (what `reel train dit` writes to RUN_DIR/dit); None: the bundled demo model.
        `autoencoder`: decode (and encode images) with this folder instead of the one the DiT's config names;
        it must make the same latents (same encoder and latent statistics), e.g. a lighter decoder from
        `reel autoencoder prune-decoder`. `share`: a pipeline whose autoencoder and text encoder are used when
        they are the ones this checkpoint names (no second copy in memory)."""
        from reel.autoencoders import load_autoencoder
        from reel.autoencoders.checkpoint import same_latent_space
        from reel.models.dit_checkpoint import load_dit, read_dit_config
        from reel.models.text_encoder import build_text_encoder

        path = resolve_checkpoint(path)
        trained_on = read_dit_config(path).autoencoder.get("checkpoint")
        if not trained_on:
            raise ReelError(f"checkpoint {path}: its config.yaml names no autoencoder.checkpoint to decode with")
        if autoencoder is not None and str(autoencoder) != str(trained_on):
            if not same_latent_space(autoencoder, trained_on):
                raise ReelError(f"sample.autoencoder={autoencoder}: its encoder or latent statistics differ from "
                                f"{trained_on}, the autoencoder {path} was trained on")
        model, cfg = load_dit(path, device)
        if autoencoder is not None:
            cfg = OmegaConf.merge(cfg, {"autoencoder": {"checkpoint": str(autoencoder)}})
        if share is not None and str(share.cfg.autoencoder.checkpoint) == str(cfg.autoencoder.checkpoint):
            autoencoder = share.autoencoder
        else:
            autoencoder = load_autoencoder(cfg.autoencoder.checkpoint, device)
        for key, expected in (("latent_channels", cfg.dit.latent_channels),
                              ("spatial_factor", cfg.autoencoder.spatial_factor),
                              ("temporal_factor", cfg.autoencoder.temporal_factor)):
            if getattr(autoencoder, key) != expected:
                raise ReelError(f"checkpoint {path}: its config.yaml says {key}={expected}, the autoencoder "
                                f"{cfg.autoencoder.checkpoint} has {getattr(autoencoder, key)}")
        text_cfg = _text_config(cfg)
        if share is not None and OmegaConf.to_container(_text_config(share.cfg)) == OmegaConf.to_container(text_cfg):
            text_encoder = share.text_encoder
        else:
            text_encoder = build_text_encoder(text_cfg, device)
        if text_encoder.dim != int(cfg.dit.text_dim):
            raise ReelError(f"checkpoint {path}: the DiT takes {cfg.dit.text_dim}-d text embeddings, the text encoder "
                            f"{text_cfg.path or text_cfg.name} gives {text_encoder.dim}-d (set text_encoder.path to "
                            f"the encoder it was trained with)")
        return cls(model, autoencoder, text_encoder, cfg, path, device)

    def split_sequence(self, groups) -> "TextToVideoPipeline":
        """Denoise each video sequence-parallel over `groups` (reel.parallel.groups.build_parallel_groups):
        every rank of the group runs this pipeline with the same prompts and seeds."""
        from reel.parallel.sequence import SequenceParallel, enable_sequence_parallel

        ranks = groups.ranks
        enable_sequence_parallel(self.model, SequenceParallel(groups.sp_group, ranks.sp_rank, ranks.sp_size))
        return self

    def settings(self, **overrides) -> SampleSettings:
        """sample_settings for this checkpoint (num_frames, height, width, steps, guidance, solver, shift,
        negative_prompt; None or left out: the checkpoint's)."""
        return sample_settings(self.cfg, **overrides)

    @torch.no_grad()
    def generate(self, prompts: Sequence[str], seeds: Sequence[int], num_frames: Optional[int] = None,
                 height: Optional[int] = None, width: Optional[int] = None, steps: Optional[int] = None,
                 guidance: Optional[float] = None, solver: Optional[str] = None, shift: Optional[float] = None,
                 negative_prompt: Optional[str] = None, progress: bool = True,
                 image: Optional[Union[str, os.PathLike]] = None, rollout: Optional[bool] = None,
                 precision: str = "fp32", latents_out: Optional[list] = None,
                 first_chunk_guidance: Optional[float] = None, opening: Optional[str] = None) -> np.ndarray:
        """uint8 videos (N, T, H, W, 3), one per prompt; seeds[i] draws prompt i's noise, so the same seed and
        settings give the same video, bit for bit on CPU, whatever the other prompts are. `image`: an image
        file that becomes every video's first frame (image-to-video). `rollout`: a block-causal DiT
        generates chunk by chunk through its cache (the long-video generator over one clip's length);
        None: the checkpoint's sample.rollout, else False. `precision`: fp32, or bf16 autocast for the DiT
        and the decoder (reel.sample.precision). `latents_out`: a list that receives each clip's denoised
        latents (C, t, h, w), fp32 on the CPU (not with a rollout, which decodes chunk by chunk).
        `first_chunk_guidance`: a rollout's first chunk is guided with it (None: the checkpoint's
        sample.first_chunk_guidance, else `guidance`); whole-clip sampling has no first chunk. `opening`: a
        rollout without an image takes its first frame from this whole-clip DiT (opening_latent; None: the
        checkpoint's sample.opening, "none": no opening)."""
        from reel.models.text_encoder import check_prompts
        from reel.sample.precision import sampling_precision

        prompts = check_prompts(prompts)
        seeds = list(seeds)
        if len(seeds) != len(prompts):
            raise ReelError(f"generate: {len(prompts)} prompts but {len(seeds)} seeds (one seed per prompt)")
        for seed in seeds:
            if not _is_int(seed) or not -2**63 <= seed < 2**64:  # what torch.Generator.manual_seed takes
                raise ReelError(f"sample.seed={seed!r}: must be an integer in [-2^63, 2^64)")
        s = sample_settings(self.cfg, num_frames, height, width, steps, guidance, solver, shift, negative_prompt,
                            first_chunk_guidance, opening)
        autocast = sampling_precision(precision, self.device)
        negative = self.text_embedding(s.negative_prompt)
        known = self.image_latent(image, s) if image is not None else None
        videos = np.empty((len(prompts), s.num_frames, s.height, s.width, 3), dtype=np.uint8)
        roll = self.rolls_out(rollout)
        if roll and latents_out is not None:
            raise ReelError(f"checkpoint {self.checkpoint}: a rollout decodes chunk by chunk and keeps no clip's "
                            f"latents; set sample.rollout=false to keep them")
        steps = s.steps  # per clip; a rollout takes them once per chunk
        if roll:
            latent_frames = self.autoencoder.latent_shape(s.num_frames, s.height, s.width)[1]
            steps *= -(-latent_frames // int(self.model.causal_chunk))
        with autocast, tqdm(total=len(prompts) * steps, desc="denoise", unit="step", disable=not progress) as bar:
            for index, (prompt, seed) in enumerate(zip(prompts, seeds)):
                if roll:
                    first = known
                    if first is None and s.opening is not None:
                        first = self.opening_latent(s.opening, prompt, int(seed), s.height, s.width)
                    videos[index] = self._roll_out_one(prompt, int(seed), s, bar, first)
                else:
                    videos[index] = self._generate_one(prompt, int(seed), s, negative, bar, known, latents_out)
        return videos

    def text_embedding(self, prompt: str):
        """A prompt's TextEmbeddings on the device, encoded once while it is among the last TEXT_MEMO prompts
        used: every seed of a prompt, and the negative prompt of every clip, reuse it (a prompt is always
        encoded alone, so the embedding is the same bit for bit either way)."""
        if prompt in self._texts:
            self._texts.move_to_end(prompt)
        else:
            self._texts[prompt] = self.text_encoder.encode([prompt]).to(self.device)
            if len(self._texts) > TEXT_MEMO:
                self._texts.popitem(last=False)
        return self._texts[prompt]

    def rolls_out(self, rollout: Optional[bool] = None) -> bool:
        """Whether clips are generated chunk by chunk (see `rolls_out`)."""
        return rolls_out(self.cfg, rollout)

    def image_latent(self, image: Union[str, os.PathLike], s: SampleSettings):
        """The normalised latent of an image file, at the settings' frame size."""
        from reel.sample.image_condition import encode_image

        return encode_image(self.autoencoder, image, s.height, s.width, self.device)

    def opening_pipeline(self, checkpoint: str) -> "TextToVideoPipeline":
        """The pipeline of a sample.opening checkpoint: a DiT that attends over the whole clip, trained on an
        autoencoder with this one's latents; it shares this pipeline's autoencoder and, when the same, text encoder."""
        if checkpoint not in self._openings:
            mine = self.cfg.autoencoder.checkpoint
            check_opening(checkpoint, mine)
            self._openings[checkpoint] = TextToVideoPipeline.from_checkpoint(checkpoint, self.device, mine,
                                                                             share=self)
        return self._openings[checkpoint]

    @torch.no_grad()
    def opening_latent(self, checkpoint: str, prompt: str, seed: int, height: int, width: int) -> torch.Tensor:
        """The first latent frame (1, C, 1, h, w) of the clip that `checkpoint` (opening_pipeline) samples for
        `prompt` and `seed` with its own sample settings at this frame size: the clean first chunk of a
        chunk-by-chunk generation, as an image would be."""
        opening = self.opening_pipeline(checkpoint)
        s = opening.settings(height=height, width=width)
        latents = opening._latents_one(prompt, seed, s, opening.text_embedding(s.negative_prompt), None)
        return latents[:, :, :1]

    def long_video(self, window_chunks: int = 3, sink_chunks: int = 1, positions: str = "cache"):
        """A LongVideoGenerator over this pipeline's models (a block-causal DiT)."""
        from reel.sample.long_video import LongVideoGenerator

        return LongVideoGenerator(self.model, self.autoencoder, self.text_encoder, window_chunks, sink_chunks,
                                  encode_text=self.text_embedding, positions=positions)

    def _roll_out_one(self, prompt: str, seed: int, s: SampleSettings, bar, known=None) -> np.ndarray:
        from reel.sample.long_video import Segment

        generator = self.long_video(int(self.cfg.sample.get("long_window", 3)),
                                    int(self.cfg.sample.get("long_sink", 1)),
                                    str(self.cfg.sample.get("long_positions", "cache")))
        return np.concatenate(list(generator.frames(
            [Segment(prompt, s.num_frames)], seed, s.height, s.width, s.steps, s.guidance, s.shift, s.solver,
            s.negative_prompt, image_latent=known, progress=bar, first_chunk_guidance=s.first_chunk_guidance)))

    def _latents_one(self, prompt: str, seed: int, s: SampleSettings, negative, bar, known=None) -> torch.Tensor:
        from reel.sample.latents import initial_noise, sample_latents

        text = self.text_embedding(prompt)
        shape = self.autoencoder.latent_shape(s.num_frames, s.height, s.width)
        noise = initial_noise(shape, [seed], self.device)
        return sample_latents(self.model, text.embeddings, text.mask, negative.embeddings, negative.mask, noise,
                              s.steps, s.guidance, s.shift, s.solver, progress=bar, known=known,
                              temporal_patch=self.model.patch_size[0])

    def _generate_one(self, prompt: str, seed: int, s: SampleSettings, negative, bar, known=None,
                      latents_out: Optional[list] = None) -> np.ndarray:
        from reel.data.video_io import to_uint8

        latents = self._latents_one(prompt, seed, s, negative, bar, known)
        if latents_out is not None:
            latents_out.append(latents[0].float().cpu())
        video = self.autoencoder.decode(latents).float().clamp(-1, 1)
        return to_uint8(video[0])


def check_opening(checkpoint: str, autoencoder: str) -> None:
    """That `checkpoint` can draw the opening of videos decoded by `autoencoder` (a ReelError naming
    sample.opening if not): a DiT folder that attends over the whole clip, trained on the same latents."""
    from reel.autoencoders.checkpoint import same_latent_space
    from reel.models.dit_checkpoint import read_dit_config

    try:
        cfg = read_dit_config(checkpoint)
    except ReelError as exc:
        raise ReelError(f"sample.opening={checkpoint}: {exc}") from None
    if cfg.model.get("causal_chunk") is not None:
        raise ReelError(f"sample.opening={checkpoint}: a block-causal DiT; the opening is drawn by a DiT that attends "
                        f"over the whole clip (it sees the motion when it places the object)")
    own = cfg.autoencoder.get("checkpoint")
    if not own or (str(own) != str(autoencoder) and not same_latent_space(own, autoencoder)):
        raise ReelError(f"sample.opening={checkpoint}: trained on autoencoder {own}, whose latents differ from those "
                        f"of {autoencoder}, the one this video is decoded with")


def _text_config(checkpoint_cfg: DictConfig) -> DictConfig:
    """A checkpoint's text encoder settings (the training run's embedding cache is a path on the machine that
    trained it)."""
    return OmegaConf.merge(checkpoint_cfg.text_encoder, {"cache_dir": None})


def rolls_out(checkpoint_cfg: DictConfig, rollout: Optional[bool] = None) -> bool:
    """Whether a checkpoint generates clips chunk by chunk: it is block-causal, and `rollout` says so (None:
    the checkpoint's own sample.rollout, else False)."""
    if rollout is None:
        rollout = (checkpoint_cfg.get("sample") or {}).get("rollout")
    return bool(rollout) and checkpoint_cfg.model.get("causal_chunk") is not None


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)
