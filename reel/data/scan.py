"""Probing videos with decord, and scanning a folder of videos into a metadata file."""
from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from tqdm import tqdm

from reel.data.metadata import FORMATS, write_metadata
from reel.errors import ReelError

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm")


def short_reason(error: BaseException) -> str:
    """One readable line from a decoder error (decord prefixes a timestamp and its source file)."""
    text = (str(error).strip().splitlines() or [""])[0]
    text = re.sub(r"^\[[\d:]+\]\s+\S+:\d+:\s*", "", text)
    text = text or type(error).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def probe_clip(path: str | os.PathLike) -> dict:
    """num_frames, fps, height and width of a video, from decord; raises when it cannot be read.

    The first frame is decoded, so a file whose header parses but whose frames do not is caught.
    """
    import decord

    reader = decord.VideoReader(str(path), num_threads=1)
    num_frames = len(reader)
    if num_frames < 1:
        raise ValueError("no video frames")
    height, width, _ = reader[0].shape
    return {"num_frames": int(num_frames), "fps": float(reader.get_avg_fps()),
            "height": int(height), "width": int(width)}


@dataclass
class ScanReport:
    num_ok: int
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    out_file: Path | None = None


def find_videos(folder: Path, extensions: Sequence[str]) -> list[Path]:
    wanted = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions}
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in wanted)


def sidecar_caption(video: Path) -> str:
    """The text of a .txt file beside the video with the same stem, else ''."""
    caption_file = video.with_suffix(".txt")
    if caption_file.is_file():
        return caption_file.read_text(encoding="utf-8", errors="replace").strip()
    return ""


def path_for_metadata(video: Path, metadata_folder: Path) -> str:
    """Relative to the metadata file's folder when the video lies under it, so the pair can move."""
    video = video.absolute()
    try:
        return video.relative_to(metadata_folder).as_posix()
    except ValueError:
        return str(video)


def scan_folder(dir: str | os.PathLike, out_file: str | os.PathLike,
                extensions: Sequence[str] = VIDEO_EXTENSIONS, progress: bool = True) -> ScanReport:
    """Probe every video under `dir` (recursively) and write their metadata to `out_file`.

    Unreadable videos are left out of the file, listed in the report and warned about on stderr.
    """
    folder, out_file = Path(dir), Path(out_file)
    if not folder.is_dir():
        raise ReelError(f"{folder}: video folder not found")
    if out_file.suffix.lower() not in FORMATS:
        raise ReelError(f"{out_file}: metadata must be a .jsonl or .csv file")
    metadata_folder = out_file.absolute().parent
    rows, unreadable = [], []
    videos = find_videos(folder, extensions)
    for video in tqdm(videos, desc="scan", unit="file", disable=not progress, file=sys.stderr):
        try:
            info = probe_clip(video)
        except Exception as error:  # decord raises several types for corrupt files
            reason = short_reason(error)
            unreadable.append((str(video), reason))
            tqdm.write(f"warning: skipping unreadable video {video}: {reason}", file=sys.stderr)
            continue
        rows.append({"path": path_for_metadata(video, metadata_folder),
                     "caption": sidecar_caption(video), **info})
    write_metadata(out_file, rows)
    return ScanReport(num_ok=len(rows), unreadable=unreadable, out_file=out_file)
