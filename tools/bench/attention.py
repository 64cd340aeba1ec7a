"""Attention benchmark: forward + backward of each self-attention kind at growing token counts.

Writes benchmarks/attention.json: seconds and peak memory of reel's `linear` (ReLU linear attention
with 3D RoPE), `softmax` (SDPA with 3D RoPE) and `sparse` (3D sliding-tile, gather backend, the
model's default tile (1, 2, 2) and window (3, 3, 3)) cores at 1k, 4k, 16k and 64k tokens, 8 heads of
64 channels, batch 1, plus the ratios the DiT issue asks for:
- softmax / linear and softmax / sparse time at each size;
- linear's time per token, growth per doubling of tokens past 4k (1.0 is exactly linear).

Each (kind, size) runs in a fresh process so its peak memory (RSS on CPU, max allocated on CUDA)
is its own. Usage: python tools/bench/attention.py [--device cpu|cuda] [--sizes 1024,4096,16384,65536]
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import torch

from device_stats import peak_mb, sync

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
GRIDS = {1024: (4, 16, 16), 4096: (4, 32, 32), 16384: (16, 32, 32), 65536: (16, 64, 64),
         262144: (64, 64, 64)}
KINDS = ("linear", "softmax", "sparse")




def measure(kind: str, tokens: int, device: str, heads: int, head_dim: int, repeats: int) -> dict:
    from reel.models.attention import make_attention_core
    from reel.models.rope import Rope3D
    from reel.models.tokens import TokenGrid

    torch.manual_seed(0)
    frames, height, width = GRIDS[tokens]
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    core = make_attention_core(kind).to(device)
    grid = TokenGrid(frames, height, width, rope=Rope3D(head_dim), device=torch.device(device))
    q, k, v = (torch.randn(1, heads, tokens, head_dim, device=device, dtype=dtype, requires_grad=True)
               for _ in range(3))
    grad = torch.randn(1, heads, tokens, head_dim, device=device, dtype=dtype)

    def step() -> float:
        for x in (q, k, v):
            x.grad = None
        sync(device)
        start = time.perf_counter()
        core(q, k, v, grid).backward(grad)
        sync(device)
        return time.perf_counter() - start

    if device == "cuda":
        step()  # kernels and caches warm
        torch.cuda.reset_peak_memory_stats()
    before = peak_mb(device)
    times = [step() for _ in range(repeats)]
    return {"kind": kind, "tokens": tokens, "grid": [frames, height, width], "seconds": round(min(times), 4),
            "all_seconds": [round(t, 4) for t in times], "peak_mb": round(peak_mb(device), 1),
            "op_peak_mb": round(peak_mb(device) - before, 1), "dtype": str(dtype).replace("torch.", "")}


def _child(kind: str, tokens: int, args) -> dict:
    repeats = args.repeats if kind != "softmax" or tokens <= 16384 else 1  # one quadratic run at 64k is minutes on CPU
    cmd = [sys.executable, __file__, "--child", kind, str(tokens), "--device", args.device,
           "--heads", str(args.heads), "--head-dim", str(args.head_dim), "--repeats", str(repeats)]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if result.returncode:
        return {"kind": kind, "tokens": tokens, "error": result.stderr.strip().splitlines()[-1][-300:]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def _summary(rows: dict, sizes: list[int]) -> dict:
    def seconds(kind, n):
        return rows.get(f"{kind}_{n}", {}).get("seconds")

    speedups = {}
    for n in sizes:
        soft, lin, sparse = seconds("softmax", n), seconds("linear", n), seconds("sparse", n)
        speedups[str(n)] = {"softmax_over_linear": round(soft / lin, 2) if soft and lin else None,
                            "softmax_over_sparse": round(soft / sparse, 2) if soft and sparse else None}
    growth = {}
    past = [n for n in sizes if n >= 4096 and seconds("linear", n)]
    for small, large in zip(past, past[1:]):
        per_token = (seconds("linear", large) / large) / (seconds("linear", small) / small)
        growth[f"{small}->{large}"] = round(per_token ** (1 / math.log2(large / small)), 3)
    return {"speedup": speedups, "linear_time_per_token_growth_per_doubling": growth}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", default="1024,4096,16384,65536")
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", nargs=2, metavar=("KIND", "TOKENS"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "attention.json"))
    args = parser.parse_args()
    if args.child:
        kind, tokens = args.child
        print(json.dumps(measure(kind, int(tokens), args.device, args.heads, args.head_dim, args.repeats)))
        return

    sizes = [int(s) for s in args.sizes.split(",")]
    unknown = [n for n in sizes if n not in GRIDS]
    if unknown:
        parser.error(f"--sizes: no grid for {unknown}; choose from {sorted(GRIDS)}")
    rows = {}
    for n in sizes:
        for kind in args.kinds.split(","):
            rows[f"{kind}_{n}"] = _child(kind, n, args)
            print(json.dumps(rows[f"{kind}_{n}"]), flush=True)
    result = {
        "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(0),
        "threads": torch.get_num_threads(), "heads": args.heads, "head_dim": args.head_dim, "batch": 1,
        "what": "forward + backward of the attention core (RoPE included, projections excluded), min over repeats",
        "sparse": {"tile": [1, 2, 2], "window": [3, 3, 3], "backend": "gather"},
        "measurements": rows, **_summary(rows, sizes),
        "command": "python tools/bench/attention.py " + " ".join(sys.argv[1:]),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("speedup", "linear_time_per_token_growth_per_doubling")}))


if __name__ == "__main__":
    main()
