"""A converted DiT against its diffusers original: one training step and one sampling step each.

For SANA-Video and Wan at one small configuration (hidden 384 = 6 heads x 64, 4 layers, 16 latent
channels, patch (1, 2, 2), latents 16 x 4 x 64 x 64 -> 4,096 tokens, 32 text tokens of width 384),
random weights: the diffusers model is saved, converted with `reel convert`'s code, and both are
timed in fresh processes (peak memory is each process's own: RSS on CPU, max allocated on CUDA).
Training step: forward, MSE backward, AdamW step. Sampling step: one guided forward (batch 2).
Writes benchmarks/interop.json with reel / diffusers ratios.
Usage: python tools/bench/interop.py [--device cpu|cuda] [--repeats 2]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from device_stats import peak_mb, sync

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
HEADS, HEAD_DIM, LAYERS, CHANNELS, TEXT_DIM, TEXT_TOKENS, FRAMES, SIZE = 6, 64, 4, 16, 384, 32, 4, 64
CONFIGS = {
    "sana_video": dict(in_channels=CHANNELS, out_channels=CHANNELS, num_attention_heads=HEADS,
                       attention_head_dim=HEAD_DIM, num_layers=LAYERS, num_cross_attention_heads=HEADS,
                       cross_attention_head_dim=HEAD_DIM, cross_attention_dim=HEADS * HEAD_DIM,
                       caption_channels=TEXT_DIM, mlp_ratio=2.5, patch_size=(1, 2, 2)),
    "wan": dict(patch_size=(1, 2, 2), num_attention_heads=HEADS, attention_head_dim=HEAD_DIM, in_channels=CHANNELS,
                out_channels=CHANNELS, text_dim=TEXT_DIM, freq_dim=256, ffn_dim=4 * HEADS * HEAD_DIM,
                num_layers=LAYERS, cross_attn_norm=True, qk_norm="rms_norm_across_heads"),
}


def prepare(kind: str, folder: Path) -> None:
    from diffusers import SanaVideoTransformer3DModel, WanTransformer3DModel

    from reel.interop.diffusers_dit import convert_from_diffusers

    torch.manual_seed(0)
    cls = SanaVideoTransformer3DModel if kind == "sana_video" else WanTransformer3DModel
    cls(**CONFIGS[kind]).save_pretrained(folder / "diffusers")
    convert_from_diffusers(kind, folder / "diffusers", folder / "reel")


def measure(kind: str, side: str, folder: Path, device: str, repeats: int) -> dict:
    torch.manual_seed(0)
    if side == "reel":
        from reel.models.dit_checkpoint import load_dit

        model = load_dit(folder / "reel", device)[0]

        def forward(x, t, text, mask):
            return model(x, t, text, mask if kind == "sana_video" else None)
    else:
        from diffusers import SanaVideoTransformer3DModel, WanTransformer3DModel

        cls = SanaVideoTransformer3DModel if kind == "sana_video" else WanTransformer3DModel
        cls._keep_in_fp32_modules = None  # its fp32-module path needs accelerate, which is not installed
        model = cls.from_pretrained(folder / "diffusers").to(device)

        def forward(x, t, text, mask):
            if kind == "wan":
                return model(x, t * 1000, text, return_dict=False)[0]
            return model(x, text, t * 1000, encoder_attention_mask=mask.float(), return_dict=False)[0]
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(1, CHANNELS, FRAMES, SIZE, SIZE, device=device)
    target, t = torch.randn_like(x), torch.rand(1, device=device)
    text = torch.randn(1, TEXT_TOKENS, TEXT_DIM, device=device)
    mask = torch.ones(1, TEXT_TOKENS, dtype=torch.bool, device=device)

    def train_step() -> float:
        sync(device)
        start = time.perf_counter()
        torch.nn.functional.mse_loss(forward(x, t, text, mask), target).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync(device)
        return time.perf_counter() - start

    @torch.no_grad()
    def sample_step() -> float:
        sync(device)
        start = time.perf_counter()
        forward(x.repeat(2, 1, 1, 1, 1), t.repeat(2), text.repeat(2, 1, 1), mask.repeat(2, 1))
        sync(device)
        return time.perf_counter() - start

    train_step()
    train = min(train_step() for _ in range(repeats))
    model.eval()
    sample_step()
    sample = min(sample_step() for _ in range(repeats))
    return {"kind": kind, "side": side, "train_step_s": round(train, 4), "sample_step_s": round(sample, 4),
            "peak_mb": round(peak_mb(device), 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--child", nargs=3, metavar=("KIND", "SIDE", "FOLDER"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "interop.json"))
    args = parser.parse_args()
    if args.child:
        kind, side, folder = args.child
        print(json.dumps(measure(kind, side, Path(folder), args.device, args.repeats)))
        return
    rows, ratios = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in CONFIGS:
            folder = Path(tmp) / kind
            prepare(kind, folder)
            for side in ("reel", "diffusers"):
                result = subprocess.run([sys.executable, __file__, "--child", kind, side, str(folder), "--device",
                                         args.device, "--repeats", str(args.repeats)], capture_output=True, text=True,
                                        cwd=ROOT)
                if result.returncode:
                    raise SystemExit(result.stderr[-3000:])
                rows[f"{kind}_{side}"] = json.loads(result.stdout.strip().splitlines()[-1])
                print(json.dumps(rows[f"{kind}_{side}"]), flush=True)
            ours, theirs = rows[f"{kind}_reel"], rows[f"{kind}_diffusers"]
            ratios[kind] = {key: round(ours[key] / theirs[key], 3) for key in ("train_step_s", "sample_step_s",
                                                                              "peak_mb")}
    result = {"device": args.device if args.device == "cpu" else torch.cuda.get_device_name(0),
              "shape": {"hidden": HEADS * HEAD_DIM, "heads": HEADS, "layers": LAYERS, "latents": [CHANNELS, FRAMES,
                        SIZE, SIZE], "patch": [1, 2, 2], "tokens": FRAMES * (SIZE // 2) ** 2,
                        "text": [TEXT_TOKENS, TEXT_DIM]},
              "measurements": rows, "ratios_reel_over_diffusers": ratios,
              "command": "python tools/bench/interop.py " + " ".join(sys.argv[1:])}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(ratios))


if __name__ == "__main__":
    main()
