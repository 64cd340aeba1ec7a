"""Reading (decord) and writing (PyAV, H.264) mp4 clips, and converting frames to and from tensors."""
from __future__ import annotations

import os
import re
import tempfile
from fractions import Fraction
from pathlib import Path

import av
import decord
import numpy as np
import torch

from reel.errors import ReelError

PIXEL_FORMAT = "yuv444p"  # 4:2:0 chroma smears the saturated object edges to ~31 dB; 4:4:4 keeps ~47 dB
# x264's lookahead (frame types, macroblock-tree rate control) encoded the same frames differently from run to
# run, even on one thread, so a scored sample moved with each write; without it an encode is reproducible
# (and closer to its frames: 49.9 against 45.4 dB on a 257-frame 64x64 video at crf 10, in 2.3x the bytes)
X264_PARAMS = "rc-lookahead=0"


def write_video(path, frames: np.ndarray, fps: float, crf: int = 10) -> Path:
    """Encode uint8 frames (T, H, W, 3) as an H.264 mp4; the file appears whole or not at all."""
    frames = _check_frames(frames, Path(path))
    with VideoWriter(path, fps, crf) as writer:
        writer.write(frames)
    return writer.path


class VideoWriter:
    """An H.264 mp4 written frame batch by frame batch (long videos never sit in memory whole). The file
    appears at `path` when the writer closes without an error; until then it is a hidden temporary file.

        with VideoWriter("out.mp4", fps=8) as writer:
            for frames in chunks:  # uint8 (t, H, W, 3)
                writer.write(frames)
    """

    def __init__(self, path, fps: float, crf: int = 10):
        self.path = Path(path)
        if fps <= 0:
            raise ReelError(f"{self.path}: fps must be positive, got {fps}")
        self.fps, self.crf = fps, crf
        self.frames_written = 0
        self._container = self._stream = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self._tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.stem}.", suffix=".tmp.mp4")
        os.close(fd)

    def write(self, frames: np.ndarray) -> None:
        frames = np.asarray(frames)
        if frames.ndim == 4 and frames.shape[0] == 0:
            return
        frames = _check_frames(frames, self.path)
        if self._stream is None:
            self._container = av.open(self._tmp, mode="w", format="mp4")
            self._stream = self._container.add_stream("libx264", rate=Fraction(self.fps).limit_denominator(1001))
            self._stream.height, self._stream.width = frames.shape[1:3]
            self._stream.pix_fmt = PIXEL_FORMAT
            self._stream.options = {"crf": str(int(self.crf)), "x264-params": X264_PARAMS}
        elif tuple(frames.shape[1:3]) != (self._stream.height, self._stream.width):
            raise ReelError(f"{self.path}: frames of {frames.shape[1:3]} after frames of "
                            f"{(self._stream.height, self._stream.width)}")
        for frame in frames:
            self._container.mux(self._stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        self.frames_written += len(frames)

    def close(self) -> Path:
        if self._container is None:
            Path(self._tmp).unlink(missing_ok=True)
            raise ReelError(f"{self.path}: no frames were written")
        self._container.mux(self._stream.encode())  # flush the frames the encoder still holds
        self._container.close()
        self._container = None
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None
        Path(self._tmp).unlink(missing_ok=True)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


def _check_frames(frames: np.ndarray, path: Path) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise ReelError(f"{path}: frames must be uint8 (T, H, W, 3) with T >= 1, got {frames.dtype} {frames.shape}")
    return np.ascontiguousarray(frames)


def _unpadded(frame: np.ndarray) -> np.ndarray:
    """decord 0.6 hands back some narrow widths (16, 24, 48, 72, ...) with rows padded to a
    multiple of 32 pixels, labelled (H, W, 4) or (H, W, 6); the bytes are really (H, W_padded, 3)."""
    if frame.shape[-1] == 3:
        return frame
    height, width = frame.shape[:2]
    return frame.reshape(height, -1, 3)[:, :width]


def decode_frames(reader, indices: list[int]) -> np.ndarray:
    """(T, H, W, 3) uint8 frames at `indices`, one batch read, or frame by frame where decord's
    batch read trips over its padded rows (a corrupt file fails both ways)."""
    try:
        return reader.get_batch(indices).asnumpy()
    except Exception:  # decord raises its own error type, which is not exported stably
        return np.stack([_unpadded(reader[i].asnumpy()) for i in indices])


def read_video(path) -> np.ndarray:
    """All frames of a video as uint8 (T, H, W, 3)."""
    reader = _open(path)
    try:
        return decode_frames(reader, list(range(len(reader))))
    except Exception as e:  # decord raises its own error types for damaged streams
        raise ReelError(f"{path}: cannot read video ({_reason(e)})") from None


def probe_video(path) -> dict:
    """num_frames, fps, height and width of a video, without decoding all of it."""
    reader = _open(path)
    try:
        height, width = reader[0].shape[:2]
        return {"num_frames": len(reader), "fps": float(reader.get_avg_fps()), "height": int(height),
                "width": int(width)}
    except Exception as e:
        raise ReelError(f"{path}: cannot read video ({_reason(e)})") from None


def _open(path):
    path = Path(path)
    if not path.is_file():
        raise ReelError(f"{path}: cannot read video ({'not a file' if path.exists() else 'no such file'})")
    try:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0))
    except Exception as e:
        raise ReelError(f"{path}: cannot read video ({_reason(e)})") from None
    if len(reader) == 0:
        raise ReelError(f"{path}: cannot read video (no frames)")
    return reader


def _reason(error: Exception) -> str:
    """The first line of a decord error, without its C++ stack trace or source location."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    return re.sub(r"^\[[\d:]+\]\s+\S+:\d+:\s*", "", lines[0])[:160]


def to_uint8(video: torch.Tensor) -> np.ndarray:
    """A clip (3, T, H, W) in [-1, 1] -> uint8 frames (T, H, W, 3)."""
    if video.ndim != 4 or video.shape[0] != 3:
        raise ReelError(f"video must be (3, T, H, W), got {tuple(video.shape)}")
    pixels = ((video.detach().float().cpu() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return pixels.permute(1, 2, 3, 0).contiguous().numpy()


def to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 frames (T, H, W, 3) -> a float32 clip (3, T, H, W) in [-1, 1]."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ReelError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    video = torch.from_numpy(np.ascontiguousarray(frames)).float() / 127.5 - 1
    return video.permute(3, 0, 1, 2).contiguous()
