"""`reel sample`: prompts -> one mp4 each, manifest.jsonl and a contact sheet, from a DiT checkpoint folder."""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from reel.commands import Command
from reel.errors import ReelError

CONTACT_SHEET = "contact_sheet.png"
MANIFEST = "manifest.jsonl"
SHEET_FRAMES = 8  # frames per clip kept for the contact sheet, so long runs do not hold every video


@dataclass
class SampleArgs:
    checkpoint: Optional[str] = None  # a DiT folder (RUN_DIR/dit of reel train dit); default: the bundled demo
    prompt: Optional[str] = None
    prompts: Optional[str] = None  # .txt, one prompt a line, or .jsonl: {"prompt", "seed"?, "num_frames"?} a line
    out_dir: str = "samples"
    batch_size: int = 8  # prompts handed to the pipeline at a time
    lora: Optional[str] = None  # a LoRA folder applied unmerged on top of checkpoint= (default: its own base)
    lora_scale: float = 1.0
    long: bool = False  # one long video chunk by chunk (a block-causal DiT); prompts= then lists segments
    image: Optional[str] = None  # an image file that becomes the first frame (image-to-video)
    # also write the denoised latents with their text embeddings as a data=latents folder (e.g. to distil a
    # lighter decoder on what this DiT samples: reel train ae train.ae.decoder_teacher=...)
    latents_dir: Optional[str] = None


@dataclass(frozen=True)
class Request:
    index: int
    prompt: str
    seed: int
    num_frames: Optional[int]  # None: sample.num_frames, else the checkpoint's
    where: str  # names the prompt's source in error messages


def read_requests(args: SampleArgs, base_seed: int) -> list[Request]:
    """The prompts to sample, in order; a prompt without its own seed gets base_seed + its index."""
    if args.prompt is None and args.prompts is None:
        raise ReelError("reel sample: give prompt=TEXT or prompts=FILE (.txt, one prompt a line, or .jsonl with "
                        "prompt, seed, num_frames)")
    if args.prompt is not None and args.prompts is not None:
        raise ReelError("reel sample: prompt= and prompts= are both given; use one")
    if args.prompt is not None:
        if not str(args.prompt).strip():
            raise ReelError("prompt='': the prompt is empty")
        return [Request(0, str(args.prompt), base_seed, None, "prompt=")]
    path = Path(args.prompts)
    if not path.is_file():
        raise ReelError(f"prompts={path}: no such file")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ReelError(f"prompts={path}: cannot read the file ({exc})") from None
    rows = _jsonl_rows(path, lines) if path.suffix == ".jsonl" else _text_rows(path, lines)
    if not rows:
        raise ReelError(f"prompts={path}: the file holds no prompts")
    return [Request(index, prompt, base_seed + index if seed is None else seed, num_frames, where)
            for index, (prompt, seed, num_frames, where) in enumerate(rows)]


def _text_rows(path: Path, lines: list[str]) -> list[tuple]:
    return [(line.strip(), None, None, f"{path}:{number}")
            for number, line in enumerate(lines, start=1) if line.strip()]


def _jsonl_rows(path: Path, lines: list[str]) -> list[tuple]:
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ReelError(f"{where}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
            raise ReelError(f"{where}: each line needs a non-empty \"prompt\" string")
        for key in ("seed", "num_frames"):
            value = row.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ReelError(f"{where}: {key}={json.dumps(value)} must be an integer")
        rows.append((row["prompt"].strip(), row.get("seed"), row.get("num_frames"), where))
    return rows


def _batches(requests: list[Request], batch_size: int) -> list[list[Request]]:
    """Requests that share a clip length, batch_size at a time, in order of first appearance."""
    groups: dict[Optional[int], list[Request]] = {}
    for request in requests:
        groups.setdefault(request.num_frames, []).append(request)
    return [group[start:start + batch_size] for group in groups.values()
            for start in range(0, len(group), batch_size)]


def _write_manifest(path: Path, rows: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(row) + "\n" for row in rows))
    os.replace(tmp, path)


def sample_command(cfg, args: SampleArgs) -> int:
    from tqdm import tqdm

    from reel.data.contact_sheet import write_contact_sheet
    from reel.data.video_io import write_video
    from reel.distributed import default_device, init_distributed
    from reel.models.dit_checkpoint import read_dit_config
    from reel.parallel.groups import build_parallel_groups
    from reel.sample.pipeline import (NO_OPENING, TextToVideoPipeline, check_opening, resolve_checkpoint,
                                      rolls_out, sample_settings)
    from reel.sample.precision import check_precision

    if args.batch_size < 1:
        raise ReelError(f"batch_size={args.batch_size}: must be at least 1")
    if args.image is not None and not Path(args.image).is_file():
        raise ReelError(f"image={args.image}: no such file")
    check_precision(cfg.sample.precision)
    requests = None if args.long else read_requests(args, cfg.sample.seed)
    base = args.checkpoint
    if args.lora and base is None:
        from reel.models.lora_checkpoint import read_lora

        base = read_lora(args.lora)[1].base  # the DiT folder the adapters were trained on
    checkpoint = resolve_checkpoint(base)
    checkpoint_cfg = read_dit_config(checkpoint)
    # sample.* settings left null (steps, guidance, solver, shift, frames, size) are the checkpoint's own
    chosen = dict(height=cfg.sample.height, width=cfg.sample.width, steps=cfg.sample.steps,
                  guidance=cfg.sample.guidance, solver=cfg.sample.solver, shift=cfg.sample.shift,
                  negative_prompt=cfg.sample.negative_prompt, first_chunk_guidance=cfg.sample.first_chunk_guidance,
                  opening=cfg.sample.opening)
    if args.long:
        from reel.commands.sample_long import sample_long

        if args.lora:
            raise ReelError("lora= with long=true: merge the adapters first (reel export merge_lora=true)")
        return sample_long(cfg, args, checkpoint, checkpoint_cfg, chosen)
    settings = {}  # a prompt's own num_frames (or None) -> its checked settings, before any model loads
    for request in requests:
        if request.num_frames not in settings:
            num_frames = cfg.sample.num_frames if request.num_frames is None else request.num_frames
            try:
                settings[request.num_frames] = sample_settings(checkpoint_cfg, num_frames=num_frames, **chosen)
            except ReelError as exc:
                raise ReelError(f"{request.where}: {exc}" if request.num_frames is not None else str(exc)) from None
    ranks = init_distributed(cfg.distributed.sp_size, cfg.distributed.backend)
    if ranks.dp_size > 1:
        raise ReelError(f"distributed.sp_size={ranks.sp_size}: sampling splits each video over every process; "
                        f"set distributed.sp_size={ranks.world_size}")
    rollout = rolls_out(checkpoint_cfg, cfg.sample.rollout)
    if rollout and ranks.sp_size > 1:
        raise ReelError(f"distributed.sp_size={ranks.sp_size}: {checkpoint} is block-causal and generates chunk by "
                        f"chunk on one process; set sample.rollout=false to denoise all chunks together, split "
                        f"over the processes")
    if args.latents_dir and len(settings) > 1:
        raise ReelError(f"latents_dir={args.latents_dir}: a latents folder holds one clip size; the prompts ask "
                        f"for {len(settings)} frame counts")
    if args.latents_dir and rollout:
        raise ReelError(f"latents_dir={args.latents_dir}: {checkpoint} generates chunk by chunk and keeps no clip's "
                        f"latents; set sample.rollout=false")
    openings = {s.opening for s in settings.values()} - {None} if rollout and not args.image else set()
    for opening in openings:  # before any model loads
        check_opening(opening, cfg.sample.autoencoder or checkpoint_cfg.autoencoder.checkpoint)
    pipeline = TextToVideoPipeline.from_checkpoint(checkpoint, default_device(ranks.local_rank),
                                                   cfg.sample.autoencoder)
    if args.lora:
        from reel.models.lora_checkpoint import apply_lora

        apply_lora(pipeline.model, args.lora, args.lora_scale)
    if ranks.sp_size > 1:
        pipeline.split_sequence(build_parallel_groups(ranks))
    main = ranks.is_main  # every rank denoises its slice of each video; rank 0 writes

    out_dir = Path(args.out_dir)
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
    rows, sheet_clips = {}, {}
    latents = None
    if args.latents_dir and main:
        latents = _LatentsFolder(args.latents_dir, pipeline, checkpoint_cfg, next(iter(settings.values())))
    with tqdm(total=len(requests), desc="sample", unit="video", disable=not (cfg.logging.progress and main)) as bar:
        for batch in _batches(requests, args.batch_size):
            s = settings[batch[0].num_frames]
            start = time.perf_counter()
            kept = [] if latents is not None else None
            videos = pipeline.generate([r.prompt for r in batch], [r.seed for r in batch], s.num_frames, s.height,
                                       s.width, s.steps, s.guidance, s.solver, s.shift, s.negative_prompt,
                                       progress=False, image=args.image, rollout=rollout,
                                       precision=cfg.sample.precision, latents_out=kept,
                                       first_chunk_guidance=s.first_chunk_guidance,
                                       opening=s.opening or NO_OPENING)
            seconds = (time.perf_counter() - start) / len(batch)
            if latents is not None:
                latents.add(batch, kept)
            for request, video in zip(batch, videos):
                name = f"{request.index:06d}.mp4"
                if main:
                    write_video(out_dir / name, video, pipeline.fps)
                rows[request.index] = {
                    "prompt": request.prompt, "seed": request.seed, "path": name, "steps": s.steps,
                    "guidance": s.guidance, "solver": s.solver, "shift": s.shift,
                    "negative_prompt": s.negative_prompt, "num_frames": s.num_frames, "height": s.height,
                    "width": s.width, "rollout": rollout, "precision": cfg.sample.precision,
                    "first_chunk_guidance": s.first_chunk_guidance if rollout else None,
                    "opening": s.opening if rollout and not args.image else None,
                    "seconds": round(seconds, 4), "checkpoint": checkpoint,
                    "autoencoder": str(pipeline.cfg.autoencoder.checkpoint)}
                if args.image:
                    rows[request.index]["image"] = args.image
                keep = np.linspace(0, len(video) - 1, num=min(SHEET_FRAMES, len(video))).round().astype(int)
                sheet_clips[request.index] = video[keep]
            bar.update(len(batch))

    if not main:
        return 0
    if latents is not None:
        latents.close()
    order = sorted(rows)
    manifest = out_dir / MANIFEST
    _write_manifest(manifest, [rows[i] for i in order])
    sheet = write_contact_sheet(out_dir / CONTACT_SHEET, [sheet_clips[i] for i in order],
                                [rows[i]["prompt"] for i in order], max_frames=SHEET_FRAMES)
    total = sum(row["seconds"] for row in rows.values())
    print(json.dumps({"out_dir": str(out_dir), "videos": len(rows), "manifest": str(manifest),
                      "contact_sheet": str(sheet), "checkpoint": checkpoint,
                      "seconds_per_video": round(total / len(rows), 4)}))
    return 0


class _LatentsFolder:
    """reel sample latents_dir=: each clip's denoised latents and its prompt's text embedding, in the shards
    `reel data encode` writes (a data=latents folder in the latent space the DiT was trained in)."""

    def __init__(self, out_dir: str, pipeline, checkpoint_cfg, s):
        from reel.autoencoders.checkpoint import autoencoder_identity
        from reel.data.latent_shards import LatentShardWriter

        self.pipeline, self.writer = pipeline, LatentShardWriter(out_dir)
        autoencoder = str(checkpoint_cfg.autoencoder.checkpoint)  # the DiT's own: its latent space
        text = pipeline.text_encoder
        self.info = {"autoencoder": autoencoder, "autoencoder_identity": autoencoder_identity(autoencoder),
                     "text_encoder_identity": text.identity, "sampled_by": pipeline.checkpoint,
                     "clip_size": [s.height, s.width, s.num_frames],
                     "latent_shape": list(pipeline.autoencoder.latent_shape(s.num_frames, s.height, s.width)),
                     "text_shape": [text.max_length, text.dim], "steps": s.steps, "guidance": s.guidance,
                     "solver": s.solver, "shift": s.shift}

    def add(self, batch: list, latents: list) -> None:
        texts = [self.pipeline.text_embedding(r.prompt) for r in batch]
        self.writer.add(torch.stack(latents), torch.cat([t.embeddings for t in texts]).cpu(),
                        torch.cat([t.mask for t in texts]).cpu(),
                        [{"caption": r.prompt, "seed": r.seed} for r in batch])

    def close(self) -> None:
        self.writer.close(self.info)


COMMANDS = [
    Command(("sample",), "sample videos from prompts", sample_command, SampleArgs,
            aliases={"num_frames": "sample.num_frames", "height": "sample.height", "width": "sample.width",
                     "steps": "sample.steps", "guidance": "sample.guidance", "seed": "sample.seed",
                     "solver": "sample.solver"},
            doc="Example: reel sample checkpoint=runs/shapes-64/dit prompt='a red square moving up' steps=20\n"
                "prompts=FILE: a .txt (one prompt a line) or a .jsonl ({\"prompt\", \"seed\", \"num_frames\"} a "
                "line); a prompt without its own seed gets seed + its index.\n"
                "Writes OUT_DIR/000000.mp4 ..., OUT_DIR/manifest.jsonl (what `reel eval world manifest=OUT_DIR` "
                "scores) and OUT_DIR/contact_sheet.png.\n"
                "lora=DIR applies a LoRA folder (reel train dit with train.lora.rank, or reel export of one) unmerged "
                "on top of checkpoint= (default: the base it was trained on), scaled by lora_scale.\n"
                "Solvers: euler, dpmpp, unipc; sample.shift and sample.negative_prompt also apply. steps, guidance, "
                "solver, shift, num_frames, height and width left unset come from the checkpoint's config.yaml.\n"
                "long=true: one long video from a block-causal DiT (model.causal_chunk), chunk by chunk, written as it "
                "is decoded; prompts=FILE.jsonl of {\"prompt\", \"frames\"} segments switches prompts (KV recache); "
                "sample.long_window / sample.long_sink set the KV window and attention sink (chunks).\n"
                "image=PATH: the image becomes the first frame (image-to-video), with long=true or without.\n"
                "sample.opening=DIR: chunk-by-chunk generation without image= takes its first frame from the clip "
                "that this whole-clip DiT (the teacher) samples for the first prompt; none turns a stored one off.\n"
                "Sequence-parallel (each video split over the processes, same video as one process): "
                "torchrun --nproc_per_node=2 -m reel.cli sample ... distributed.sp_size=2"),
]
