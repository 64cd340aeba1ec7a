"""Small synthetic mp4 clips written with PyAV (libx264), for the data tests."""
from pathlib import Path

import av
import numpy as np
import pytest


def smooth_test_frames(num_frames: int, height: int, width: int, phase: float = 0.0) -> np.ndarray:
    """(T, H, W, 3) uint8 of slowly drifting colour gradients: smooth, so H.264 keeps them almost exactly."""
    t = np.arange(num_frames, dtype=np.float32)[:, None, None]
    y = np.linspace(0, 1, height, dtype=np.float32)[None, :, None]
    x = np.linspace(0, 1, width, dtype=np.float32)[None, None, :]
    red = 40 + 170 * x + 0 * y + 3 * t + phase
    green = 40 + 170 * y + 0 * x + 2 * t
    blue = 128 + 60 * np.sin(2 * np.pi * (x + y) / 2 + 0.2 * t)
    frames = np.stack(np.broadcast_arrays(red, green, blue), axis=-1)
    return np.clip(frames, 0, 255).round().astype(np.uint8)


def write_test_mp4(path, frames: np.ndarray, fps: float = 8, crf: int = 12) -> Path:
    """Encode (T, H, W, 3) uint8 frames as H.264 yuv420p; H and W must be even."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=int(round(fps)))
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "ultrafast", "tune": "zerolatency"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def truncate_test_file(path, keep_fraction: float) -> Path:
    """Cut a file to the first keep_fraction of its bytes, as an interrupted download would."""
    path = Path(path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep_fraction)])
    return path


@pytest.fixture
def make_test_mp4(tmp_path):
    """make_test_mp4(name, num_frames=24, height=64, width=64, fps=8) -> (path, frames) under tmp_path."""
    def make(name: str, num_frames: int = 24, height: int = 64, width: int = 64, fps: float = 8,
             phase: float = 0.0):
        frames = smooth_test_frames(num_frames, height, width, phase)
        return write_test_mp4(tmp_path / name, frames, fps=fps), frames
    return make


@pytest.fixture
def truncate_file():
    """truncate_file(path, keep_fraction): see truncate_test_file."""
    return truncate_test_file
