import numpy as np
import pytest
import torch

from reel.data.shapes import all_label_combos, render_clip
from reel.data.video_io import probe_video, read_video, to_tensor, to_uint8, write_video
from reel.errors import ReelError


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


def test_mp4_round_trip_keeps_shapes_clips_above_35_db(tmp_path):
    for index, combo in enumerate(all_label_combos()[::5]):
        frames = render_clip(0, index, 64, 64, 17, labels=combo).frames
        path = write_video(tmp_path / f"{index}.mp4", frames, fps=8.0)
        decoded = read_video(path)
        assert decoded.dtype == np.uint8 and decoded.shape == frames.shape
        assert psnr(decoded, frames) >= 35.0, combo


def test_the_same_frames_always_encode_to_the_same_file(tmp_path):
    """A scored sample must not move with each write: x264's lookahead made encodes differ from run to run."""
    frames = render_clip(0, 3, 64, 64, 65).frames.astype(np.int16)
    frames += np.random.default_rng(0).integers(-12, 13, size=frames.shape, dtype=np.int16)  # like a model's output
    frames = frames.clip(0, 255).astype(np.uint8)
    written = [write_video(tmp_path / f"{i}.mp4", frames, fps=16.0).read_bytes() for i in range(4)]
    assert all(data == written[0] for data in written[1:])


def test_probe_reports_the_written_stream(tmp_path):
    frames = render_clip(1, 0, 48, 80, 9).frames
    path = write_video(tmp_path / "clip.mp4", frames, fps=7.5)
    assert probe_video(path) == {"num_frames": 9, "fps": 7.5, "height": 48, "width": 80}


def test_single_frame_and_odd_sizes_round_trip(tmp_path):
    frames = render_clip(1, 0, 33, 47, 1).frames
    decoded = read_video(write_video(tmp_path / "one.mp4", frames, fps=8.0))
    assert decoded.shape == (1, 33, 47, 3) and psnr(decoded, frames) >= 35.0


def test_write_creates_folders_and_leaves_no_temporary_files(tmp_path):
    target = tmp_path / "a" / "b" / "clip.mp4"
    frames = render_clip(0, 0, 32, 32, 5).frames
    assert write_video(target, frames, fps=8.0) == target
    write_video(target, frames[::-1].copy(), fps=8.0)  # overwriting replaces the file whole
    assert np.array_equal(read_video(target), read_video(write_video(tmp_path / "r.mp4", frames[::-1].copy(), 8.0)))
    assert sorted(p.name for p in target.parent.iterdir()) == ["clip.mp4"]


def test_bad_frames_are_rejected_without_writing(tmp_path):
    with pytest.raises(ReelError, match="uint8"):
        write_video(tmp_path / "x.mp4", np.zeros((2, 16, 16, 3), dtype=np.float32), fps=8.0)
    with pytest.raises(ReelError, match="fps"):
        write_video(tmp_path / "x.mp4", np.zeros((2, 16, 16, 3), dtype=np.uint8), fps=0)
    assert list(tmp_path.iterdir()) == []


def test_truncated_mp4_is_a_user_error_naming_the_file(tmp_path):
    path = write_video(tmp_path / "clip.mp4", render_clip(0, 0, 64, 64, 17).frames, fps=8.0)
    data = path.read_bytes()
    path.write_bytes(data[: int(0.4 * len(data))])
    for read in (read_video, probe_video):
        with pytest.raises(ReelError, match=r"clip\.mp4: cannot read video") as error:
            read(path)
        assert "\n" not in str(error.value)


@pytest.mark.parametrize("content", [b"", b"not a video at all" * 100, bytes(range(256)) * 20])
def test_garbage_file_is_a_user_error_naming_the_file(tmp_path, content):
    path = tmp_path / "garbage.mp4"
    path.write_bytes(content)
    with pytest.raises(ReelError, match=r"garbage\.mp4: cannot read video"):
        read_video(path)
    with pytest.raises(ReelError, match=r"garbage\.mp4: cannot read video"):
        probe_video(path)


def test_missing_file_or_folder_is_a_user_error(tmp_path):
    with pytest.raises(ReelError, match=r"missing\.mp4: cannot read video \(no such file\)"):
        read_video(tmp_path / "missing.mp4")
    with pytest.raises(ReelError, match="not a file"):
        probe_video(tmp_path)


def test_tensor_conversion_is_exact_for_every_byte():
    frames = np.arange(256, dtype=np.uint8).reshape(1, 4, 64, 1).repeat(3, axis=-1).repeat(2, axis=0)
    video = to_tensor(frames)
    assert video.dtype == torch.float32 and video.shape == (3, 2, 4, 64)
    assert video.min() == -1 and video.max() == 1
    assert torch.equal(video, torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 127.5 - 1)
    assert np.array_equal(to_uint8(video), frames)
    assert np.array_equal(to_uint8(video.bfloat16()), to_uint8(video.bfloat16().float()))


def test_to_uint8_rounds_and_clamps():
    video = torch.tensor([-3.0, -1.0, 0.0, 1.0 / 255, 1.0, 2.0]).reshape(1, 1, 1, 6).expand(3, 1, 1, 6)
    assert to_uint8(video)[0, 0, :, 0].tolist() == [0, 0, 128, 128, 255, 255]  # round(127.5) = 128, half to even


def test_tensor_conversions_check_shapes():
    with pytest.raises(ReelError):
        to_uint8(torch.zeros(2, 3, 4, 4))
    with pytest.raises(ReelError):
        to_tensor(np.zeros((3, 4, 4), dtype=np.uint8))
