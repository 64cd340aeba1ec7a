import json

import pytest

from reel.data.metadata import load_metadata, write_metadata
from reel.errors import ReelError


def test_jsonl_round_trip_types_and_relative_paths(tmp_path):
    rows = [{"path": "clips/a.mp4", "caption": "a red ball", "fps": 8, "num_frames": 24,
             "height": 64, "width": 96, "split": "train"},
            {"path": "/abs/b.mp4", "caption": "b"}]
    meta = write_metadata(tmp_path / "meta.jsonl", rows)
    loaded = load_metadata(meta)
    assert loaded[0]["path"] == str(tmp_path / "clips/a.mp4")
    assert loaded[1]["path"] == "/abs/b.mp4"
    assert isinstance(loaded[0]["fps"], float) and loaded[0]["fps"] == 8.0
    assert isinstance(loaded[0]["num_frames"], int) and loaded[0]["height"] == 64
    assert "fps" not in loaded[1]


def test_csv_round_trip_with_root_and_empty_optional_cells(tmp_path):
    rows = [{"path": "a.mp4", "caption": "one, with comma", "num_frames": 10},
            {"path": "b.mp4", "caption": "two"}]
    meta = write_metadata(tmp_path / "meta.csv", rows)
    loaded = load_metadata(meta, root=tmp_path / "videos")
    assert [r["path"] for r in loaded] == [str(tmp_path / "videos/a.mp4"), str(tmp_path / "videos/b.mp4")]
    assert loaded[0]["caption"] == "one, with comma" and loaded[0]["num_frames"] == 10
    assert "num_frames" not in loaded[1]


def test_write_is_atomic_and_leaves_no_temp_file(tmp_path):
    write_metadata(tmp_path / "m.jsonl", [{"path": "a.mp4", "caption": "x"}])
    write_metadata(tmp_path / "m.jsonl", [{"path": "b.mp4", "caption": "y"}])
    assert [p.name for p in tmp_path.iterdir()] == ["m.jsonl"]
    assert json.loads((tmp_path / "m.jsonl").read_text())["path"] == "b.mp4"


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ReelError, match="nope.jsonl.*not found"):
        load_metadata(tmp_path / "nope.jsonl")


def test_bad_extension_is_an_error(tmp_path):
    (tmp_path / "m.txt").write_text("path,caption\n")
    with pytest.raises(ReelError, match=r"m\.txt.*\.jsonl or \.csv"):
        load_metadata(tmp_path / "m.txt")
    with pytest.raises(ReelError, match=r"\.jsonl or \.csv"):
        write_metadata(tmp_path / "m.json", [])


def test_missing_column_names_column_file_and_line(tmp_path):
    meta = tmp_path / "m.jsonl"
    meta.write_text('{"path": "a.mp4", "caption": "x"}\n\n{"path": "b.mp4"}\n')
    with pytest.raises(ReelError, match=r"m\.jsonl:3: missing required column 'caption'"):
        load_metadata(meta)
    csv_meta = tmp_path / "m.csv"
    csv_meta.write_text("path,text\na.mp4,x\n")
    with pytest.raises(ReelError, match=r"m\.csv: missing required column 'caption'"):
        load_metadata(csv_meta)


def test_malformed_json_line_gives_file_and_line(tmp_path):
    meta = tmp_path / "m.jsonl"
    meta.write_text('{"path": "a.mp4", "caption": "x"}\n{"path": "b.mp4", caption}\n')
    with pytest.raises(ReelError, match=r"m\.jsonl:2: malformed JSON"):
        load_metadata(meta)


def test_bad_number_names_column(tmp_path):
    meta = tmp_path / "m.csv"
    meta.write_text("path,caption,fps\na.mp4,x,fast\n")
    with pytest.raises(ReelError, match=r"m\.csv:2: column 'fps' must be float"):
        load_metadata(meta)
