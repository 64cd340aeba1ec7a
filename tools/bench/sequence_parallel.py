"""Sequence-parallel benchmark: memory per rank at SP=1 and SP=2, and the bytes each layer kind sends.

Writes benchmarks/sequence_parallel.json:
- memory: one dit-tiny training step (forward, MSE backward, AdamW) on one latent video of
  --frames x 32 x 32 tokens (32k by default), run by one process and by two (torchrun, gloo on CPU,
  nccl on CUDA), each in fresh processes. step_peak_mb is what the step adds to the process (RSS
  before the step subtracted on CPU; max allocated on CUDA); the ratio SP=2 / SP=1 is per rank.
- traffic: the payload bytes one rank hands to collectives in one self-attention layer's forward
  and backward (8 heads x 64, SP=2), counted by reel.parallel.collectives from the tensors it sends:
  linear-state SP (all-reduce of K^T V and K sums) against Ulysses (all-to-all of q, k, v and the
  output) at 16k, 64k and 256k tokens. Ulysses runs with a pass-through core here (out = v): the
  tensors sent are the same whatever the core, and a softmax core at 256k tokens is hours on a CPU.
Usage: python tools/bench/sequence_parallel.py [--device cpu|cuda] [--frames 32]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn

from device_stats import peak_mb, sync

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
SIZE, CHANNELS, TEXT_DIM, TEXT_TOKENS = 32, 16, 384, 32
TRAFFIC_TOKENS = (16384, 65536, 262144)
TRAFFIC_HEADS, TRAFFIC_HEAD_DIM = 8, 64


def current_mb(device: str) -> float:
    if device == "cuda":
        return torch.cuda.memory_allocated() / 2**20
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def sequence_parallel_setup(device: str):
    """(SequenceParallel or None, rank) for this process."""
    from reel.distributed import init_distributed
    from reel.parallel.groups import build_parallel_groups
    from reel.parallel.sequence import SequenceParallel

    world = int(os.environ.get("WORLD_SIZE", 1))
    if world == 1:
        return None, 0
    ranks = init_distributed(world, "nccl" if device == "cuda" else "gloo")
    groups = build_parallel_groups(ranks)
    return SequenceParallel(groups.sp_group, ranks.sp_rank, ranks.sp_size), ranks.rank


def memory_worker(frames: int, device: str) -> dict:
    from omegaconf import OmegaConf

    from reel.models.dit import build_dit
    from reel.parallel.sequence import enable_sequence_parallel

    sp, rank = sequence_parallel_setup(device)
    torch.manual_seed(0)
    cfg = OmegaConf.load(ROOT / "configs" / "model" / "dit-tiny.yaml")
    model = build_dit(cfg, CHANNELS, TEXT_DIM).to(device).train()
    if sp is not None:
        enable_sequence_parallel(model, sp)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    latents = torch.randn(1, CHANNELS, frames, SIZE, SIZE, device=device)
    target, t = torch.randn_like(latents), torch.rand(1, device=device)
    text = torch.randn(1, TEXT_TOKENS, TEXT_DIM, device=device)
    own = model.loss_frames(frames)
    before = current_mb(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    sync(device)
    start = time.perf_counter()
    error = (model(latents, t, text) - target)[:, :, own]
    (error.square().sum() / latents.numel()).backward()
    optimizer.step()
    sync(device)
    seconds = time.perf_counter() - start
    return {"rank": rank, "sp_size": 1 if sp is None else sp.size, "tokens": frames * SIZE * SIZE,
            "seconds": round(seconds, 2), "peak_mb": round(peak_mb(device), 1),
            "step_peak_mb": round(peak_mb(device) - before, 1)}


class PassThrough(nn.Module):
    def forward(self, q, k, v, grid, cache=None, update_cache=False):
        return v + (q + k) * 0.0  # q and k take part, so their all-to-alls run in backward too


def traffic_worker(device: str, token_counts) -> dict:
    from reel.models.attention import SelfAttention
    from reel.models.rope import Rope3D
    from reel.models.tokens import TokenGrid
    from reel.parallel.collectives import traffic_bytes, traffic_reset
    from reel.parallel.sequence import SequenceParallelLinearAttention, SequenceSlice, UlyssesAttention

    sp, rank = sequence_parallel_setup(device)
    dim = TRAFFIC_HEADS * TRAFFIC_HEAD_DIM
    rope = Rope3D(TRAFFIC_HEAD_DIM)
    rows = {}
    for tokens in token_counts:
        frames = tokens // (SIZE * SIZE)
        split = sp.split(frames)
        whole = TokenGrid(frames, SIZE, SIZE, 0, None, rope, torch.device(device))
        grid = whole.replace(frames=split.per_rank, frame_offset=split.start, parallel=SequenceSlice(sp, split, whole))
        x = torch.randn(1, grid.num_tokens, dim, device=device, requires_grad=True)
        row = {}
        for name, core in (("linear_state", SequenceParallelLinearAttention(sp)),
                           ("ulysses", UlyssesAttention(PassThrough(), sp))):
            layer = SelfAttention(dim, TRAFFIC_HEADS, core).to(device)
            traffic_reset()
            out = layer(x, grid)
            forward = traffic_bytes()
            out.sum().backward()
            row[name] = {"forward_bytes": forward, "forward_backward_bytes": traffic_bytes()}
        row["ulysses_over_linear_state"] = round(row["ulysses"]["forward_backward_bytes"]
                                                 / row["linear_state"]["forward_backward_bytes"], 1)
        rows[str(tokens)] = row
    return {"rank": rank, "traffic": rows}


def run_worker(mode: str, nproc: int, args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        worker = [__file__, "--worker", mode, "--device", args.device, "--frames", str(args.frames),
                  "--traffic-tokens", ",".join(map(str, args.traffic_tokens)), "--result", str(out)]
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(max(1, os.cpu_count() // nproc)))}
        if nproc == 1:
            command = [sys.executable, *worker]
        else:
            command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
                       "--master_port=29731", *worker]
        result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        if result.returncode:
            raise SystemExit(f"{mode} worker failed:\n{result.stderr[-3000:]}")
        return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--frames", type=int, default=32, help="latent frames of 32 x 32 tokens (32 -> 32k tokens)")
    parser.add_argument("--traffic-tokens", default=",".join(map(str, TRAFFIC_TOKENS)),
                        type=lambda text: [int(n) for n in text.split(",")])
    parser.add_argument("--worker", choices=("memory", "traffic"))
    parser.add_argument("--result")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "sequence_parallel.json"))
    args = parser.parse_args()
    if args.worker:
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
        result = memory_worker(args.frames, args.device) if args.worker == "memory" else traffic_worker(args.device, args.traffic_tokens)
        if result["rank"] == 0:
            Path(args.result).write_text(json.dumps(result))
        return

    one = run_worker("memory", 1, args)
    print(json.dumps(one), flush=True)
    two = run_worker("memory", 2, args)
    print(json.dumps(two), flush=True)
    traffic = run_worker("traffic", 2, args)["traffic"]
    print(json.dumps(traffic), flush=True)
    result = {
        "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(0),
        "model": "dit-tiny (hidden 192, 4 blocks, 3 heads, linear attention)",
        "memory": {"sp1": one, "sp2_rank0": two,
                   "step_peak_ratio_sp2_over_sp1": round(two["step_peak_mb"] / one["step_peak_mb"], 3),
                   "peak_ratio_sp2_over_sp1": round(two["peak_mb"] / one["peak_mb"], 3),
                   "target_step_peak_ratio": 0.6},
        "traffic_per_layer_sp2": {"heads": TRAFFIC_HEADS, "head_dim": TRAFFIC_HEAD_DIM, "by_tokens": traffic},
        "command": "python tools/bench/sequence_parallel.py " + " ".join(sys.argv[1:]),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
