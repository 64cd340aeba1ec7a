"""The architecture of a DC-AE-V autoencoder, resolved from `autoencoder.arch` with defaults and checked.

Stage i of the encoder runs depth_list[i] blocks of block_types[i] at width_list[i]; between
stages a down block halves the frame (and halves time at the downs listed in temporal_downs), so
spatial_factor = 2^(stages - 1) and temporal_factor = 2^len(temporal_downs). The decoder mirrors it
with its own widths, depths and block types (the encoder's unless given).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, List, Mapping

from omegaconf import DictConfig, OmegaConf

from reel.autoencoders.blocks import BLOCK_KINDS
from reel.errors import ReelError

KIND = "dc_ae_v"
NORMS = ("rms", "layer")
DEFAULT_WIDTHS = (64, 128, 256, 256, 512, 512, 1024, 1024)


@dataclass
class DcAeVArch:
    latent_channels: int
    spatial_factor: int
    temporal_factor: int
    width_list: List[int]
    depth_list: List[int]
    block_types: List[str]
    decoder_width_list: List[int]
    decoder_depth_list: List[int]
    decoder_block_types: List[str]
    temporal_downs: List[int]  # indices of the down blocks (0 = after stage 0) that also halve time
    chunk_frames: int = 4  # pixel frames per chunk after the lone first frame
    norm: str = "rms"
    expand_ratio: float = 4.0  # GLU-MBConv hidden width / block width
    head_dim: int = 32  # channels per head of the frame linear attention
    up_kernel: int = 1  # kernel of the up blocks' learned pixel shuffle: 1 (cheap) or 3 (DC-AE's)

    @property
    def num_stages(self) -> int:
        return len(self.width_list)

    def arch_dict(self) -> dict:
        """The `arch:` keys, fully resolved, for a config.yaml that rebuilds exactly this model."""
        factors = ("latent_channels", "spatial_factor", "temporal_factor")
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in factors}


ARCH_KEYS = tuple(f.name for f in dataclasses.fields(DcAeVArch)
                  if f.name not in ("latent_channels", "spatial_factor", "temporal_factor"))


def plain_config(cfg: Any) -> dict:
    """An autoencoder config node (DictConfig, dataclass or mapping) as a plain dict."""
    if dataclasses.is_dataclass(cfg):
        cfg = OmegaConf.structured(cfg)
    elif isinstance(cfg, Mapping) and not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(dict(cfg))
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    raise TypeError(f"an autoencoder config must be a mapping or a dataclass, not {type(cfg).__name__}")


def _fail(key: str, value: Any, rule: str) -> None:
    raise ReelError(f"autoencoder.{key}={value}: {rule}")


def _int_list(arch: dict, key: str, length: int) -> List[int]:
    value = arch[key]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) and v >= 0 for v in value):
        _fail(f"arch.{key}", value, "must be a list of non-negative integers")
    if len(value) != length:
        _fail(f"arch.{key}", value, f"needs one entry per stage ({length}, from spatial_factor and arch.width_list)")
    return list(value)


def _widths(arch: dict, key: str, length: int) -> List[int]:
    widths = _int_list(arch, key, length)
    if min(widths) < 1:
        _fail(f"arch.{key}", widths, "widths must be positive")
    return widths


def _kinds(arch: dict, key: str, length: int) -> List[str]:
    value = arch[key]
    kinds = [value] * length if isinstance(value, str) else list(value)
    if len(kinds) != length:
        _fail(f"arch.{key}", value, f"needs one block type per stage ({length})")
    for kind in kinds:
        if kind not in BLOCK_KINDS:
            _fail(f"arch.{key}", value, f"block types must be among {', '.join(BLOCK_KINDS)}")
    return kinds


def _log2(key: str, value: Any) -> int:
    if not isinstance(value, int) or value < 1 or value & (value - 1):
        _fail(key, value, "must be a power of two")
    return int(math.log2(value))


def resolve_arch(cfg_autoencoder: Any) -> DcAeVArch:
    """The checked architecture of an autoencoder config node (DictConfig, dataclass or dict)."""
    cfg = plain_config(cfg_autoencoder)
    kind = cfg.get("kind", KIND)
    if kind == "diffusers":
        _fail("kind", kind, "a diffusers autoencoder is loaded from its folder (autoencoder.checkpoint), never built "
                            "from a config or trained here")
    if kind != KIND:
        _fail("kind", kind, f"unknown autoencoder kind (known: {KIND})")
    latent = cfg.get("latent_channels")
    if not isinstance(latent, int) or latent < 1:
        _fail("latent_channels", latent, "must be a positive integer")
    sf, tf = cfg.get("spatial_factor"), cfg.get("temporal_factor")
    num_downs, num_time_downs = _log2("spatial_factor", sf), _log2("temporal_factor", tf)
    arch = dict(cfg.get("arch") or {})
    unknown = sorted(set(arch) - set(ARCH_KEYS))
    if unknown:
        _fail(f"arch.{unknown[0]}", arch[unknown[0]], f"unknown key (known: {', '.join(ARCH_KEYS)})")

    if not isinstance(arch.get("width_list", []), list):
        _fail("arch.width_list", arch["width_list"], "must be a list of widths, one per stage")
    stages = len(arch["width_list"]) if "width_list" in arch else num_downs + 1
    if stages != num_downs + 1:
        _fail("spatial_factor", sf, f"arch.width_list has {stages} stages, which gives spatial factor "
                                    f"{2 ** (stages - 1)} (2^(stages-1))")
    if num_time_downs > num_downs:
        _fail("temporal_factor", tf, f"needs {num_time_downs} temporal downs but there are only {num_downs} downs")
    first_time_down = min(1, num_downs - num_time_downs)  # like Wan: the first down is spatial only
    arch.setdefault("width_list", list(DEFAULT_WIDTHS[:stages]))
    arch.setdefault("depth_list", [1] * stages)
    arch.setdefault("block_types", ["res" if i < 3 else "linear_attn" for i in range(stages)])
    arch.setdefault("temporal_downs", list(range(first_time_down, first_time_down + num_time_downs)))
    for key in ("width_list", "depth_list", "block_types"):
        arch.setdefault(f"decoder_{key}", arch[key])

    resolved = DcAeVArch(
        latent_channels=latent, spatial_factor=sf, temporal_factor=tf,
        width_list=_widths(arch, "width_list", stages),
        depth_list=_int_list(arch, "depth_list", stages),
        block_types=_kinds(arch, "block_types", stages),
        decoder_width_list=_widths(arch, "decoder_width_list", stages),
        decoder_depth_list=_int_list(arch, "decoder_depth_list", stages),
        decoder_block_types=_kinds(arch, "decoder_block_types", stages),
        temporal_downs=list(arch["temporal_downs"]),
        **{k: arch[k] for k in ("chunk_frames", "norm", "expand_ratio", "head_dim", "up_kernel") if k in arch},
    )
    _check(resolved)
    return resolved


def _check(a: DcAeVArch) -> None:
    num_downs = a.num_stages - 1
    time_downs = a.temporal_downs
    if (len(time_downs) != round(math.log2(a.temporal_factor)) or len(set(time_downs)) != len(time_downs)
            or not all(isinstance(i, int) and 0 <= i < num_downs for i in time_downs)):
        _fail("arch.temporal_downs", time_downs, f"must name {round(math.log2(a.temporal_factor))} distinct down "
                                                 f"blocks in 0..{num_downs - 1} (temporal_factor {a.temporal_factor})")
    if not isinstance(a.chunk_frames, int) or a.chunk_frames < 1 or a.chunk_frames % a.temporal_factor:
        _fail("arch.chunk_frames", a.chunk_frames,
              f"must be a positive multiple of temporal_factor {a.temporal_factor}")
    if a.norm not in NORMS:
        _fail("arch.norm", a.norm, f"must be one of {', '.join(NORMS)}")
    if a.up_kernel not in (1, 3):
        _fail("arch.up_kernel", a.up_kernel, "must be 1 or 3")
    if not isinstance(a.head_dim, int) or a.head_dim < 1:
        _fail("arch.head_dim", a.head_dim, "must be a positive integer")
    if not a.expand_ratio > 0:
        _fail("arch.expand_ratio", a.expand_ratio, "must be positive")
    for key, widths, kinds in (("width_list", a.width_list, a.block_types),
                               ("decoder_width_list", a.decoder_width_list, a.decoder_block_types)):
        for i in range(num_downs):
            packed = 4 * (2 if i in time_downs else 1)
            high, low = widths[i], widths[i + 1]
            if (high * packed) % low:
                _fail(f"arch.{key}", widths, f"stage {i}->{i + 1} ({high}->{low}, {packed}x packing): the residual "
                                             f"shortcut maps {packed}*{high} channels to {low}, which must divide it")
            if key == "width_list" and low % packed:
                _fail(f"arch.{key}", widths, f"stage {i}->{i + 1}: the down block's conv makes {low}/{packed} "
                                             f"channels before packing, {low} must be a multiple of {packed}")
        for width, kind in zip(widths, kinds):
            if kind == "linear_attn" and width % a.head_dim:
                _fail(f"arch.{key}", widths, f"linear_attn stages need widths divisible by arch.head_dim={a.head_dim}")
    if a.width_list[-1] % a.latent_channels:
        _fail("latent_channels", a.latent_channels,
              f"must divide the last encoder width {a.width_list[-1]} (the channel-averaging shortcut)")
    if a.decoder_width_list[-1] % a.latent_channels:
        _fail("latent_channels", a.latent_channels,
              f"must divide the last decoder width {a.decoder_width_list[-1]} (the channel-duplicating shortcut)")


def autoencoder_config_dict(cfg_autoencoder: Any, arch: DcAeVArch) -> dict:
    """The autoencoder config node with its arch fully resolved (what a checkpoint's config.yaml holds)."""
    cfg = plain_config(cfg_autoencoder)
    return {"name": cfg.get("name", KIND), "kind": KIND, "checkpoint": None,
            "spatial_factor": arch.spatial_factor, "temporal_factor": arch.temporal_factor,
            "latent_channels": arch.latent_channels, "arch": arch.arch_dict()}
