"""The video diffusion transformer: patchify, N blocks of (self-attention, cross-attention to text,
feed-forward) under AdaLN-single timestep modulation, final AdaLN + linear + unpatchify.

Timesteps are flow-matching times in [0, 1] (1 is noise), scaled by `timestep_scale` before the
sinusoidal embedding; the model predicts the velocity. Tokens are ordered (t, h, w), frames
first, so a contiguous slice of the sequence is a range of frames.

Block-causal mode (`causal_chunk` latent frames): a token sees its own chunk and earlier ones.
Chunk-by-chunk generation:

    cache = model.init_cache()
    for each chunk:
        for each solver step:  v = model.forward_chunk(z, t, text, mask, cache)
        model.forward_chunk(z_clean, t_clean, text, mask, cache, update_cache=True)   # commit

which equals running the causal model over the whole video.
"""
from __future__ import annotations

import math
from itertools import repeat
from typing import Any, Dict, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch.utils.checkpoint import checkpoint

from reel.config.schema import ModelConfig
from reel.config.validate import attention_kinds
from reel.models.attention import CrossAttention, RMSNorm, SelfAttention, make_attention_core
from reel.models.cache import BlockCache, DiTCache, KVCache, LinearStateCache
from reel.models.mixffn import MLP, MixFFN
from reel.models.rope import Rope3D
from reel.models.text_encoder import masked_mean
from reel.models.tokens import TokenGrid
from reel.parallel.sequence import SequenceSlice, gather_frames

FREQUENCY_DIM = 256


FRAME_PERIOD = 1000.0  # frame embedding: periods up to 1000 latent frames
GRID_PERIOD = 1000.0  # spatial embedding: rows and columns of grids up to ~1000 tokens a side
# config key -> module of the absolute position embeddings (a trained model can gain them, added at zero)
POSITION_EMBEDDINGS = {"frame_embedding": "frame_embed", "spatial_embedding": "spatial_embed"}


def timestep_frequencies(t: torch.Tensor, dim: int = FREQUENCY_DIM, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features (..., dim), cosines first."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[..., None] * freqs
    return torch.cat((angles.cos(), angles.sin()), dim=-1)


class TimestepEmbedder(nn.Module):
    def __init__(self, dim: int, scale: float = 1000.0):
        super().__init__()
        self.scale = scale
        self.mlp = nn.Sequential(nn.Linear(FREQUENCY_DIM, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        features = timestep_frequencies(t * self.scale).to(self.mlp[0].weight.dtype)
        return self.mlp(features)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x (B, N, D); shift, scale (B, G, D) each apply to one of G equal groups of tokens (G = 1 or frames)."""
    b, n, d = x.shape
    groups = shift.shape[1]
    return torch.addcmul(shift[:, :, None], x.view(b, groups, n // groups, d), 1 + scale[:, :, None]).view(b, n, d)


def gated(x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    b, n, d = x.shape
    return (x.view(b, gate.shape[1], -1, d) * gate[:, :, None]).view(b, n, d)


class DiTBlock(nn.Module):
    def __init__(self, cfg: ModelConfig, kind: str):
        super().__init__()
        dim, heads = cfg.hidden_size, cfg.num_heads
        self.kind = kind
        self.norm1 = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=False)
        core = make_attention_core(kind, cfg.sparse_tile, cfg.sparse_window, cfg.sparse_backend,
                                   cfg.linear_attention_eps)
        self.attn = SelfAttention(dim, heads, core, cfg.qkv_bias, cfg.qk_norm, cfg.qk_norm_eps,
                                  recompute=cfg.recompute_activations in ("attention", "all"))
        self.cross_norm = nn.LayerNorm(dim, eps=1e-6) if cfg.cross_attention_norm else nn.Identity()
        self.cross_attn = CrossAttention(dim, heads, cfg.qk_norm, cfg.qk_norm_eps)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=False)
        if cfg.ffn == "mlp":
            self.ffn = MLP(dim, cfg.mlp_ratio)
        else:
            self.ffn = MixFFN(dim, cfg.mlp_ratio, cfg.mixffn_temporal, cfg.mixffn_temporal_kernel,
                              recompute=cfg.recompute_activations == "all")
        self.scale_shift_table = nn.Parameter(torch.randn(6, dim) / dim ** 0.5)

    def forward(self, x: torch.Tensor, time_mod: torch.Tensor, text: torch.Tensor, text_mask: Optional[torch.Tensor],
                grid: TokenGrid, cache: Optional[BlockCache] = None, update_cache: bool = False) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = (self.scale_shift_table + time_mod).unbind(dim=-2)
        attn_cache, ffn_cache = (cache.attn, cache.ffn) if cache is not None else (None, None)
        x = x + gated(self.attn(modulate(self.norm1(x), shift1, scale1), grid, attn_cache, update_cache), gate1)
        x = x + self.cross_attn(self.cross_norm(x), text, text_mask)
        x = x + gated(self.ffn(modulate(self.norm2(x), shift2, scale2), grid, ffn_cache, update_cache), gate2)
        return x


def as_model_config(cfg: Any) -> ModelConfig:
    if isinstance(cfg, ModelConfig):
        return cfg
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    return ModelConfig(**cfg)


class DiT(nn.Module):
    def __init__(self, cfg: Any, latent_channels: int, text_dim: int):
        super().__init__()
        cfg = as_model_config(cfg)
        self.config, self.latent_channels, self.text_dim = cfg, latent_channels, text_dim
        dim, self.patch_size = cfg.hidden_size, tuple(cfg.patch_size)
        if cfg.causal_chunk is not None and cfg.causal_chunk % self.patch_size[0]:
            raise ValueError(f"causal_chunk={cfg.causal_chunk} is not a multiple of the temporal patch "
                             f"{self.patch_size[0]}")
        self.causal_chunk = None if cfg.causal_chunk is None else cfg.causal_chunk // self.patch_size[0]
        self.gradient_checkpointing = cfg.gradient_checkpointing
        self.sequence_parallel = None  # set by reel.parallel.sequence.enable_sequence_parallel

        self.patch_embed = nn.Conv3d(latent_channels, dim, self.patch_size, stride=self.patch_size)
        self.time_embed = TimestepEmbedder(dim, cfg.timestep_scale)
        self.time_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        self.text_proj = nn.Sequential(nn.Linear(text_dim, dim), nn.GELU(approximate="tanh"), nn.Linear(dim, dim))
        self.text_norm = RMSNorm(dim, eps=1e-5) if cfg.caption_norm else nn.Identity()
        self.pooled_text = (nn.Sequential(nn.Linear(text_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
                            if cfg.pooled_text else None)
        self.frame_text = (nn.Sequential(nn.Linear(text_dim + FREQUENCY_DIM, dim), nn.SiLU(), nn.Linear(dim, dim))
                           if cfg.frame_text else None)
        self.rope = Rope3D(dim // cfg.num_heads, cfg.rope_axes_dim, cfg.rope_theta)
        self.frame_embed = nn.Linear(FREQUENCY_DIM, dim) if cfg.frame_embedding else None
        self.spatial_embed = nn.Linear(2 * FREQUENCY_DIM, dim) if cfg.spatial_embedding else None
        self.blocks = nn.ModuleList(DiTBlock(cfg, kind) for kind in attention_kinds(cfg))
        self.final_norm = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=False)
        self.final_table = nn.Parameter(torch.randn(2, dim) / dim ** 0.5)
        self.final_proj = nn.Linear(dim, math.prod(self.patch_size) * latent_channels)
        self.init_weights()

    def init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        for block in self.blocks:  # fused projections, initialised as the separate ones they stand for
            for weight in (*block.attn.qkv.weight.chunk(3), *block.cross_attn.kv.weight.chunk(2)):
                nn.init.xavier_uniform_(weight)
        nn.init.xavier_uniform_(self.patch_embed.weight.view(self.patch_embed.out_channels, -1))
        for linear in (self.time_embed.mlp[0], self.time_embed.mlp[2], self.time_modulation[1]):
            nn.init.normal_(linear.weight, std=0.02)
        # the caption MLPs keep their xavier start: at the 0.02 scale of the timestep MLP, the caption's
        # product with the position embedding (what makes a prompt-dependent layout) sat on a plateau for
        # thousands of steps (benchmarks/RESULTS.md, "A prompt-dependent layout")
        # zero output layers: every block starts as the identity, with no text and no output
        for block in self.blocks:
            nn.init.zeros_(block.cross_attn.out.weight)
            if isinstance(block.ffn, MixFFN):
                block.ffn.reset_temporal()
        nn.init.zeros_(self.final_proj.weight)
        nn.init.zeros_(self.final_proj.bias)
        # position embeddings start at the scale of the patch embedding of noise (a zero start leaves them
        # too small to matter for hundreds of steps); a trained model gains them at zero instead
        # (zero_position_embeddings)

    def zero_position_embeddings(self, keys) -> None:
        """Zero the embeddings of the given config keys (frame_embedding, spatial_embedding): added to a
        trained model, they then start as no embedding at all."""
        for key in keys:
            module = getattr(self, POSITION_EMBEDDINGS[key])
            nn.init.zeros_(module.weight)
            nn.init.zeros_(module.bias)

    @property
    def attention_kinds(self) -> list:
        return [block.kind for block in self.blocks]

    def forward(self, latents: torch.Tensor, timesteps: torch.Tensor, text_emb: torch.Tensor,
                text_mask: Optional[torch.Tensor] = None, cache: Optional[DiTCache] = None,
                frame_offset: Optional[int] = None, update_cache: bool = False,
                commit_frames: Optional[int] = None) -> torch.Tensor:
        """latents (B, C, T, H, W), timesteps (B,) or per latent frame group (B, T / pt), text (B, L, text_dim),
        text_mask (B, L) bool -> velocity (B, C, T, H, W).

        With a `cache` it is forward_chunk, so chunks can also run through a wrapper's __call__ (the DeepSpeed
        engine's, whose hooks gather ZeRO-3 weights)."""
        if cache is not None:
            return self.forward_chunk(latents, timesteps, text_emb, text_mask, cache, frame_offset, update_cache,
                                      commit_frames)
        return self._run(latents, timesteps, text_emb, text_mask, frame_offset=0)

    def init_cache(self, window_frames: Optional[int] = None, sink_frames: int = 0) -> DiTCache:
        """An empty cache; softmax/sparse layers keep the last `window_frames` latent frames (all when None)
        plus the first `sink_frames`; linear layers keep their constant-size state."""
        pt = self.patch_size[0]
        window = None if window_frames is None else window_frames // pt

        def attention_cache(kind: str):
            return LinearStateCache() if kind == "linear" else KVCache(window, sink_frames // pt)

        return DiTCache([BlockCache(attention_cache(kind)) for kind in self.attention_kinds])

    def forward_chunk(self, latents: torch.Tensor, timesteps: torch.Tensor, text_emb: torch.Tensor,
                      text_mask: Optional[torch.Tensor], cache: DiTCache, frame_offset: Optional[int] = None,
                      update_cache: bool = False, commit_frames: Optional[int] = None) -> torch.Tensor:
        """One or more whole chunks after the committed ones. `frame_offset` (latent frames, default: the
        frames committed so far) places them in time; `update_cache=True` commits them, or only the first
        `commit_frames` latent frames (whole chunks): clean chunks at t = 0 followed by a chunk being denoised
        (per-frame timesteps), so one forward both commits the past and takes a solver step."""
        if self.causal_chunk is None:
            raise ValueError("forward_chunk needs a block-causal model (model.causal_chunk)")
        offset = cache.frames if frame_offset is None else frame_offset
        chunk = self.config.causal_chunk
        if offset % chunk:
            raise ValueError(f"frame_offset={offset} is not at a chunk boundary (causal_chunk={chunk})")
        if commit_frames is not None and (commit_frames % chunk or not 0 < commit_frames <= latents.shape[2]):
            raise ValueError(f"commit_frames={commit_frames} is not a whole number of chunks (causal_chunk={chunk}) "
                             f"in 1..{latents.shape[2]}")
        out = self._run(latents, timesteps, text_emb, text_mask, offset, cache, update_cache, commit_frames)
        if update_cache:
            cache.frames = offset + (latents.shape[2] if commit_frames is None else commit_frames)
        return out

    def _run(self, latents, timesteps, text_emb, text_mask, frame_offset: int,
             cache: Optional[DiTCache] = None, update_cache: bool = False,
             commit_frames: Optional[int] = None) -> torch.Tensor:
        if latents.dim() != 5 or any(size % p for size, p in zip(latents.shape[2:], self.patch_size)):
            raise ValueError(f"latents of shape {tuple(latents.shape)} are not (B, C, T, H, W) in whole patches "
                             f"of {self.patch_size}")
        sp, pt = self.sequence_parallel, self.patch_size[0]
        if sp is not None:
            if cache is not None:
                raise ValueError("cached chunk-by-chunk generation runs on one process, not sequence-parallel")
            split = sp.split(latents.shape[2] // pt, self.causal_chunk or 1)
            latents = F.pad(latents, (0, 0, 0, 0, 0, (split.per_rank * sp.size - split.total) * pt))
            latents = latents[:, :, split.start * pt:(split.start + split.per_rank) * pt]
        x = self.patch_embed(latents)
        batch, dim, frames, height, width = x.shape
        x = x.flatten(2).transpose(1, 2)
        frame_times = self.frame_timesteps(timesteps, batch, frames if sp is None else split.total)
        if sp is None:
            grid = TokenGrid(frames, height, width, frame_offset // pt, self.causal_chunk, self.rope, x.device,
                             commit_frames=None if commit_frames is None else commit_frames // pt)
        else:
            whole = TokenGrid(split.total, height, width, frame_offset // pt, self.causal_chunk, self.rope, x.device)
            grid = whole.replace(frames=frames, frame_offset=whole.frame_offset + split.start,
                                 parallel=SequenceSlice(sp, split, whole))
            if frame_times.shape[1] > 1:  # per-frame times: this slice's (padding repeats the last)
                index = torch.arange(split.start, split.start + frames, device=x.device).clamp(max=split.total - 1)
                frame_times = frame_times.index_select(1, index)
        if self.frame_embed is not None:
            x = x + self.frame_embedding(grid).repeat_interleave(height * width, dim=0).to(x.dtype)
        if self.spatial_embed is not None:
            x = x + self.spatial_embedding(grid).repeat(frames, 1).to(x.dtype)
        time_emb = self.time_embed(frame_times)  # (B, G, D)
        if self.pooled_text is not None or self.frame_text is not None:
            pooled = self.pooled_caption(text_emb, text_mask)
            if self.pooled_text is not None:
                time_emb = time_emb + self.pooled_text(pooled.to(time_emb.dtype))[:, None]
            if self.frame_text is not None:  # (B, frames, D): the modulation now differs per frame
                time_emb = time_emb + self.frame_caption(pooled, grid).to(time_emb.dtype)
        time_mod = self.time_modulation(time_emb).unflatten(-1, (6, dim))
        text = self.text_norm(self.text_proj(text_emb))
        block_caches = cache.blocks if cache is not None else repeat(None)
        for block, block_cache in zip(self.blocks, block_caches):
            if self.gradient_checkpointing and torch.is_grad_enabled() and not update_cache:
                # the recomputation in backward must read the cache as it is now, not after later commits
                snapshot = None if block_cache is None else block_cache.snapshot()
                x = checkpoint(block, x, time_mod, text, text_mask, grid, snapshot, use_reentrant=False)
            else:
                x = block(x, time_mod, text, text_mask, grid, block_cache, update_cache)
        shift, scale = (self.final_table + time_emb.unsqueeze(-2)).unbind(dim=-2)
        x = self.final_proj(modulate(self.final_norm(x), shift, scale))
        out = self.unpatchify(x, frames, height, width)
        return out if sp is None else gather_frames(out, split, sp, frame_dim=2, frames_per_slice_frame=pt)

    @staticmethod
    def frame_features(grid: TokenGrid) -> torch.Tensor:
        """(frames, FREQUENCY_DIM): sinusoidal features of each grid frame's absolute index (max period 1000)."""
        return timestep_frequencies(grid.frame_index(), max_period=FRAME_PERIOD)

    def frame_embedding(self, grid: TokenGrid) -> torch.Tensor:
        """(frames, D): the learned embedding of each grid frame's absolute index."""
        return self.frame_embed(self.frame_features(grid).to(self.frame_embed.weight.dtype))

    def frame_caption(self, pooled: torch.Tensor, grid: TokenGrid) -> torch.Tensor:
        """(B, frames, D): the frame_text MLP of each grid frame's (pooled caption (B, E), absolute index)."""
        frames = self.frame_features(grid).to(pooled.dtype)
        features = torch.cat((pooled[:, None].expand(-1, frames.shape[0], -1),
                              frames[None].expand(pooled.shape[0], -1, -1)), dim=-1)
        return self.frame_text(features.to(self.frame_text[0].weight.dtype))

    @staticmethod
    def pooled_caption(text_emb: torch.Tensor, text_mask: Optional[torch.Tensor]) -> torch.Tensor:
        """(B, L, E) caption states -> (B, E): their mean over the caption's tokens (zeros for an empty one)."""
        if text_mask is None:
            return text_emb.mean(dim=1)
        return masked_mean(text_emb, text_mask)

    def spatial_embedding(self, grid: TokenGrid) -> torch.Tensor:
        """(height * width, D): the learned embedding of each grid position's (row, column), raster order."""
        rows = torch.arange(grid.height, device=grid.device).repeat_interleave(grid.width)
        cols = torch.arange(grid.width, device=grid.device).repeat(grid.height)
        features = torch.cat((timestep_frequencies(rows, max_period=GRID_PERIOD),
                              timestep_frequencies(cols, max_period=GRID_PERIOD)), dim=-1)
        return self.spatial_embed(features.to(self.spatial_embed.weight.dtype))

    def loss_frames(self, latent_frames: int) -> slice:
        """The latent frames whose loss this process computes: all of them, or under sequence
        parallelism its own slice's real frames (so each sample's loss is counted once over the group)."""
        if self.sequence_parallel is None:
            return slice(0, latent_frames)
        pt = self.patch_size[0]
        split = self.sequence_parallel.split(latent_frames // pt, self.causal_chunk or 1)
        return slice(split.start * pt, (split.start + split.valid) * pt)

    @staticmethod
    def frame_timesteps(timesteps: torch.Tensor, batch: int, frames: int) -> torch.Tensor:
        """(B, G): one timestep for the whole clip (G = 1) or one per frame after patching (G = frames)."""
        t = timesteps.reshape(-1, 1) if timesteps.dim() <= 1 else timesteps
        t = t.expand(batch, -1) if t.shape[0] == 1 else t
        if t.shape[0] != batch or t.shape[1] not in (1, frames):
            raise ValueError(f"timesteps of shape {tuple(timesteps.shape)} fit neither (B,) nor (B, {frames}) "
                             f"for batch {batch}")
        return t

    def unpatchify(self, x: torch.Tensor, frames: int, height: int, width: int) -> torch.Tensor:
        pt, ph, pw = self.patch_size
        x = x.view(x.shape[0], frames, height, width, pt, ph, pw, -1).permute(0, 7, 1, 4, 2, 5, 3, 6)
        return x.reshape(x.shape[0], -1, frames * pt, height * ph, width * pw)


def build_dit(model_cfg: Any, latent_channels: int, text_dim: int) -> DiT:
    return DiT(model_cfg, latent_channels, text_dim)


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def dit_summary(model: DiT) -> Dict[str, int]:
    """Parameter counts: total, embeddings, per self-attention kind, cross-attention, feed-forward, final layer."""
    summary = {
        "total": _count(model),
        "embeddings": sum(_count(m) for m in (model.patch_embed, model.time_embed, model.time_modulation,
                                               model.text_proj, model.text_norm)),
    }
    for kind in dict.fromkeys(model.attention_kinds):
        summary[f"self_attention.{kind}"] = sum(_count(b.attn) for b in model.blocks if b.kind == kind)
    summary["cross_attention"] = sum(_count(b.cross_attn) + _count(b.cross_norm) for b in model.blocks)
    summary["ffn"] = sum(_count(b.ffn) for b in model.blocks)
    summary["modulation_tables"] = sum(b.scale_shift_table.numel() for b in model.blocks)
    summary["final"] = model.final_table.numel() + _count(model.final_proj)
    return summary


def format_count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)
