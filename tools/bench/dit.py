"""DiT training-step benchmark: reel's DiT against diffusers' SanaVideoTransformer3DModel and
WanTransformer3DModel with the same width, depth, heads, patch and latent shape, random weights.

Writes benchmarks/dit.json: seconds and peak memory of one training step (forward, MSE backward,
AdamW step; min over repeats after a warm-up step) at about 4k and 16k tokens, and the ratios
reel / peer. Shapes: hidden 384 (6 heads x 64), 4 layers, 16 latent channels, patch (1, 2, 2),
text 32 tokens of width 384, mlp ratio 2.5; latents 16 x T x 64 x 64 (T = 4 and 16).
Each (model, size) runs in a fresh process, so its peak memory (RSS on CPU, max allocated on CUDA)
is its own; step_peak_mb is what the training steps add on top of the built model, optimizer and
inputs (on CPU the process's RSS before the first step is subtracted).
Usage: python tools/bench/dit.py [--device cpu|cuda] [--frames 4,16] [--attention linear]
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
sys.path.insert(0, str(ROOT))
HEADS, HEAD_DIM, LAYERS, CHANNELS, TEXT_DIM, TEXT_TOKENS, SIZE = 6, 64, 4, 16, 384, 32, 64
MODELS = ("reel", "sana_video", "wan")




def build(name: str, attention: str, recompute: str = "attention"):
    """(model, forward(latents, t, text, mask) -> prediction)."""
    if name == "reel":
        from reel.config.schema import ModelConfig
        from reel.models.dit import build_dit

        cfg = ModelConfig(name="bench", hidden_size=HEADS * HEAD_DIM, depth=LAYERS, num_heads=HEADS, mlp_ratio=2.5,
                          patch_size=[1, 2, 2], attention=attention, recompute_activations=recompute)
        model = build_dit(cfg, CHANNELS, TEXT_DIM)
        return model, lambda x, t, text, mask: model(x, t, text, mask)
    if name == "sana_video":
        from diffusers import SanaVideoTransformer3DModel

        model = SanaVideoTransformer3DModel(
            in_channels=CHANNELS, out_channels=CHANNELS, num_attention_heads=HEADS, attention_head_dim=HEAD_DIM,
            num_layers=LAYERS, num_cross_attention_heads=HEADS, cross_attention_head_dim=HEAD_DIM,
            cross_attention_dim=HEADS * HEAD_DIM, caption_channels=TEXT_DIM, mlp_ratio=2.5, patch_size=(1, 2, 2))
        return model, lambda x, t, text, mask: model(x, text, t * 1000, encoder_attention_mask=mask.long(),
                                                     return_dict=False)[0]
    if name == "wan":
        from diffusers import WanTransformer3DModel

        model = WanTransformer3DModel(
            patch_size=(1, 2, 2), num_attention_heads=HEADS, attention_head_dim=HEAD_DIM, in_channels=CHANNELS,
            out_channels=CHANNELS, text_dim=TEXT_DIM, freq_dim=256, ffn_dim=4 * HEADS * HEAD_DIM, num_layers=LAYERS,
            cross_attn_norm=True, qk_norm="rms_norm_across_heads")
        return model, lambda x, t, text, mask: model(x, t * 1000, text, return_dict=False)[0]
    raise ValueError(name)


def measure(name: str, frames: int, device: str, attention: str, repeats: int) -> dict:
    torch.manual_seed(0)
    name, _, recompute = name.partition(":")
    model, forward = build(name, attention, recompute or "attention")
    model = model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    latents = torch.randn(1, CHANNELS, frames, SIZE, SIZE, device=device)
    target = torch.randn_like(latents)
    t = torch.rand(1, device=device)
    text = torch.randn(1, TEXT_TOKENS, TEXT_DIM, device=device)
    mask = torch.ones(1, TEXT_TOKENS, dtype=torch.bool, device=device)
    mask[:, 12:] = False
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda")

    def step() -> float:
        sync(device)
        start = time.perf_counter()
        with autocast:
            loss = torch.nn.functional.mse_loss(forward(latents, t, text, mask).float(), target)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync(device)
        return time.perf_counter() - start

    before = peak_mb(device)  # the process with its model, optimizer and inputs, before any step
    warm = step()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = [step() for _ in range(repeats)]
    return {"model": name + (f" (recompute {recompute})" if recompute else ""), "frames": frames,
            "tokens": frames * (SIZE // 2) ** 2,
            "params": sum(p.numel() for p in model.parameters()), "seconds": round(min(times), 3),
            "all_seconds": [round(x, 3) for x in times], "warmup_seconds": round(warm, 3),
            "peak_mb": round(peak_mb(device), 1), "step_peak_mb": round(peak_mb(device) - before, 1)}


def _child(name: str, frames: int, args) -> dict:
    cmd = [sys.executable, __file__, "--child", name, str(frames), "--device", args.device,
           "--attention", args.attention, "--repeats", str(args.repeats)]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if result.returncode:
        return {"model": name, "frames": frames, "error": result.stderr.strip().splitlines()[-1][-300:]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--frames", default="4,16")
    parser.add_argument("--attention", default="linear", help="reel's self-attention kind (SANA-Video: linear)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--recompute", default="attention,all", help="reel's model.recompute_activations settings")
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "FRAMES"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "dit.json"))
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[0], int(args.child[1]), args.device, args.attention, args.repeats)))
        return

    rows, ratios = {}, {}
    variants = [f"reel:{r}" for r in args.recompute.split(",")]
    for frames in (int(f) for f in args.frames.split(",")):
        for name in [*variants, *MODELS[1:]]:
            rows[f"{name}_{frames}"] = _child(name, frames, args)
            print(json.dumps(rows[f"{name}_{frames}"]), flush=True)
        tokens = frames * (SIZE // 2) ** 2
        ratios[str(tokens)] = {}
        for variant in variants:
            reel = rows[f"{variant}_{frames}"]
            for peer in MODELS[1:]:
                other = rows[f"{peer}_{frames}"]
                if "seconds" in reel and "seconds" in other:
                    ratios[str(tokens)][f"{variant}_over_{peer}"] = {
                        "seconds": round(reel["seconds"] / other["seconds"], 3),
                        "peak_mb": round(reel["peak_mb"] / other["peak_mb"], 3),
                        "step_peak_mb": round(reel["step_peak_mb"] / other["step_peak_mb"], 3)}
    result = {
        "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(0),
        "threads": torch.get_num_threads(),
        "shape": {"hidden": HEADS * HEAD_DIM, "heads": HEADS, "layers": LAYERS, "latent_channels": CHANNELS,
                  "patch": [1, 2, 2], "latent_hw": SIZE, "text_tokens": TEXT_TOKENS, "text_dim": TEXT_DIM},
        "reel_attention": args.attention, "reel_recompute": args.recompute.split(","),
        "what": "one training step: forward, MSE backward, AdamW step; min over repeats after one warm-up step",
        "measurements": rows, "ratios": ratios,
        "command": "python tools/bench/dit.py " + " ".join(sys.argv[1:]),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(ratios))


if __name__ == "__main__":
    main()
