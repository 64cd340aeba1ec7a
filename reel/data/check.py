"""Iterate a dataset exactly as training will (buckets, batches, skips) and report what came out."""
from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Optional

from omegaconf import DictConfig
from tqdm import tqdm

from reel.data.build import build_dataset, build_loader
from reel.data.folder import BadClipCounter
from reel.data.video_io import to_uint8
from reel.tracking import Tracker


def check_dataset(cfg: DictConfig, max_batches: Optional[int] = None, contact_sheet: Optional[str] = None,
                  sheet_clips: int = 8) -> dict:
    dataset = build_dataset(cfg.data, seed=cfg.seed)
    loader = build_loader(dataset, cfg.data, cfg.train.batch_size, cfg.seed)
    counter = BadClipCounter(cfg.data.max_bad_fraction)
    tracker = Tracker(cfg, Path(cfg.train.run_dir) / "data-check", job_type="data-check")
    total = len(loader) if max_batches is None else min(max_batches, len(loader))
    per_bucket: Counter = Counter()
    sheet_videos, sheet_captions = [], []
    clips = batches = 0
    start = time.perf_counter()
    bar = tqdm(total=total, unit="batch", disable=not cfg.logging.progress, desc="reading")
    for batch in loader:
        if batches >= total:
            break
        batches += 1
        bar.update(1)
        ok = 0 if batch is None else len(batch["caption"])
        skipped = 0 if batch is None else batch["num_skipped"]
        counter.update(ok, skipped, batch.get("skipped_paths", []) if batch else [])
        if ok:
            clips += ok
            _, _, t, h, w = batch["video"].shape
            per_bucket[f"{h}x{w}x{t}"] += ok
            for video, caption in zip(batch["video"], batch["caption"]):
                if len(sheet_videos) < sheet_clips:
                    sheet_videos.append(to_uint8(video))
                    sheet_captions.append(caption)
        seconds = time.perf_counter() - start
        bar.set_postfix(clips_per_s=f"{clips / max(seconds, 1e-9):.1f}", skipped=counter.summary()["skipped"])
        tracker.log({"data/clips": clips, "data/skipped": counter.summary()["skipped"],
                     "data/clips_per_s": clips / max(seconds, 1e-9)}, step=batches)
    bar.close()
    counter.finish()
    summary = {"dataset": cfg.data.name, "kind": cfg.data.kind, "clips": clips, "batches": batches,
               "buckets": dict(per_bucket), "skipped": counter.summary()["skipped"], "skipped_paths": counter.summary()["paths"],
               "seconds": round(time.perf_counter() - start, 3)}
    if contact_sheet and sheet_videos:
        from reel.data.contact_sheet import write_contact_sheet

        summary["contact_sheet"] = str(write_contact_sheet(contact_sheet, sheet_videos, sheet_captions))
        tracker.log_image("data/contact_sheet", contact_sheet)
    tracker.finish()
    return summary
