import pytest

from reel.data.metadata import load_metadata
from reel.data.scan import scan_folder
from reel.errors import ReelError


@pytest.fixture
def folder_with_bad_files(make_test_mp4, truncate_file, tmp_path):
    for k in range(5):
        make_test_mp4(f"videos/sub{k % 2}/good{k}.mp4", num_frames=12, height=32, width=48, phase=10 * k)
    (tmp_path / "videos/sub0/good0.txt").write_text("a caption from a sidecar\n")
    truncated, _ = make_test_mp4("videos/truncated.mp4", num_frames=12)
    truncate_file(truncated, 0.4)
    (tmp_path / "videos/garbage.mp4").write_bytes(b"not a video at all" * 50)
    (tmp_path / "videos/notes.md").write_text("ignored: not a video extension")
    return tmp_path / "videos"


def test_scan_lists_bad_files_and_writes_the_good_ones(folder_with_bad_files, tmp_path, capsys):
    report = scan_folder(folder_with_bad_files, tmp_path / "meta.jsonl", progress=False)
    assert report.num_ok == 5
    assert sorted(p.rsplit("/", 1)[-1] for p, _ in report.unreadable) == ["garbage.mp4", "truncated.mp4"]
    assert all(reason for _, reason in report.unreadable)
    err = capsys.readouterr().err
    assert "garbage.mp4" in err and "truncated.mp4" in err

    raw = (tmp_path / "meta.jsonl").read_text()
    assert '"path": "videos/sub0/good0.mp4"' in raw  # relative to the metadata file's folder
    rows = {r["path"].rsplit("/", 1)[-1]: r for r in load_metadata(report.out_file)}
    assert sorted(rows) == [f"good{k}.mp4" for k in range(5)]
    assert rows["good0.mp4"]["caption"] == "a caption from a sidecar"
    assert rows["good1.mp4"]["caption"] == ""
    assert (rows["good1.mp4"]["num_frames"], rows["good1.mp4"]["height"], rows["good1.mp4"]["width"]) == (12, 32, 48)
    assert rows["good1.mp4"]["fps"] == pytest.approx(8.0)


def test_scan_writes_csv_and_absolute_paths_outside_its_folder(folder_with_bad_files, tmp_path):
    out = tmp_path / "elsewhere/meta.csv"
    report = scan_folder(folder_with_bad_files, out, extensions=(".mp4",), progress=False)
    assert report.num_ok == 5
    assert str(folder_with_bad_files) in out.read_text()


def test_scan_of_missing_folder_is_an_error(tmp_path):
    with pytest.raises(ReelError, match="no_such_dir.*not found"):
        scan_folder(tmp_path / "no_such_dir", tmp_path / "m.jsonl")
