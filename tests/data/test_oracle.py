import json

import numpy as np
import pytest

from reel.data.oracle import labels_from_prompt, score_frames, score_manifest
from reel.data.shapes import COLORS, make_shapes, render_clip
from reel.data.video_io import write_video
from reel.errors import ReelError

NONE = {"color": None, "shape": None, "direction": None}


def synthetic_clip(mask_of_frame, num_frames=9, size=64, color="green", background=30):
    """Frames with a solid colour wherever mask_of_frame(t) (a bool (size, size) array) is set."""
    frames = np.full((num_frames, size, size, 3), background, dtype=np.uint8)
    for t in range(num_frames):
        frames[t][mask_of_frame(t)] = COLORS[color]
    return frames


def box(x0, y0, side, size=64):
    mask = np.zeros((size, size), dtype=bool)
    mask[y0:y0 + side, x0:x0 + side] = True
    return mask


def test_blank_and_grey_clips_have_no_attributes():
    assert score_frames(np.zeros((9, 64, 64, 3), dtype=np.uint8)) == NONE
    assert score_frames(np.full((9, 64, 64, 3), 200, dtype=np.uint8)) == NONE  # bright but not saturated


def test_a_dim_object_is_not_an_object():
    frames = synthetic_clip(lambda t: box(10 + 3 * t, 20, 16))
    frames[frames[..., 1] == 200] = (20, 100, 35)  # max 100 < 110
    assert score_frames(frames) == NONE


def test_square_moving_right():
    frames = synthetic_clip(lambda t: box(5 + 4 * t, 20, 16))
    assert score_frames(frames) == {"color": "green", "shape": "square", "direction": "right"}


def test_still_or_diagonal_motion_has_no_direction():
    assert score_frames(synthetic_clip(lambda t: box(20, 20, 16)))["direction"] is None
    diagonal = score_frames(synthetic_clip(lambda t: box(5 + 4 * t, 5 + 3 * t, 16)))
    assert diagonal["direction"] is None and diagonal["shape"] == "square"


def test_short_motion_is_not_a_direction():
    # 7 px over a 64 px canvas is under 0.12 of the axis.
    assert score_frames(synthetic_clip(lambda t: box(20, 20 - (7 * t) // 8, 16)))["direction"] is None
    assert score_frames(synthetic_clip(lambda t: box(20, 40 - 2 * t, 16)))["direction"] == "up"


def test_direction_needs_a_mask_in_most_frames():
    visible = lambda frames_with_object: lambda t: box(5 + 4 * t, 20, 16) if t < frames_with_object else box(0, 0, 0)
    assert score_frames(synthetic_clip(visible(5), num_frames=10))["direction"] is None  # 50%
    assert score_frames(synthetic_clip(visible(6), num_frames=10))["direction"] == "right"  # 60%


def test_colour_is_the_majority_and_only_its_pixels_form_the_mask():
    def two_objects(t):
        return box(4, 40 - 3 * t, 20), box(40, 4, 8)

    frames = np.full((9, 64, 64, 3), 30, dtype=np.uint8)
    for t in range(9):
        big, small = two_objects(t)
        frames[t][big] = COLORS["magenta"]
        frames[t][small] = COLORS["yellow"]
    assert score_frames(frames) == {"color": "magenta", "shape": "square", "direction": "up"}


def test_fill_ratio_thresholds():
    yy, xx = np.mgrid[0:64, 0:64]
    disc = (xx - 30) ** 2 + (yy - 30) ** 2 <= 12**2
    triangle = (yy >= 10) & (yy < 40) & (np.abs(xx - 30) <= (yy - 10) / 2)
    cross = (np.abs(xx - 30) <= 1) | (np.abs(yy - 30) <= 1)
    cross &= (np.abs(xx - 30) <= 20) & (np.abs(yy - 30) <= 20)
    assert score_frames(synthetic_clip(lambda t: disc))["shape"] == "circle"
    assert score_frames(synthetic_clip(lambda t: triangle))["shape"] == "triangle"
    assert score_frames(synthetic_clip(lambda t: cross))["shape"] is None
    assert score_frames(synthetic_clip(lambda t: box(3, 3, 4)))["shape"] is None  # 16 pixels < 20


def test_labels_from_prompt():
    assert labels_from_prompt("A Cyan TRIANGLE, going Up.") == {"color": "cyan", "shape": "triangle", "direction": "up"}
    assert labels_from_prompt("a dog running") == NONE
    assert labels_from_prompt("a reddish squares upward")["color"] is None  # whole words only


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    make_shapes(out, num_clips=72, height=64, width=64, num_frames=17, seed=1, progress=False, one_per_combo=True)
    return out


def test_every_combo_written_to_mp4_reads_back(world):
    report = score_manifest(world)
    assert report["manifest"] == str(world / "metadata.jsonl")
    assert report["num_clips"] == 72
    assert report["accuracy"] == {"color": 1.0, "shape": 1.0, "direction": 1.0, "joint": 1.0}
    assert len({tuple(c["expected"].values()) for c in report["clips"]}) == 72
    assert score_manifest(world / "metadata.jsonl")["accuracy"]["joint"] == 1.0


def test_sample_manifest_with_prompts_and_a_broken_video(world, tmp_path):
    clip = render_clip(0, 0, 64, 64, 17, labels={"color": "red", "shape": "square", "direction": "down"})
    write_video(tmp_path / "good.mp4", clip.frames, fps=8.0)
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    rows = [
        {"prompt": "a red square moving down", "seed": 0, "path": "good.mp4"},
        {"prompt": "a red square moving up", "seed": 0, "path": str(tmp_path / "good.mp4")},
        {"prompt": "a blue circle going left", "seed": 0, "path": "broken.mp4"},
        {"caption": "ignored words", "color": "red", "shape": "square", "direction": "down", "path": "good.mp4"},
    ]
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")
    report = score_manifest(tmp_path)
    assert [c["correct"] for c in report["clips"]] == [True, False, False, True]
    assert report["accuracy"] == {"color": 0.75, "shape": 0.75, "direction": 0.5, "joint": 0.5}
    broken = report["clips"][2]
    assert "broken.mp4" in broken["error"] and broken["predicted"] == NONE
    assert "error" not in report["clips"][0]


@pytest.mark.parametrize("lines,message", [
    ([{"prompt": "a red square moving down"}], r"manifest\.jsonl:1: line has no 'path'"),
    ([{"path": "a.mp4", "prompt": "a red square moving down"}, {"path": "b.mp4", "seed": 3}],
     r"manifest\.jsonl:2: line has no color/shape/direction labels and no prompt"),
    ([{"path": "a.mp4", "prompt": "a red square"}], r"manifest\.jsonl:1: no direction"),
    ([], r"manifest\.jsonl: manifest lists no clips"),
])
def test_bad_manifest_lines_name_the_file_and_line(tmp_path, lines, message):
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    with pytest.raises(ReelError, match=message):
        score_manifest(tmp_path / "manifest.jsonl")


def test_invalid_json_names_the_line(tmp_path):
    (tmp_path / "m.jsonl").write_text('{"path": "a.mp4", "prompt": "a red square moving up"}\n{oops\n')
    with pytest.raises(ReelError, match=r"m\.jsonl:2: not valid JSON"):
        score_manifest(tmp_path / "m.jsonl")


def test_missing_manifest_or_empty_folder(tmp_path):
    with pytest.raises(ReelError, match=r"nope\.jsonl: manifest not found"):
        score_manifest(tmp_path / "nope.jsonl")
    with pytest.raises(ReelError, match="neither manifest.jsonl nor metadata.jsonl"):
        score_manifest(tmp_path)
