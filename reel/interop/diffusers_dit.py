"""diffusers SanaVideoTransformer3DModel / WanTransformer3DModel folders <-> reel DiT folders.

Each diffusers tensor becomes one reel parameter or a slice of one (q, k and v projections are fused),
and the config becomes the reel model options that compute the same thing, so the converted DiT's
output at flow-matching time t equals the diffusers model's at timestep 1000 t (fp32, to rounding).
A source tensor left over, or one the reel model needs and the source lacks, is an error naming it.
Nothing here imports diffusers: a diffusers folder is config.json plus safetensors.

    sana_video: ReLU linear attention (RoPE in the numerator, eps 1e-15), Mix-FFN with the dense
                temporal conv, caption RMSNorm; captions from Gemma-2 2B (2304-d)
    wan:        softmax attention with q/k/v biases, GELU-tanh MLP, LayerNorm before cross-attention;
                captions from umT5-XXL (4096-d); text-to-video only (no image conditioning)
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, Union

import torch
from omegaconf import OmegaConf
from safetensors.torch import save_file

from reel.atomic import atomic_folder
from reel.checkpoint_folder import load_weights
from reel.config.schema import AutoencoderConfig, ModelConfig, ReelConfig, TextEncoderConfig
from reel.config.validate import attention_kinds, validate_config
from reel.errors import ReelError
from reel.models.dit import FREQUENCY_DIM, as_model_config, build_dit
from reel.models.dit_checkpoint import load_dit, read_dit_extra_info, save_dit
from reel.models.rope import default_axes_dim

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"
INDEX_FILE = WEIGHTS_FILE + ".index.json"
DIFFUSERS_VERSION = "0.42.1"  # the version whose modules these mappings were checked against
CLASSES = {"sana_video": "SanaVideoTransformer3DModel", "wan": "WanTransformer3DModel"}
LAYER_NORM_EPS = 1e-6  # reel's DiT LayerNorms
SANA_QK_NORM_EPS = 1e-5  # diffusers Attention's default eps, SANA-Video's q/k RMSNorm
SANA_LINEAR_EPS = 1e-15  # SanaLinearAttnProcessor3_0's normaliser

# __init__ defaults of the two classes in diffusers 0.42.1: config.json files may omit keys
DEFAULTS = {
    "sana_video": dict(in_channels=16, out_channels=16, num_attention_heads=20, attention_head_dim=112,
                       num_layers=20, num_cross_attention_heads=20, cross_attention_head_dim=112,
                       cross_attention_dim=2240, caption_channels=2304, mlp_ratio=2.5, dropout=0.0,
                       attention_bias=False, sample_size=30, patch_size=[1, 2, 2], norm_elementwise_affine=False,
                       norm_eps=1e-6, interpolation_scale=None, guidance_embeds=False, guidance_embeds_scale=0.1,
                       qk_norm="rms_norm_across_heads", rope_max_seq_len=1024),
    "wan": dict(patch_size=[1, 2, 2], num_attention_heads=40, attention_head_dim=128, in_channels=16,
                out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=13824, num_layers=40, cross_attn_norm=True,
                qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=None, added_kv_proj_dim=None,
                rope_max_seq_len=1024, pos_embed_seq_len=None),
}

# what a converted folder records about where its latents and captions come from: both families denoise
# Wan VAE latents (Wan 2.1's: 16 channels, 8x space; Wan 2.2 TI2V's: 48 channels, 16x space), 4x in time
LATENT_SPACES = {16: ("wan2.1-vae", 8), 48: ("wan2.2-vae", 16)}
TEXT_ENCODERS = {"sana_video": ("gemma-2-2b-it", 300), "wan": ("umt5-xxl", 512)}
CLIP = dict(height=480, width=832, num_frames=81, fps=16.0)  # both families' native 480p clip


# --- tensor layouts: (diffusers tensors -> reel tensor, reel tensor and part count -> diffusers tensors)

def _temporal_to_reel(parts: List[torch.Tensor]) -> torch.Tensor:
    # conv_temp.weight[o, i, j, 0] is temporal_mix.weight[o, j * dim + i] (reel/models/mixffn.py)
    return parts[0].squeeze(-1).transpose(1, 2).flatten(1)


def _temporal_to_diffusers(t: torch.Tensor, n: int) -> List[torch.Tensor]:
    return [t.unflatten(1, (-1, t.shape[0])).transpose(1, 2).unsqueeze(-1).contiguous()]


LAYOUTS: Dict[str, Tuple[Callable, Callable]] = {
    "same": (lambda parts: parts[0], lambda t, n: [t]),
    "fused": (lambda parts: torch.cat(parts), lambda t, n: [p.clone() for p in t.chunk(n)]),
    "leading_one": (lambda parts: parts[0].squeeze(0), lambda t, n: [t.unsqueeze(0)]),  # Wan's (1, k, dim) tables
    "conv1x1": (lambda parts: parts[0].flatten(1), lambda t, n: [t[:, :, None, None]]),
    "temporal_conv": (_temporal_to_reel, _temporal_to_diffusers),
}


@dataclass(frozen=True)
class Rule:
    """reel parameter `target` is made of the diffusers tensors `sources` in `layout`."""

    target: str
    sources: Tuple[str, ...]
    layout: str = "same"


def _linear(target: str, source: str, bias: bool = True, layout: str = "same") -> List[Rule]:
    rules = [Rule(f"{target}.weight", (f"{source}.weight",), layout)]
    return rules + [Rule(f"{target}.bias", (f"{source}.bias",))] if bias else rules


def _fused(target: str, sources: List[str], bias: bool) -> List[Rule]:
    rules = [Rule(f"{target}.weight", tuple(f"{s}.weight" for s in sources), "fused")]
    return rules + [Rule(f"{target}.bias", tuple(f"{s}.bias" for s in sources), "fused")] if bias else rules


def _attention_rules(ours: str, self_attn: str, cross_attn: str, model: ModelConfig) -> List[Rule]:
    rules = [*_fused(f"{ours}.attn.qkv", [f"{self_attn}.to_{x}" for x in "qkv"], model.qkv_bias),
             *_linear(f"{ours}.attn.out", f"{self_attn}.to_out.0"),
             *_linear(f"{ours}.cross_attn.q", f"{cross_attn}.to_q"),
             *_fused(f"{ours}.cross_attn.kv", [f"{cross_attn}.to_k", f"{cross_attn}.to_v"], bias=True),
             *_linear(f"{ours}.cross_attn.out", f"{cross_attn}.to_out.0")]
    if model.qk_norm == "rms_across_heads":
        for layer, attn in (("attn", self_attn), ("cross_attn", cross_attn)):
            rules += [Rule(f"{ours}.{layer}.split_{x}.norm.weight", (f"{attn}.norm_{x}.weight",)) for x in "qk"]
    return rules


def sana_video_rules(model: ModelConfig) -> List[Rule]:
    rules = [*_linear("patch_embed", "patch_embedding"),
             *_linear("time_embed.mlp.0", "time_embed.emb.timestep_embedder.linear_1"),
             *_linear("time_embed.mlp.2", "time_embed.emb.timestep_embedder.linear_2"),
             *_linear("time_modulation.1", "time_embed.linear"),
             *_linear("text_proj.0", "caption_projection.linear_1"),
             *_linear("text_proj.2", "caption_projection.linear_2"),
             Rule("text_norm.weight", ("caption_norm.weight",)),
             Rule("final_table", ("scale_shift_table",)),
             *_linear("final_proj", "proj_out")]
    for i in range(model.depth):
        ours, theirs = f"blocks.{i}", f"transformer_blocks.{i}"
        rules += [Rule(f"{ours}.scale_shift_table", (f"{theirs}.scale_shift_table",)),
                  *_attention_rules(ours, f"{theirs}.attn1", f"{theirs}.attn2", model),
                  *_linear(f"{ours}.ffn.expand", f"{theirs}.ff.conv_inverted", layout="conv1x1"),
                  *_linear(f"{ours}.ffn.spatial", f"{theirs}.ff.conv_depth"),
                  *_linear(f"{ours}.ffn.project", f"{theirs}.ff.conv_point", bias=False, layout="conv1x1"),
                  Rule(f"{ours}.ffn.temporal_mix.weight", (f"{theirs}.ff.conv_temp.weight",), "temporal_conv")]
    return rules


def wan_rules(model: ModelConfig) -> List[Rule]:
    rules = [*_linear("patch_embed", "patch_embedding"),
             *_linear("time_embed.mlp.0", "condition_embedder.time_embedder.linear_1"),
             *_linear("time_embed.mlp.2", "condition_embedder.time_embedder.linear_2"),
             *_linear("time_modulation.1", "condition_embedder.time_proj"),
             *_linear("text_proj.0", "condition_embedder.text_embedder.linear_1"),
             *_linear("text_proj.2", "condition_embedder.text_embedder.linear_2"),
             Rule("final_table", ("scale_shift_table",), "leading_one"),
             *_linear("final_proj", "proj_out")]
    for i in range(model.depth):
        ours = theirs = f"blocks.{i}"
        rules += [Rule(f"{ours}.scale_shift_table", (f"{theirs}.scale_shift_table",), "leading_one"),
                  *_attention_rules(ours, f"{theirs}.attn1", f"{theirs}.attn2", model),
                  *_linear(f"{ours}.ffn.fc1", f"{theirs}.ffn.net.0.proj"),
                  *_linear(f"{ours}.ffn.fc2", f"{theirs}.ffn.net.2")]
        if model.cross_attention_norm:
            rules += _linear(f"{ours}.cross_norm", f"{theirs}.norm2")
    return rules


RULES = {"sana_video": sana_video_rules, "wan": wan_rules}


# --- configs

def _require(where: str, key: str, value, ok: bool, rule: str) -> None:
    if not ok:
        raise ReelError(f"{where}: {key}={value}: {rule}")


def _hidden_width(dim: int, mlp_ratio: float) -> int:
    """SANA-Video's GLUMBTempConv truncates dim x ratio, reel's Mix-FFN rounds it: they must agree."""
    return int(mlp_ratio * dim)


def sana_video_model_config(src: dict, where: str) -> Tuple[ModelConfig, int, int]:
    """config.json of a SanaVideoTransformer3DModel -> (reel model config, latent channels, text width)."""
    heads, head_dim = src["num_attention_heads"], src["attention_head_dim"]
    dim = heads * head_dim
    _require(where, "out_channels", src["out_channels"], src["out_channels"] in (None, src["in_channels"]),
             f"reel's DiT predicts as many channels as it reads (in_channels={src['in_channels']})")
    _require(where, "guidance_embeds", src["guidance_embeds"], not src["guidance_embeds"],
             "a guidance-distilled timestep embedding is not in reel's DiT")
    _require(where, "cross_attention_dim", src["cross_attention_dim"], src["cross_attention_dim"] == dim,
             f"must be num_attention_heads x attention_head_dim = {dim} (reel cross-attends at the model width)")
    for key, ours in (("num_cross_attention_heads", heads), ("cross_attention_head_dim", head_dim)):
        _require(where, key, src[key], src[key] == ours, f"reel's cross-attention has the self-attention's "
                 f"heads ({heads} x {head_dim})")
    _require(where, "norm_elementwise_affine", src["norm_elementwise_affine"], not src["norm_elementwise_affine"],
             "reel's block LayerNorms have no affine weights")
    _require(where, "norm_eps", src["norm_eps"], src["norm_eps"] == LAYER_NORM_EPS,
             f"reel's block LayerNorms use eps {LAYER_NORM_EPS}")
    _require(where, "qk_norm", src["qk_norm"], src["qk_norm"] in ("rms_norm_across_heads", None),
             "must be rms_norm_across_heads or null")
    _require(where, "patch_size", src["patch_size"], len(src["patch_size"]) == 3, "must be (pt, ph, pw)")
    hidden = _hidden_width(dim, src["mlp_ratio"])
    _require(where, "mlp_ratio", src["mlp_ratio"], round(dim * src["mlp_ratio"]) == hidden,
             f"gives a hidden width of {dim} x {src['mlp_ratio']} that truncates and rounds differently")
    model = ModelConfig(
        name="sana-video", patch_size=list(src["patch_size"]), hidden_size=dim, depth=src["num_layers"],
        num_heads=heads, mlp_ratio=float(src["mlp_ratio"]), attention="linear",
        qk_norm="rms_across_heads" if src["qk_norm"] else "none", qk_norm_eps=SANA_QK_NORM_EPS,
        qkv_bias=bool(src["attention_bias"]), linear_attention_eps=SANA_LINEAR_EPS, ffn="mixffn",
        mixffn_temporal="dense", mixffn_temporal_kernel=3, cross_attention_norm=False, caption_norm=True)
    return model, src["in_channels"], src["caption_channels"]


def wan_model_config(src: dict, where: str) -> Tuple[ModelConfig, int, int]:
    """config.json of a WanTransformer3DModel -> (reel model config, latent channels, text width)."""
    heads, head_dim = src["num_attention_heads"], src["attention_head_dim"]
    dim = heads * head_dim
    _require(where, "out_channels", src["out_channels"], src["out_channels"] in (None, src["in_channels"]),
             f"reel's DiT predicts as many channels as it reads (in_channels={src['in_channels']})")
    _require(where, "freq_dim", src["freq_dim"], src["freq_dim"] == FREQUENCY_DIM,
             f"reel's timestep embedding has {FREQUENCY_DIM} frequencies")
    for key in ("image_dim", "added_kv_proj_dim", "pos_embed_seq_len"):
        _require(where, key, src[key], src[key] is None,
                 "image-to-video conditioning (CLIP image tokens) is not in reel's DiT")
    _require(where, "eps", src["eps"], src["eps"] == LAYER_NORM_EPS,
             f"reel's block LayerNorms use eps {LAYER_NORM_EPS}")
    _require(where, "patch_size", src["patch_size"], len(src["patch_size"]) == 3, "must be (pt, ph, pw)")
    _require(where, "ffn_dim", src["ffn_dim"], round(dim * (src["ffn_dim"] / dim)) == src["ffn_dim"],
             f"is not a width reel's MLP can express as a ratio of {dim}")
    # diffusers 0.42.1 builds Wan's q/k RMSNorms over all heads whatever `qk_norm` says
    model = ModelConfig(
        name="wan", patch_size=list(src["patch_size"]), hidden_size=dim, depth=src["num_layers"], num_heads=heads,
        mlp_ratio=src["ffn_dim"] / dim, attention="softmax", qk_norm="rms_across_heads", qk_norm_eps=src["eps"],
        qkv_bias=True, ffn="mlp", cross_attention_norm=bool(src["cross_attn_norm"]), caption_norm=False)
    return model, src["in_channels"], src["text_dim"]


MODEL_CONFIGS = {"sana_video": sana_video_model_config, "wan": wan_model_config}


def diffusers_kind(model: ModelConfig, where: str) -> str:
    """Which diffusers class a reel model config maps onto; a ReelError naming the option that prevents it."""
    kinds = set(attention_kinds(model))
    kind = "wan" if model.ffn == "mlp" else "sana_video"
    head_dim = model.hidden_size // model.num_heads

    def need(key: str, ok: bool, rule: str) -> None:
        _require(where, f"model.{key}", getattr(model, key), ok, f"{rule} to map onto diffusers {CLASSES[kind]}")

    need("causal_chunk", model.causal_chunk is None, "must be null (the diffusers models are bidirectional)")
    need("rope_axes_dim", model.rope_axes_dim is None or tuple(model.rope_axes_dim) == default_axes_dim(head_dim),
         f"must be null or {list(default_axes_dim(head_dim))}")
    need("rope_theta", model.rope_theta == 10000.0, "must be 10000")
    need("timestep_scale", model.timestep_scale == 1000.0, "must be 1000")
    if kind == "wan":
        need("attention", kinds == {"softmax"}, "must be softmax in every layer")
        need("qkv_bias", model.qkv_bias, "must be true")
        need("qk_norm", model.qk_norm == "rms_across_heads", "must be rms_across_heads")
        need("qk_norm_eps", model.qk_norm_eps == LAYER_NORM_EPS, f"must be {LAYER_NORM_EPS} (Wan's one eps)")
        need("caption_norm", not model.caption_norm, "must be false")
    else:
        need("attention", kinds == {"linear"}, "must be linear in every layer")
        need("mixffn_temporal", model.mixffn_temporal == "dense", "must be dense")
        need("mixffn_temporal_kernel", model.mixffn_temporal_kernel == 3, "must be 3")
        need("cross_attention_norm", not model.cross_attention_norm, "must be false")
        need("caption_norm", model.caption_norm, "must be true")
        need("qk_norm", model.qk_norm in ("rms_across_heads", "none"), "must be rms_across_heads or none")
        need("qk_norm_eps", model.qk_norm_eps == SANA_QK_NORM_EPS, f"must be {SANA_QK_NORM_EPS}")
        need("linear_attention_eps", model.linear_attention_eps == SANA_LINEAR_EPS, f"must be {SANA_LINEAR_EPS}")
        need("mlp_ratio", round(model.hidden_size * model.mlp_ratio) == _hidden_width(model.hidden_size,
                                                                                       model.mlp_ratio),
             "must give a whole hidden width")
    return kind


def diffusers_config(kind: str, model: ModelConfig, latent_channels: int, text_dim: int, base: dict) -> dict:
    """config.json for `kind`: the reel model's values over `base` (the converted source's config, which keeps
    keys reel does not use, such as rope_max_seq_len) over the class defaults."""
    head_dim = model.hidden_size // model.num_heads
    shape = dict(patch_size=list(model.patch_size), num_attention_heads=model.num_heads,
                 attention_head_dim=head_dim, in_channels=latent_channels, out_channels=latent_channels,
                 num_layers=model.depth)
    if kind == "wan":
        ffn_dim = round(model.hidden_size * model.mlp_ratio)
        ours = dict(shape, text_dim=text_dim, freq_dim=FREQUENCY_DIM, ffn_dim=ffn_dim,
                    cross_attn_norm=model.cross_attention_norm, eps=LAYER_NORM_EPS, image_dim=None,
                    added_kv_proj_dim=None, pos_embed_seq_len=None,
                    qk_norm=base.get("qk_norm", "rms_norm_across_heads"))  # no effect in diffusers 0.42.1
    else:
        ours = dict(shape, num_cross_attention_heads=model.num_heads, cross_attention_head_dim=head_dim,
                    cross_attention_dim=model.hidden_size, caption_channels=text_dim, mlp_ratio=model.mlp_ratio,
                    attention_bias=model.qkv_bias, norm_elementwise_affine=False, norm_eps=LAYER_NORM_EPS,
                    guidance_embeds=False, qk_norm="rms_norm_across_heads" if model.qk_norm != "none" else None)
    if base.get("out_channels", 0) is None:
        ours["out_channels"] = None
    config = {"_class_name": CLASSES[kind], "_diffusers_version": base.get("_diffusers_version", DIFFUSERS_VERSION)}
    return {**config, **DEFAULTS[kind], **{k: v for k, v in base.items() if not k.startswith("_")}, **ours}


def reel_config(kind: str, model: ModelConfig, latent_channels: int, text_dim: int):
    """The full config a converted DiT folder keeps: the model, placeholders naming the latent space and the
    text encoder the source was trained with (reel cannot load either), and the source's native clip."""
    cfg = OmegaConf.structured(ReelConfig)
    cfg.model = OmegaConf.structured(model)
    name, spatial_factor = LATENT_SPACES.get(latent_channels, LATENT_SPACES[16])
    cfg.autoencoder = OmegaConf.structured(AutoencoderConfig(
        name=name, kind="diffusers", checkpoint=None, spatial_factor=spatial_factor, temporal_factor=4,
        latent_channels=latent_channels))
    encoder, max_length = TEXT_ENCODERS[kind]
    cfg.text_encoder = OmegaConf.structured(TextEncoderConfig(name=encoder, path=None, max_length=max_length,
                                                              dim=text_dim))
    for key, value in CLIP.items():
        cfg.data[key] = value
    return validate_config(cfg)


# --- reading and writing folders

def read_diffusers_folder(path: Path) -> Tuple[dict, Dict[str, torch.Tensor]]:
    """(config.json, every tensor) of a diffusers model folder, one safetensors file or shards with an index."""
    if not path.is_dir():
        raise ReelError(f"src {path}: no such folder")
    config_path = path / CONFIG_FILE
    if not config_path.is_file():
        raise ReelError(f"src {path}: {CONFIG_FILE} is missing (a diffusers model folder holds {CONFIG_FILE} "
                        f"and {WEIGHTS_FILE})")
    try:
        config = json.loads(config_path.read_text())
    except ValueError as exc:
        raise ReelError(f"{config_path}: not valid JSON ({exc})") from None
    if not (path / WEIGHTS_FILE).is_file() and not (path / INDEX_FILE).is_file():
        raise ReelError(f"src {path}: neither {WEIGHTS_FILE} nor {INDEX_FILE} is there")
    tensors = load_weights(path, weights_file=WEIGHTS_FILE)
    return config, tensors


def to_reel_state(kind: str, model: ModelConfig, expected: Dict[str, torch.Tensor],
                  tensors: Dict[str, torch.Tensor], where: str) -> Dict[str, torch.Tensor]:
    """The reel state dict made of every source tensor; `expected` gives the reel names and shapes."""
    state, used = {}, set()
    for rule in RULES[kind](model):
        for name in rule.sources:
            if name not in tensors:
                raise ReelError(f"{where}: diffusers tensor {name} is missing (reel's {rule.target} is made of it)")
        tensor = LAYOUTS[rule.layout][0]([tensors[name] for name in rule.sources])
        if rule.target not in expected:  # a rule for a parameter the config does not build: a bug here
            raise ValueError(f"no reel parameter {rule.target} for {rule.sources}")
        if tuple(tensor.shape) != tuple(expected[rule.target].shape):
            raise ReelError(f"{where}: diffusers tensor {rule.sources[0]} has shape "
                            f"{list(tensors[rule.sources[0]].shape)}, which does not make reel's {rule.target} "
                            f"{list(expected[rule.target].shape)} (does config.json match the weights?)")
        state[rule.target] = tensor
        used.update(rule.sources)
    leftover = sorted(set(tensors) - used)
    if leftover:
        raise ReelError(f"{where}: diffusers tensor {leftover[0]} maps onto nothing in reel's DiT "
                        f"({len(leftover)} such tensor{'s' if len(leftover) > 1 else ''})")
    unfilled = sorted(set(expected) - set(state))
    if unfilled:  # every parameter the config builds has a rule: a bug here
        raise ValueError(f"reel parameter {unfilled[0]} has no diffusers source")
    return state


def to_diffusers_state(kind: str, model: ModelConfig, state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    tensors = {}
    rules = RULES[kind](model)
    unmapped = sorted(set(state) - {rule.target for rule in rules})
    if unmapped:
        raise ReelError(f"reel parameter {unmapped[0]} has no place in diffusers {CLASSES[kind]}")
    for rule in rules:
        parts = LAYOUTS[rule.layout][1](state[rule.target], len(rule.sources))
        tensors.update(zip(rule.sources, parts))
    return tensors


def _single_dtype(tensors: Dict[str, torch.Tensor]) -> torch.dtype:
    dtypes = {t.dtype for t in tensors.values() if t.is_floating_point()}
    return dtypes.pop() if len(dtypes) == 1 else torch.float32


def convert_from_diffusers(kind: str, src_dir: Union[str, Path], out_dir: Union[str, Path],
                           vae: Optional[Union[str, Path]] = None,
                           text_encoder: Optional[Union[str, Path]] = None) -> Path:
    """A diffusers SanaVideoTransformer3DModel (`sana_video`) or WanTransformer3DModel (`wan`) folder -> a reel
    DiT folder (model.safetensors + config.yaml) that `load_dit` reads. Weights keep their dtype. `vae` (a
    diffusers autoencoder folder) and `text_encoder` (a local transformers encoder folder) are recorded in its
    config.yaml after their latent channels and embedding width are checked, so `reel sample` can use it."""
    if kind not in CLASSES:
        raise ReelError(f"kind={kind}: must be one of {', '.join(CLASSES)}")
    src = Path(src_dir)
    config, tensors = read_diffusers_folder(src)
    where = str(src / CONFIG_FILE)
    class_name = config.get("_class_name", CLASSES[kind])
    _require(where, "_class_name", class_name, class_name == CLASSES[kind], f"kind={kind} reads {CLASSES[kind]}")
    source = {**DEFAULTS[kind], **{k: v for k, v in config.items() if not k.startswith("_")}}
    model_cfg, latent_channels, text_dim = MODEL_CONFIGS[kind](source, where)
    with torch.device("meta"):
        model = build_dit(model_cfg, latent_channels, text_dim)
    state = to_reel_state(kind, model_cfg, model.state_dict(), tensors, str(src))
    model.load_state_dict(state, assign=True)
    extra = {"converted_from": "diffusers", "diffusers_class": CLASSES[kind], "source": str(src),
             "diffusers_config": config}
    cfg = reel_config(kind, model_cfg, latent_channels, text_dim)
    if vae is not None:
        attach_autoencoder(cfg, vae, latent_channels)
    if text_encoder is not None:
        attach_text_encoder(cfg, text_encoder, text_dim)
    return save_dit(model, out_dir, cfg, dtype=_single_dtype(tensors), extra_info=extra)


def attach_autoencoder(cfg, path: Union[str, Path], latent_channels: int) -> None:
    """Point cfg.autoencoder at the autoencoder folder `path`, whose latents must have the DiT's channels."""
    from reel.autoencoders import load_autoencoder

    autoencoder = load_autoencoder(str(path))
    if autoencoder.latent_channels != latent_channels:
        raise ReelError(f"vae={path}: gives {autoencoder.latent_channels} latent channels, the transformer takes "
                        f"{latent_channels}")
    cfg.autoencoder.checkpoint = str(path)
    cfg.autoencoder.spatial_factor = int(autoencoder.spatial_factor)
    cfg.autoencoder.temporal_factor = int(autoencoder.temporal_factor)


def attach_text_encoder(cfg, path: Union[str, Path], text_dim: int) -> None:
    """Point cfg.text_encoder at the local transformers folder `path`, whose width must be the DiT's."""
    from reel.models.text_encoder import TextEncoder

    encoder = TextEncoder(path=str(path), max_length=int(cfg.text_encoder.max_length))
    if encoder.dim != text_dim:
        raise ReelError(f"text_encoder={path}: gives {encoder.dim}-d embeddings, the transformer takes "
                        f"{text_dim}-d")
    cfg.text_encoder.path, cfg.text_encoder.name, cfg.text_encoder.dim = str(path), Path(path).name, text_dim


def convert_to_diffusers(reel_dir: Union[str, Path], out_dir: Union[str, Path]) -> Path:
    """A reel DiT folder whose model config maps onto SanaVideoTransformer3DModel or WanTransformer3DModel ->
    a diffusers folder (config.json + diffusion_pytorch_model.safetensors) that `from_pretrained` loads.
    Weights keep their dtype; converting a converted folder back gives the source tensors exactly."""
    model, cfg = load_dit(reel_dir, dtype=None)
    model_cfg = as_model_config(cfg.model)
    kind = diffusers_kind(model_cfg, f"checkpoint {reel_dir}")
    extra = read_dit_extra_info(reel_dir)
    base = extra.get("diffusers_config") or {}
    if base.get("_class_name") not in (None, CLASSES[kind]):
        base = {}
    config = diffusers_config(kind, model_cfg, model.latent_channels, model.text_dim, base)
    tensors = to_diffusers_state(kind, model_cfg, model.state_dict())
    with atomic_folder(out_dir) as tmp:
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return Path(out_dir)
