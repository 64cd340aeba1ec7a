"""`reel <command> [key=value ...]`: every command composes the same Hydra config tree.

Overrides are either keys of the tree (`data.height=64`, `experiment=NAME`, `model=dit-tiny`)
or the command's own arguments (listed by `reel <command> --help`). `--cfg job` prints the
resolved config and exits. Mistakes a person can fix end in one line and exit status 2.
"""
from __future__ import annotations

import dataclasses
import os
import sys
from typing import Optional, Sequence

from omegaconf import OmegaConf

from reel.commands import COMMANDS, Command, NotAvailable
from reel.errors import ReelError
from reel.runtime import tune_allocator

USAGE = """usage: reel <command> [key=value ...] [--cfg job] [--help]

commands:
{commands}

Any config key can be overridden: reel data check data.height=128 train.batch_size=4
Presets: experiment=NAME (configs/experiment/), data=folder, autoencoder=..., model=...
"""


def _command_list() -> str:
    width = max(len(" ".join(c.words)) for c in COMMANDS)
    return "\n".join(f"  reel {' '.join(c.words):<{width}}  {c.summary}" for c in COMMANDS)


def _find_command(argv: Sequence[str]) -> tuple[Optional[Command], list[str]]:
    words = [a for a in argv if "=" not in a and not a.startswith("-")]
    for cmd in sorted(COMMANDS, key=lambda c: -len(c.words)):
        if tuple(words[: len(cmd.words)]) == cmd.words:
            rest = list(argv)
            for w in cmd.words:
                rest.remove(w)
            return cmd, rest
    return None, list(argv)


def _command_help(cmd: Command) -> str:
    lines = [f"usage: reel {' '.join(cmd.words)} [key=value ...] [--cfg job]", "", cmd.summary, ""]
    if cmd.doc:
        lines += [cmd.doc.strip(), ""]
    if cmd.args_type:
        lines.append("arguments:")
        for f in dataclasses.fields(cmd.args_type):
            default = f.default if f.default is not dataclasses.MISSING else "(required)"
            if default == "???":
                default = "(required)"
            lines.append(f"  {f.name}={default}")
    if cmd.aliases:
        lines.append("shorthands:")
        lines += [f"  {k}= sets {v}" for k, v in cmd.aliases.items()]
    lines += ["", "and any config key (see `reel " + " ".join(cmd.words) + " --cfg job`)."]
    return "\n".join(lines)


def _expand_aliases(cmd: Command, overrides: list[str]) -> list[str]:
    out = []
    for item in overrides:
        key, sep, value = item.partition("=")
        out.append(f"{cmd.aliases[key]}={value}" if sep and key in cmd.aliases else item)
    return out


def run(argv: Sequence[str]) -> int:
    from reel.config.compose import load_config

    # the DeepSpeed launcher appends --local_rank=N; the rank comes from the environment instead
    argv = [a for a in argv if not a.startswith("--local_rank")]
    show_help = any(a in ("-h", "--help") for a in argv)
    print_cfg = "--cfg" in argv
    if print_cfg:
        i = argv.index("--cfg")
        del argv[i : i + 2 if i + 1 < len(argv) and argv[i + 1] in ("job", "all") else i + 1]
    argv = [a for a in argv if a not in ("-h", "--help")]
    cmd, overrides = _find_command(argv)
    if cmd is None:
        if show_help or not argv:
            print(USAGE.format(commands=_command_list()))
            return 0
        raise ReelError(f"unknown command '{' '.join(a for a in argv if '=' not in a)}' (see `reel --help`)")
    stray = [a for a in overrides if "=" not in a]
    if stray:
        raise ReelError(f"reel {' '.join(cmd.words)}: unexpected '{stray[0]}' (arguments are key=value)")
    if show_help:
        print(_command_help(cmd))
        return 0
    cfg, args = load_config(_expand_aliases(cmd, overrides), cmd.args_type, " ".join(cmd.words))
    if print_cfg:
        print(OmegaConf.to_yaml(cfg), end="")
        if args is not None:
            print(OmegaConf.to_yaml({"args": dataclasses.asdict(args)}), end="")
        return 0
    return cmd.handler(cfg, args) or 0


def main(argv: Optional[Sequence[str]] = None) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    tune_allocator()  # large tensors reuse heap memory instead of fresh pages (reel/runtime.py)
    try:
        code = run(sys.argv[1:] if argv is None else argv)
    except ReelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = exc.exit_code
    except NotAvailable as exc:
        print(f"not available yet: {exc}", file=sys.stderr)
        code = NotAvailable.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    main()
