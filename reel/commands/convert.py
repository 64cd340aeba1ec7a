"""`reel convert`: diffusers SANA-Video / Wan transformer folders <-> reel DiT folders (reel/interop)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from reel.commands import Command
from reel.errors import ReelError

FORMATS = ("diffusers",)


@dataclass
class ConvertArgs:
    source_format: Optional[str] = None  # from=diffusers: a diffusers folder -> a reel DiT folder
    to: Optional[str] = None  # to=diffusers: a reel DiT folder -> a diffusers folder
    kind: Optional[str] = None  # with from=: sana_video (SanaVideoTransformer3DModel) | wan (WanTransformer3DModel)
    src: Optional[str] = None  # with from=: the diffusers model folder (config.json + safetensors)
    checkpoint: Optional[str] = None  # with to=: the reel DiT folder
    out: Optional[str] = None
    vae: Optional[str] = None  # with from=: the diffusers autoencoder folder its latents come from (recorded)
    text_encoder_path: Optional[str] = None  # with from=: the local text encoder folder its captions need


def _check_format(key: str, value: str) -> None:
    if value not in FORMATS:
        raise ReelError(f"{key}={value}: must be one of {', '.join(FORMATS)}")


def convert_command(cfg, args: ConvertArgs) -> int:
    from reel.interop.diffusers_dit import CLASSES, convert_from_diffusers, convert_to_diffusers

    if (args.source_format is None) == (args.to is None):
        raise ReelError("reel convert needs from=diffusers (with kind=, src=, out=) or to=diffusers "
                        "(with checkpoint=, out=)")
    if not args.out:
        raise ReelError("reel convert: missing required argument out=DIR")
    if args.source_format is not None:
        _check_format("from", args.source_format)
        if not args.kind or not args.src:
            raise ReelError(f"reel convert from={args.source_format} needs kind=({'|'.join(CLASSES)}) and src=DIR")
        source = args.src
    else:
        _check_format("to", args.to)
        if not args.checkpoint:
            raise ReelError(f"reel convert to={args.to} needs checkpoint=DIR (a reel DiT folder)")
        source = args.checkpoint
    if Path(source).resolve() == Path(args.out).resolve():
        raise ReelError(f"out={args.out}: must differ from the folder converted")
    if args.source_format is not None:
        out = convert_from_diffusers(args.kind, args.src, args.out, vae=args.vae,
                                     text_encoder=args.text_encoder_path)
        summary = {"out": str(out), "from": args.source_format, "kind": args.kind, "src": args.src}
    else:
        out = convert_to_diffusers(args.checkpoint, args.out)
        class_name = json.loads((out / "config.json").read_text())["_class_name"]
        summary = {"out": str(out), "to": args.to, "class": class_name, "checkpoint": args.checkpoint}
    print(json.dumps({**summary, "files": sorted(p.name for p in out.iterdir())}))
    return 0


COMMANDS = [
    Command(("convert",), "convert diffusers SANA-Video / Wan transformers to reel DiT folders and back",
            convert_command, ConvertArgs, aliases={"from": "source_format"},
            doc="Examples:\n"
                "  reel convert from=diffusers kind=sana_video src=SanaVideo/transformer out=dits/sana-video\n"
                "  reel convert from=diffusers kind=wan src=Wan2.1-T2V-1.3B/transformer out=dits/wan\n"
                "  reel convert to=diffusers checkpoint=dits/wan out=wan-transformer\n"
                "With from=, vae=DIR (a diffusers AutoencoderKLWan folder) and text_encoder_path=DIR (a local "
                "transformers encoder: Gemma-2 for SANA-Video, umT5 for Wan) are checked against the transformer "
                "(latent channels, embedding width) and recorded in its config.yaml, so reel sample can use it.\n"
                "from=diffusers reads a SanaVideoTransformer3DModel (kind=sana_video) or WanTransformer3DModel "
                "(kind=wan) folder, one safetensors file or shards with an index, and writes a DiT folder whose "
                "output at time t equals the diffusers model's at timestep 1000 t. Every tensor must find its "
                "place: a left-over or missing one, or a config option reel's DiT does not have, is an error "
                "naming it. to=diffusers writes config.json + diffusion_pytorch_model.safetensors for a DiT whose "
                "options map onto one of the two classes; converting a converted folder back gives its tensors "
                "exactly. The folder names the latent space (Wan 2.1 VAE) and text encoder (SANA-Video: "
                "Gemma-2 2B, 2304-d; Wan: umT5-XXL, 4096-d) the weights expect, neither of which reel loads."),
]
