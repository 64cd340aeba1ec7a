from reel.config import load_config
from reel.tracking import Tracker


def test_wandb_runs_offline_by_default(tmp_path):
    cfg, _ = load_config([])
    assert cfg.logging.wandb and cfg.logging.wandb_mode == "offline"
    tracker = Tracker(cfg, tmp_path, job_type="test")
    assert tracker.enabled
    tracker.log({"loss": 1.5}, step=1)
    tracker.finish()
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].glob("*.wandb"))


def test_wandb_false_turns_it_off(tmp_path):
    cfg, _ = load_config(["logging.wandb=false"])
    tracker = Tracker(cfg, tmp_path, job_type="test")
    tracker.log({"loss": 1.0})
    tracker.finish()
    assert not tracker.enabled and not (tmp_path / "wandb").exists()
