import json
import re

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from reel.config.schema import DataConfig
from reel.data.oracle import _nearest_palette_index, labels_from_prompt, score_frames
from reel.data.shapes import (
    COLORS,
    DIRECTIONS,
    SHAPES,
    TEMPLATES,
    ShapesDataset,
    _turn,
    all_label_combos,
    caption,
    layout_clip,
    make_shapes,
    render_clip,
)
from reel.errors import ReelError

COMBOS = all_label_combos()


def object_mask(frames: np.ndarray, color: str) -> np.ndarray:
    return _nearest_palette_index(frames) == list(COLORS).index(color)


def test_palette_and_vocabulary_follow_the_spec():
    assert COLORS == {"red": (230, 40, 40), "green": (40, 200, 70), "blue": (40, 90, 240),
                      "yellow": (235, 215, 40), "cyan": (40, 210, 220), "magenta": (220, 50, 210)}
    assert SHAPES == ("circle", "square", "triangle")
    assert DIRECTIONS == ("left", "right", "up", "down")


def test_all_label_combos_are_the_72_in_a_fixed_order():
    assert len(COMBOS) == 72
    assert len({tuple(c.values()) for c in COMBOS}) == 72
    assert COMBOS[0] == {"color": "red", "shape": "circle", "direction": "left"}
    assert COMBOS == all_label_combos()


def test_same_seed_and_index_give_identical_clips():
    a, b = render_clip(7, 3, 64, 64, 17), render_clip(7, 3, 64, 64, 17)
    assert a.frames.dtype == np.uint8 and a.frames.shape == (17, 64, 64, 3)
    assert a.frames.tobytes() == b.frames.tobytes()
    assert (a.caption, a.labels) == (b.caption, b.labels)
    assert a.labels["seed"] == 7 and a.labels["index"] == 3


def test_other_index_or_seed_gives_another_clip():
    base = render_clip(7, 3, 64, 64, 17).frames
    assert not np.array_equal(base, render_clip(7, 4, 64, 64, 17).frames)
    assert not np.array_equal(base, render_clip(8, 3, 64, 64, 17).frames)


def test_forcing_labels_keeps_the_rest_of_the_clip():
    free = render_clip(1, 5, 64, 64, 9)
    forced = render_clip(1, 5, 64, 64, 9, labels=free.labels)
    assert forced.frames.tobytes() == free.frames.tobytes()


@pytest.mark.parametrize("height,width,num_frames", [(64, 64, 17), (96, 128, 9)])
def test_labels_match_pixels_for_every_combo(height, width, num_frames):
    for index, combo in enumerate(COMBOS):
        clip = render_clip(11, index, height, width, num_frames, labels=combo)
        assert {k: clip.labels[k] for k in combo} == combo
        assert score_frames(clip.frames) == combo, (index, combo)


def test_captions_name_the_labels_in_every_template():
    assert len(set(TEMPLATES)) >= 3
    template_words = set()
    for template in range(len(TEMPLATES)):
        for combo in COMBOS:
            text = caption(**combo, template=template)
            assert labels_from_prompt(text) == combo
            template_words |= set(re.findall(r"[a-z]+", text)) - set(combo.values())
    assert "to" not in template_words  # "moves to the up" reads badly
    assert not template_words & (set(COLORS) | set(SHAPES) | set(DIRECTIONS))


def test_captions_vary_with_the_index():
    captions = {render_clip(0, i, 32, 32, 1).caption for i in range(40)}
    used_templates = {re.sub(r"red|green|blue|yellow|cyan|magenta|circle|square|triangle|left|right|up|down",
                             "_", c) for c in captions}
    assert len(used_templates) >= 3


def test_background_is_dark_and_smooth():
    for index in range(12):
        clip = render_clip(2, index, 64, 96, 5)
        outside = np.ones(clip.frames.shape[:3], dtype=bool)
        for obj in layout_clip(2, index, 64, 96, 5):
            half = obj.size / 2
            for t, (cx, cy) in enumerate(obj.centers):
                outside[t, int(np.floor(cy - half)):int(np.ceil(cy + half)),
                        int(np.floor(cx - half)):int(np.ceil(cx + half))] = False
        background = clip.frames[outside].astype(int)
        assert background.max() <= 80 and background.min() >= 10
        first_frame = clip.frames[0][outside[0]].astype(int)
        assert (first_frame.max(0) - first_frame.min(0)).max() <= 20 + 1  # gradient amplitude, plus rounding
        # A gradient of at most 20 over the canvas changes by at most 1 between neighbouring pixels.
        still = clip.frames[0].astype(int)
        steps = np.abs(np.diff(still, axis=1))[outside[0][:, 1:] & outside[0][:, :-1]]
        assert steps.max() <= 1


def test_objects_stay_inside_the_canvas_and_keep_their_size():
    height, width = 64, 96
    low, high = round(0.28 * 64 * 0.9), round(0.28 * 64 * 1.1)
    for index, combo in enumerate(COMBOS):
        (obj,) = layout_clip(4, index, height, width, 17, labels=combo)
        assert low <= obj.size <= high
        half = obj.size / 2
        assert (obj.centers[:, 0] - half).min() >= 0 and (obj.centers[:, 0] + half).max() <= width
        assert (obj.centers[:, 1] - half).min() >= 0 and (obj.centers[:, 1] + half).max() <= height
        areas = object_mask(render_clip(4, index, height, width, 17, labels=combo).frames, combo["color"]).sum((1, 2))
        assert areas.min() >= 0.85 * areas.max()  # a clipped object would lose area


def test_square_side_read_from_pixels_is_the_drawn_size():
    for index in range(24):
        labels = {"shape": "square", "color": "blue", "direction": DIRECTIONS[index % 4]}
        (obj,) = layout_clip(9, index, 64, 64, 5, labels=labels)
        mask = object_mask(render_clip(9, index, 64, 64, 5, labels=labels).frames, "blue")
        for frame_mask in mask:
            rows, cols = np.flatnonzero(frame_mask.any(1)), np.flatnonzero(frame_mask.any(0))
            assert abs((rows[-1] - rows[0] + 1) - obj.size) <= 1
            assert abs((cols[-1] - cols[0] + 1) - obj.size) <= 1


def test_triangle_has_its_apex_at_the_top_and_its_base_at_the_bottom():
    for index, direction in enumerate(DIRECTIONS):
        labels = {"shape": "triangle", "color": "yellow", "direction": direction}
        (obj,) = layout_clip(6, index, 96, 96, 3, labels=labels)
        frame_mask = object_mask(render_clip(6, index, 96, 96, 3, labels=labels).frames, "yellow")[0]
        rows = np.flatnonzero(frame_mask.any(1))
        widths = frame_mask[rows].sum(1)
        assert obj.size - 3 <= len(rows) <= obj.size + 1  # the apex tip is thinner than a pixel
        assert obj.size - 3 <= widths.max() <= obj.size + 1  # slanted edges lose their partly covered pixels
        # Widening row by row down to the base; the last row may be only partly covered.
        assert widths[0] <= 3 and np.all(np.diff(widths[:-1]) >= 0)
        cx = np.argwhere(frame_mask).mean(0)[1] + 0.5
        assert abs(cx - obj.centers[0, 0]) <= 0.5


@pytest.mark.parametrize("height,width", [(64, 64), (64, 128)])
def test_centre_travels_four_tenths_of_the_axis(height, width):
    travel = {"left": (-0.4 * width, 0), "right": (0.4 * width, 0), "up": (0, -0.4 * height), "down": (0, 0.4 * height)}
    for index, combo in enumerate(COMBOS):
        clip = render_clip(5, index, height, width, 17, labels=combo)
        (obj,) = layout_clip(5, index, height, width, 17, labels=combo)
        np.testing.assert_allclose(obj.centers[-1] - obj.centers[0], travel[combo["direction"]], atol=1e-9)
        steps = np.diff(obj.centers, axis=0)
        np.testing.assert_allclose(steps, np.broadcast_to(steps[0], steps.shape), atol=1e-9)
        mask = object_mask(clip.frames, combo["color"])
        centroids = [np.argwhere(m).mean(0)[::-1] for m in (mask[0], mask[-1])]  # (x, y)
        np.testing.assert_allclose(centroids[1] - centroids[0], travel[combo["direction"]], atol=1.0)


def test_a_single_frame_clip_is_still():
    clip = render_clip(0, 0, 64, 64, 1, labels={"direction": "right", "shape": "square", "color": "red"})
    assert clip.frames.shape == (1, 64, 64, 3)
    assert score_frames(clip.frames) == {"color": "red", "shape": "square", "direction": None}


def test_several_objects_have_distinct_colours_and_the_first_gives_the_labels():
    clip = render_clip(3, 1, 96, 96, 9, num_objects=3, labels={"color": "cyan"})
    objects = clip.labels["objects"]
    assert len(objects) == 3 and len({o["color"] for o in objects}) == 3
    assert clip.labels["color"] == objects[0]["color"] == "cyan"
    assert {k: clip.labels[k] for k in ("color", "shape", "direction")} == objects[0]


@pytest.mark.parametrize("kwargs", [{"labels": {"color": "purple"}}, {"num_objects": 0}, {"num_objects": 7},
                                    {"height": 4}, {"num_frames": 0}])
def test_bad_arguments_are_user_errors(kwargs):
    args = {"seed": 0, "index": 0, "height": 64, "width": 64, "num_frames": 5, **kwargs}
    with pytest.raises(ReelError):
        render_clip(**args)


def test_dataset_items_are_clips_in_minus_one_to_one():
    dataset = ShapesDataset(seed=3, num_clips=5, height=64, width=96, num_frames=9)
    assert len(dataset) == 5
    item = dataset[2]
    assert item["video"].dtype == torch.float32 and item["video"].shape == (3, 9, 64, 96)
    assert item["video"].min() >= -1 and item["video"].max() <= 1
    clip = render_clip(3, 2, 64, 96, 9)
    assert item["caption"] == clip.caption and item["labels"] == clip.labels and item["index"] == 2
    expected = torch.from_numpy(clip.frames).permute(3, 0, 1, 2).float() / 127.5 - 1
    assert torch.equal(item["video"], expected)
    assert torch.equal(dataset[2]["video"], item["video"])
    with pytest.raises(IndexError):
        dataset[5]


def test_dataset_batches_through_a_dataloader():
    batch = next(iter(torch.utils.data.DataLoader(ShapesDataset(0, 4, 32, 32, 5), batch_size=2)))
    assert batch["video"].shape == (2, 3, 5, 32, 32)
    assert len(batch["caption"]) == 2 and list(batch["labels"]["color"]) == [
        render_clip(0, i, 32, 32, 5).labels["color"] for i in range(2)]


def test_dataset_from_config():
    cfg = OmegaConf.merge(OmegaConf.structured(DataConfig),
                          {"height": 32, "width": 48, "num_frames": 5, "shapes": {"seed": 4, "num_clips": 3}})
    dataset = ShapesDataset.from_config(cfg)
    assert len(dataset) == 3 and dataset.seed == 4
    assert dataset[0]["video"].shape == (3, 5, 32, 48)


def test_make_shapes_writes_clips_and_metadata(tmp_path):
    metadata = make_shapes(tmp_path / "world", num_clips=3, height=32, width=48, num_frames=5, seed=2, fps=8.0,
                           progress=False, one_per_combo=True)
    assert metadata == tmp_path / "world" / "metadata.jsonl"
    rows = [json.loads(line) for line in metadata.read_text().splitlines()]
    assert [r["path"] for r in rows] == ["clips/000000.mp4", "clips/000001.mp4", "clips/000002.mp4"]
    for index, row in enumerate(rows):
        assert {k: row[k] for k in ("color", "shape", "direction")} == COMBOS[index]
        assert row["caption"] == render_clip(2, index, 32, 48, 5, labels=COMBOS[index]).caption
        assert (row["num_frames"], row["fps"], row["height"], row["width"]) == (5, 8.0, 32, 48)
        assert (row["seed"], row["index"]) == (2, index)
        assert (tmp_path / "world" / row["path"]).is_file()
    leftovers = [p.name for p in (tmp_path / "world").rglob("*") if p.name.startswith(".")]
    assert leftovers == []


def test_turning_clips_change_direction_at_a_latent_frame_boundary_inside_the_canvas():
    """data.shapes.turn_prob: the object moves direction_before up to frame k (a multiple of turn_every) and its
    labelled direction after it, at the world's speed, inside the canvas; clips that do not turn are the world's."""
    turned, kept, frames_seen = 0, 0, set()
    for index in range(60):
        clip = render_clip(3, index, 64, 64, 17, turn_prob=0.5)
        labels, k = clip.labels, clip.labels["turn_frame"]
        if not k:
            kept += 1
            assert np.array_equal(clip.frames, render_clip(3, index, 64, 64, 17).frames)
            assert labels["direction_before"] == labels["direction"]
            continue
        turned += 1
        frames_seen.add(k)
        assert k % 4 == 0 and 4 <= k <= 12 and labels["direction_before"] != labels["direction"]
        words = clip.caption.replace(",", "").split()  # the caption names the direction after the turn
        assert labels["direction"] in words and labels["direction_before"] not in words
        if k <= 8:  # the pixels after the turn read as the labelled direction (4 frames move under 0.12 W)
            assert score_frames(clip.frames[k:]) == {key: labels[key] for key in ("color", "shape", "direction")}
        obj = layout_clip(3, index, 64, 64, 17)[0]
        half = obj.size / 2
        _, moved = _turn(3, index, obj, 64, 64, 17, 0.5, 4)
        steps = np.diff(moved.centers, axis=0)
        unit = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
        assert np.allclose(steps[:k], np.array(unit[labels["direction_before"]]) * 0.4 * 64 / 16)
        assert np.allclose(steps[k:], np.array(unit[labels["direction"]]) * 0.4 * 64 / 16)
        assert (moved.centers >= half - 1e-9).all() and (moved.centers <= 64 - half + 1e-9).all()
    assert 15 < turned < 45 and kept and frames_seen == {4, 8, 12}
    assert "turn_frame" not in render_clip(3, 0, 64, 64, 17).labels  # the scored world's labels are unchanged
    with pytest.raises(ReelError, match="turns need num_frames - 1 >= 2 \\* turn_every, got 5 frames"):
        render_clip(3, 0, 64, 64, 5, turn_prob=0.5)
