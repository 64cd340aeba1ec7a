"""Autoencoder benchmark: reel's DC-AE-V against diffusers' AutoencoderKLWan, in one run.

Writes benchmarks/autoencoder.json:
- encode and decode seconds and peak memory of dc-ae-v-f32t4c32 and AutoencoderKLWan (its default
  configuration, random weights) on the same clip (default 17x256x256), as ratios;
- latent tokens per clip for both;
- peak memory of reel's streamed decoding at 17, 65 and 129 frames, and the growth 17 -> 129.

Each measurement runs in a fresh process, so peak memory (RSS on CPU, max allocated on CUDA) is
that operation's own. Usage: python tools/bench/autoencoder.py [--device cpu|cuda] [--size 256]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from device_stats import peak_mb, sync

ROOT = Path(__file__).resolve().parents[2]



def _reel_model(name: str, device: str):
    from reel.autoencoders import build_autoencoder
    from reel.config import load_config

    cfg, _ = load_config([f"autoencoder={name}"], validate=False)
    return build_autoencoder(cfg.autoencoder).to(device).eval()


def _wan_model(device: str):
    from diffusers import AutoencoderKLWan

    return AutoencoderKLWan().to(device).eval()


def measure_one(kind: str, op: str, frames: int, size: int, device: str, stream_model: str) -> dict:
    """Runs in a child process: build, warm up nothing heavy, time one op, report its peak memory."""
    torch.manual_seed(0)
    latent_frames = 1 + (frames - 1) // 4
    with torch.no_grad():
        if kind == "wan":
            model = _wan_model(device)
            factor, channels = 8, model.config.z_dim
        else:
            model = _reel_model(stream_model if op == "stream_decode" else "dc-ae-v-f32t4c32", device)
            factor, channels = model.spatial_factor, model.latent_channels
        # inputs are made directly (a decode never runs an encode first), so the peak is the op's own
        clip = torch.rand(1, 3, frames, size, size, device=device) * 2 - 1 if op == "encode" else None
        latent = torch.randn(1, channels, latent_frames, size // factor, size // factor, device=device)
        if kind == "wan":
            run = (lambda: model.encode(clip).latent_dist.mode()) if op == "encode" else (lambda: model.decode(latent).sample)
        elif op == "encode":
            run = lambda: model.encode(clip)  # noqa: E731
        else:
            run = lambda: model.decode(latent, chunked=op == "stream_decode")  # noqa: E731
        sync(device)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        before = peak_mb(device)
        start = time.perf_counter()
        out = run()
        sync(device)
        seconds = time.perf_counter() - start
    shape = list(out.shape)
    return {"kind": kind, "op": op, "frames": frames, "size": size, "seconds": round(seconds, 3),
            "peak_mb": round(peak_mb(device), 1), "peak_mb_before_op": round(before, 1), "output_shape": shape}


def _child(kind: str, op: str, frames: int, size: int, device: str, stream_model: str) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, op, str(frames), str(size), "--device", device,
           "--stream-model", stream_model]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if result.returncode:
        raise RuntimeError(f"{kind} {op} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--stream-model", default="dc-ae-v-f32t4c32")
    parser.add_argument("--stream-size", type=int, default=128)
    parser.add_argument("--child", nargs=4, metavar=("KIND", "OP", "FRAMES", "SIZE"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "autoencoder.json"))
    args = parser.parse_args()
    if args.child:
        kind, op, frames, size = args.child
        print(json.dumps(measure_one(kind, op, int(frames), int(size), args.device, args.stream_model)))
        return

    rows = {}
    for kind in ("reel", "wan"):
        for op in ("encode", "decode"):
            rows[f"{kind}_{op}"] = _child(kind, op, args.frames, args.size, args.device, args.stream_model)
            print(json.dumps(rows[f"{kind}_{op}"]), flush=True)
    stream = {}
    for frames in (17, 65, 129):
        stream[frames] = _child("reel", "stream_decode", frames, args.stream_size, args.device, args.stream_model)
        print(json.dumps(stream[frames]), flush=True)

    latent_t = 1 + (args.frames - 1) // 4
    result = {
        "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(0),
        "threads": torch.get_num_threads(),
        "clip": f"{args.frames}x{args.size}x{args.size}",
        "reel_model": "dc-ae-v-f32t4c32", "peer": "diffusers AutoencoderKLWan() default, random weights",
        "measurements": rows,
        "ratios_reel_over_wan": {
            op: {"seconds": round(rows[f"reel_{op}"]["seconds"] / rows[f"wan_{op}"]["seconds"], 3),
                 "op_peak_mb": round((rows[f"reel_{op}"]["peak_mb"] - rows[f"reel_{op}"]["peak_mb_before_op"])
                                     / max(rows[f"wan_{op}"]["peak_mb"] - rows[f"wan_{op}"]["peak_mb_before_op"], 1e-6), 3)}
            for op in ("encode", "decode")},
        "latent_tokens_per_clip": {"reel_f32t4": latent_t * (args.size // 32) ** 2,
                                   "wan_f8t4": latent_t * (args.size // 8) ** 2},
        "streamed_decode": {"model": args.stream_model, "size": args.stream_size,
                            "peak_mb": {f: stream[f]["peak_mb"] for f in stream},
                            "growth_17_to_129": round(stream[129]["peak_mb"] / stream[17]["peak_mb"], 3)},
        "command": "python tools/bench/autoencoder.py " + " ".join(sys.argv[1:]),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["ratios_reel_over_wan"]), json.dumps(result["streamed_decode"]))


if __name__ == "__main__":
    main()
