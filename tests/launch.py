"""Launching real worker processes from tests: a clean environment and torchrun on a free port."""
import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def child_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS}
    env.update(DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1", WANDB_MODE="disabled", PYTHONUNBUFFERED="1")
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(nproc: int, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """`torchrun --nproc_per_node=nproc ARGS` (a script path, or -m module ...) on CPU with gloo."""
    launcher = Path(sys.executable).with_name("torchrun")
    command = [str(launcher)] if launcher.exists() else [sys.executable, "-m", "torch.distributed.run"]
    command += [f"--nproc_per_node={nproc}", f"--master_port={free_port()}", *args]
    return subprocess.run(command, cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=timeout)
