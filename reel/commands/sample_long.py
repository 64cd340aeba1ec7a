"""`reel sample long=true`: one long video from a block-causal DiT, written to its mp4 as chunks are decoded."""
from __future__ import annotations

import json
import resource
import time
from pathlib import Path

import numpy as np

from reel.errors import ReelError

SHEET_FRAMES = 8


def read_segments(args, num_frames: int) -> list:
    """prompt= covers num_frames; prompts=FILE.jsonl lists {"prompt", "frames"} segments of one video."""
    from reel.sample.long_video import Segment

    if args.prompt is not None and args.prompts is not None:
        raise ReelError("reel sample: prompt= and prompts= are both given; use one")
    if args.prompt is not None:
        if not str(args.prompt).strip():
            raise ReelError("prompt='': the prompt is empty")
        return [Segment(str(args.prompt).strip(), int(num_frames))]
    if args.prompts is None:
        raise ReelError("reel sample long=true: give prompt=TEXT (with num_frames=) or prompts=FILE.jsonl of "
                        "{\"prompt\": ..., \"frames\": n} segments")
    path = Path(args.prompts)
    if path.suffix != ".jsonl" or not path.is_file():
        raise ReelError(f"prompts={path}: long=true reads a .jsonl file of {{\"prompt\", \"frames\"}} segments")
    segments = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ReelError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
        frames = row.get("frames") if isinstance(row, dict) else None
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str) or not row["prompt"].strip() \
                or isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
            raise ReelError(f"{path}:{number}: each segment needs a non-empty \"prompt\" and a positive integer "
                            f"\"frames\"")
        segments.append(Segment(row["prompt"].strip(), frames))
    if not segments:
        raise ReelError(f"{path}: the file holds no segments")
    return segments


def sample_long(cfg, args, checkpoint: str, checkpoint_cfg, chosen: dict) -> int:
    from tqdm import tqdm

    from reel.data.contact_sheet import write_contact_sheet
    from reel.data.video_io import VideoWriter
    from reel.distributed import default_device
    from reel.sample.long_video import check_segments
    from reel.sample.pipeline import TextToVideoPipeline, check_opening, sample_settings
    from reel.sample.precision import check_precision, sampling_precision

    if cfg.distributed.sp_size > 1:
        raise ReelError("long=true generates chunk by chunk on one process; leave distributed.sp_size at 1")
    if checkpoint_cfg.model.get("causal_chunk") is None:
        raise ReelError(f"long=true needs a block-causal DiT (trained with model.causal_chunk set); {checkpoint} "
                        f"attends over the whole clip")
    check_precision(cfg.sample.precision)
    num_frames = cfg.sample.num_frames or checkpoint_cfg.data.num_frames
    segments = read_segments(args, num_frames)
    total = check_segments(segments, int(checkpoint_cfg.autoencoder.temporal_factor))
    settings = sample_settings(checkpoint_cfg, num_frames=total, **chosen)
    opening = settings.opening if not args.image else None
    if opening is not None:  # before any model loads
        check_opening(opening, cfg.sample.autoencoder or checkpoint_cfg.autoencoder.checkpoint)
    pipeline = TextToVideoPipeline.from_checkpoint(checkpoint, default_device(0), cfg.sample.autoencoder)
    generator = pipeline.long_video(int(cfg.sample.long_window), int(cfg.sample.long_sink),
                                    str(cfg.sample.long_positions))
    image = pipeline.image_latent(args.image, settings) if args.image else None

    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = "000000.mp4"
    keep = set(np.linspace(0, total - 1, num=min(SHEET_FRAMES, total)).round().astype(int).tolist())
    sheet, seen = [], 0
    start = time.perf_counter()
    first_chunk = (start, 0)  # (when, frames) the first decoded chunk came out
    show = bool(cfg.logging.progress)
    with sampling_precision(cfg.sample.precision, pipeline.device), \
            VideoWriter(out_dir / name, pipeline.fps) as writer, \
            tqdm(total=total, desc="long video", unit="frame", disable=not show) as bar:
        if opening is not None:  # part of the first chunk's time
            image = pipeline.opening_latent(opening, segments[0].prompt, int(cfg.sample.seed), settings.height,
                                            settings.width)
        for frames in generator.frames(segments, int(cfg.sample.seed), settings.height, settings.width,
                                       settings.steps, settings.guidance, settings.shift, settings.solver,
                                       settings.negative_prompt, image_latent=image,
                                       first_chunk_guidance=settings.first_chunk_guidance):
            if not seen:  # the first chunk carries the warm-up (first text encoding, first kernels)
                first_chunk = (time.perf_counter(), len(frames))
            writer.write(frames)
            sheet.extend(frames[i - seen] for i in range(seen, seen + len(frames)) if i in keep)
            seen += len(frames)
            bar.update(len(frames))
    end = time.perf_counter()
    seconds = end - start
    # the steady rate, from the first chunk's frames to the end (a 1-chunk video has none: its own rate)
    after = total - first_chunk[1]
    steady = (end - first_chunk[0]) / after if after else seconds / total
    row = {"prompt": segments[0].prompt, "segments": [{"prompt": s.prompt, "frames": s.frames} for s in segments],
           "seed": int(cfg.sample.seed), "path": name, "steps": settings.steps, "guidance": settings.guidance,
           "first_chunk_guidance": settings.first_chunk_guidance,
           "solver": settings.solver, "shift": settings.shift, "negative_prompt": settings.negative_prompt,
           "num_frames": total, "height": settings.height, "width": settings.width, "long": True,
           "chunk_frames": int(checkpoint_cfg.data.num_frames), "long_window": int(cfg.sample.long_window),
           "long_sink": int(cfg.sample.long_sink), "long_positions": str(cfg.sample.long_positions),
           "image": args.image, "opening": opening, "precision": cfg.sample.precision,
           "seconds": round(seconds, 4),
           "seconds_per_frame": round(seconds / total, 5), "steady_seconds_per_frame": round(steady, 5),
           "checkpoint": checkpoint, "autoencoder": str(pipeline.cfg.autoencoder.checkpoint)}
    (out_dir / "manifest.jsonl").write_text(json.dumps(row) + "\n")
    write_contact_sheet(out_dir / "contact_sheet.png", [np.stack(sheet)], [segments[0].prompt],
                        max_frames=SHEET_FRAMES)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"out_dir": str(out_dir), "video": str(out_dir / name), "frames": total,
                      "seconds_per_frame": row["seconds_per_frame"],
                      "steady_seconds_per_frame": row["steady_seconds_per_frame"], "peak_rss_mb": round(peak_mb, 1),
                      "checkpoint": checkpoint}))
    return 0
