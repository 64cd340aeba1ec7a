import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


def run_reel(*args: str, cwd=None, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run the real CLI in a fresh process, as a user would."""
    return subprocess.run([sys.executable, "-m", "reel.cli", *args], capture_output=True, text=True,
                          cwd=cwd or REPO, timeout=timeout)


@pytest.fixture
def reel_cli():
    return run_reel


@pytest.fixture(scope="session")
def tiny_latents(tmp_path_factory):
    """8 shapes clips of 9 frames encoded by the bundled demo AE: the overrides that train a DiT on them."""
    cache, out = tmp_path_factory.mktemp("text_cache"), tmp_path_factory.mktemp("tiny_latents")
    common = ["experiment=shapes-64", "data.num_frames=9", f"text_encoder.cache_dir={cache}",
              "logging.wandb=false", "logging.progress=false"]
    result = run_reel("data", "encode", *common, f"out_dir={out}", "num_clips=8", "batch_size=8")
    assert result.returncode == 0, result.stderr[-2000:]
    return [*common, "data=latents", f"data.latents={out}"]
