"""`reel export`: a training checkpoint (any ZeRO stage) -> a model folder that `reel sample`,
`reel info` and `load_dit` / `load_autoencoder` read.

weights=ema takes the EMA copy the trainer keeps in fp32; weights=model consolidates the fp32
master weights from DeepSpeed's ZeRO partitions with DeepSpeed's own zero_to_fp32 (a stage-0
checkpoint holds them whole), and checks them against the module weights the trainer saved. The
export is reloaded and run against the training-time weights before success is reported.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from reel.commands import Command
from reel.errors import ReelError
from reel.models.lora import PREFIX as LORA_PREFIX

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# relative error of the reloaded export's output against the fp32 training weights. An fp32 export holds the
# same bits (checked tensor by tensor); its output may still differ by float rounding, because CPU kernels
# take other vectorised paths for differently aligned memory (seen at 2e-7 on an AVX-512 CPU)
TOLERANCE = {"fp32": 1e-6, "bf16": 5e-2, "fp16": 1e-2}


@dataclass
class ExportArgs:
    checkpoint: Optional[str] = None  # a run directory (its newest good checkpoint) or a checkpoints/step_* folder
    out: Optional[str] = None
    weights: str = "ema"  # ema | model
    dtype: str = "fp32"  # fp32 | bf16 | fp16
    max_shard_mb: float = 2048.0  # larger weights are written as shards with an index
    merge_lora: bool = False  # a LoRA run: fold the adapters into the base (a DiT folder) or export them alone


def consolidated_weights(folder: Path, trainer_state: dict, engine_dir: str) -> dict:
    """The fp32 master weights of a checkpoint, gathered from its ZeRO partitions by DeepSpeed."""
    from safetensors.torch import load_file

    from reel.train.checkpoint import MODEL_FILE

    saved = load_file(str(folder / MODEL_FILE))
    if int(trainer_state.get("zero_stage", 0)) == 0:
        return saved
    from reel.train.deepspeed_engine import import_deepspeed

    import_deepspeed()
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    try:
        state = get_fp32_state_dict_from_zero_checkpoint(str(folder), tag=engine_dir)
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as exc:
        raise ReelError(f"checkpoint {folder}: DeepSpeed could not consolidate its ZeRO partitions ({exc})") from None
    state = {name: tensor.float().contiguous() for name, tensor in state.items()}
    if set(state) != set(saved):
        missing = sorted(set(saved) ^ set(state))[0]
        raise ReelError(f"checkpoint {folder}: the ZeRO partitions and {MODEL_FILE} disagree on {missing}")
    for name, tensor in state.items():
        if not torch.allclose(tensor, saved[name].float(), rtol=0, atol=1e-2 if saved[name].dtype != torch.float32
                              else 0):
            raise ReelError(f"checkpoint {folder}: the ZeRO partitions and {MODEL_FILE} disagree on {name}")
    return state


def model_kind(state: dict) -> str:
    if "patch_embed.weight" in state and "final_table" in state:
        return "dit"
    if any(name.startswith("encoder.") for name in state) and any(name.startswith("decoder.") for name in state):
        return "autoencoder"
    raise ReelError(f"checkpoint holds neither a DiT nor an autoencoder (first tensor: {next(iter(state), None)})")


def build_from_state(kind: str, cfg, state: dict) -> torch.nn.Module:
    if kind == "dit":
        from reel.models.dit import build_dit

        model = build_dit(cfg.model, state["patch_embed.weight"].shape[1], state["text_proj.0.weight"].shape[1])
    else:
        from reel.autoencoders import build_autoencoder

        model = build_autoencoder(cfg.autoencoder)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        name = (missing or unexpected)[0]
        raise ReelError(f"checkpoint weights do not match its config.yaml: {name} is "
                        f"{'missing' if missing else 'not in the model'}")
    return model.float().eval()


@torch.no_grad()
def output_difference(kind: str, source: torch.nn.Module, exported: torch.nn.Module) -> float:
    """max |exported - source| / max |source| on a fixed random input."""
    g = torch.Generator().manual_seed(0)
    if kind == "dit":
        channels, text_dim = source.latent_channels, source.text_dim
        frames = 2 * (source.causal_chunk or 1) * source.patch_size[0]
        latents = torch.randn(1, channels, frames, 4 * source.patch_size[1], 4 * source.patch_size[2], generator=g)
        args = (latents, torch.tensor([0.7]), torch.randn(1, 6, text_dim, generator=g))
        a, b = source(*args), exported(*args)
    else:
        size = 2 * source.spatial_factor
        video = torch.rand(1, 3, 1 + source.temporal_factor, size, size, generator=g) * 2 - 1
        a, b = source.decode(source.encode(video)), exported.decode(exported.encode(video))
    return float((a.float() - b.float()).abs().max() / a.abs().max().clamp(min=1e-12))


def training_readme(kind: str, ckpt, args: ExportArgs, difference: float) -> str:
    state, cfg = ckpt.trainer_state, ckpt.config
    log = ckpt.path.parent.parent / "log.jsonl"
    last = None
    if log.is_file():
        rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip().endswith("}")]
        last = next((r for r in reversed(rows) if r.get("step", 0) <= ckpt.step and r.get("loss") is not None), None)
    name = cfg.autoencoder.name if kind == "autoencoder" else cfg.model.name
    lines = [f"# {name} ({kind}), exported by reel", "",
             f"- weights: {args.weights}, stored as {args.dtype}",
             f"- from: {ckpt.path}",
             f"- training step: {ckpt.step}; samples seen: {state.get('counters', {}).get('samples_seen')}",
             f"- data: {cfg.data.name}, clips {cfg.data.height}x{cfg.data.width}x{cfg.data.num_frames}",
             f"- run: {state.get('world_size')} processes, ZeRO stage {state.get('zero_stage')}, "
             f"precision {state.get('precision')}, batch {state.get('batch_size')} x accumulation "
             f"{state.get('grad_accum')}",
             f"- last logged loss: {last['loss']:.5f} at step {last['step']}" if last else "- last logged loss: n/a",
             f"- check: the reloaded export's output differs from the training weights' by {difference:.2e} "
             f"(relative, max)"]
    if kind != "autoencoder":
        use = "lora=THIS_FOLDER" if kind == "lora" else "checkpoint=THIS_FOLDER"
        lines.append(f"- latent space: {cfg.autoencoder.name} ({cfg.autoencoder.checkpoint}); "
                     f"sample with `reel sample {use} prompt=...`")
    return "\n".join(lines) + "\n"


def export_command(cfg, args: ExportArgs) -> int:
    from reel.train.checkpoint import ENGINE_DIR, load_training_checkpoint

    if not args.checkpoint or not args.out:
        raise ReelError("reel export needs checkpoint=RUN_DIR (or a checkpoints/step_* folder) and out=DIR")
    if args.weights not in ("ema", "model"):
        raise ReelError(f"weights={args.weights}: must be ema or model")
    if args.dtype not in DTYPES:
        raise ReelError(f"dtype={args.dtype}: must be one of {', '.join(DTYPES)}")
    if Path(args.checkpoint).resolve() == Path(args.out).resolve():
        raise ReelError(f"out={args.out}: must differ from the checkpoint folder")
    ckpt = load_training_checkpoint(args.checkpoint)
    state = ckpt.ema if args.weights == "ema" else consolidated_weights(ckpt.path, ckpt.trainer_state, ENGINE_DIR)
    dtype, max_shard = DTYPES[args.dtype], int(args.max_shard_mb * 2**20)
    extra = {"steps": ckpt.step, "data": ckpt.config.data.name, "weights": args.weights, "exported_from": str(ckpt.path)}
    out = Path(args.out)
    tolerance = TOLERANCE[args.dtype]
    if state and all(name.startswith(LORA_PREFIX) for name in state):  # a LoRA run: adapters on train.init_from
        kind, source = "dit", with_adapters(ckpt, state)
        if args.merge_lora:
            from reel.models.lora import merged_state_dict
            from reel.models.dit_checkpoint import save_dit

            # W + scale B A in fp32 rounds differently from W x + scale B (A x)
            tolerance = max(tolerance, 1e-5)
            save_dit(build_from_state("dit", ckpt.config, merged_state_dict(source)), out, ckpt.config, dtype,
                     {**extra, "merged_lora": True}, max_shard)
        else:
            from reel.models.lora_checkpoint import save_lora

            kind = "lora"
            save_lora(source, out, ckpt.config.train.init_from, extra)
    else:
        kind = model_kind(state)
        source = build_from_state(kind, ckpt.config, state)
        if kind == "dit":
            from reel.models.dit_checkpoint import save_dit

            save_dit(source, out, ckpt.config, dtype, extra, max_shard)
        else:
            from reel.autoencoders import save_autoencoder

            save_autoencoder(source, out, ckpt.config.autoencoder, dtype, extra, max_shard)
    reloaded = _reload(kind, out)
    if args.dtype == "fp32" and not (kind == "dit" and args.merge_lora):
        theirs = reloaded.state_dict()
        changed = next((name for name, t in source.state_dict().items()
                        if name in theirs and not torch.equal(t.float(), theirs[name].float())), None)
        if changed is not None:
            shutil.rmtree(out, ignore_errors=True)
            raise ReelError(f"out={args.out}: the reloaded fp32 export's {changed} differs from the training weights; "
                            "nothing was kept")
    difference = output_difference("autoencoder" if kind == "autoencoder" else "dit", source, reloaded)
    if difference > tolerance:
        shutil.rmtree(out, ignore_errors=True)
        raise ReelError(f"out={args.out}: the reloaded export differs from the training weights by {difference:.2e} "
                        f"(allowed for {args.dtype}: {tolerance}); nothing was kept")
    readme = out / "README.md.tmp"
    readme.write_text(training_readme(kind, ckpt, args, difference))
    os.replace(readme, out / "README.md")
    files = sorted(p.name for p in Path(args.out).iterdir())
    print(json.dumps({"out": args.out, "kind": kind, "step": ckpt.step, "weights": args.weights, "dtype": args.dtype,
                      "params": sum(t.numel() for t in source.state_dict().values()),
                      "output_difference": difference, "files": files}))
    return 0


def with_adapters(ckpt, adapters: dict) -> torch.nn.Module:
    """The base DiT of a LoRA run (train.init_from) with the checkpoint's adapters attached, unmerged."""
    from reel.models.dit_checkpoint import load_dit
    from reel.models.lora import add_lora

    base = ckpt.config.train.get("init_from")
    if not base:
        raise ReelError(f"checkpoint {ckpt.path}: holds LoRA adapters but its config names no train.init_from base")
    model, _ = load_dit(base)
    lora = ckpt.config.train.lora
    add_lora(model, int(lora.rank), lora.alpha, list(lora.targets), freeze_base=False)
    model.load_state_dict({**model.state_dict(), **adapters})
    return model.eval()


def _reload(kind: str, path: str) -> torch.nn.Module:
    if kind == "lora":
        from reel.models.dit_checkpoint import load_dit
        from reel.models.lora_checkpoint import apply_lora, read_lora

        return apply_lora(load_dit(read_lora(path)[1].base)[0], path)
    if kind == "dit":
        from reel.models.dit_checkpoint import load_dit

        return load_dit(path)[0]
    from reel.autoencoders import load_autoencoder

    return load_autoencoder(path)


COMMANDS = [
    Command(("export",), "export a training checkpoint to a model folder (safetensors + config.yaml + README)",
            export_command, ExportArgs,
            doc="Example: reel export checkpoint=runs/shapes-64 out=exports/shapes-64 weights=ema dtype=bf16\n"
                "checkpoint= a run directory (its newest undamaged checkpoint) or one checkpoints/step_* folder. "
                "weights=model consolidates the ZeRO partitions with DeepSpeed's zero_to_fp32. Weights above "
                "max_shard_mb are sharded with an index json. The export is reloaded and checked against the "
                "training weights (fp32 exact) before success is reported; `reel sample checkpoint=OUT` loads "
                "a DiT export. A LoRA run exports its adapters (a LoRA folder: reel sample lora=OUT) or, with "
                "merge_lora=true, its base DiT with the adapters folded in."),
]
