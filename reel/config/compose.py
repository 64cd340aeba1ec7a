"""Compose the Hydra config tree under configs/ with `key=value` overrides.

A command line mixes two kinds of overrides: keys of the config tree (`data.height=64`,
`experiment=NAME`, `model=dit-tiny`) and arguments of the command itself (`out_dir=DIR`).
Arguments are the fields of the command's own dataclass; everything else goes to Hydra,
which composes configs/reel.yaml on top of the structured schema in reel/config/schema.py.
"""
from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any, Optional, Sequence

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from reel.config.schema import ReelConfig
from reel.errors import ReelError

_SCHEMA_NAME = "reel_schema"


def config_dir() -> Path:
    """The configs/ tree: $REEL_CONFIG_DIR, else the one beside the reel package."""
    env = os.environ.get("REEL_CONFIG_DIR")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "configs"
    if not (path / "reel.yaml").is_file():
        raise ReelError(f"config tree not found: {path}/reel.yaml (set REEL_CONFIG_DIR)")
    return path


def _override_key(override: str) -> str:
    if "=" not in override:
        raise ReelError(f"override '{override}' must be key=value")
    return override.split("=", 1)[0].lstrip("+~")


def split_overrides(overrides: Sequence[str], args_type: Optional[type]) -> tuple[list[str], list[str]]:
    """Separate the command's own arguments from config-tree overrides."""
    arg_names = {f.name for f in dataclasses.fields(args_type)} if args_type else set()
    args, tree = [], []
    for item in overrides:
        key = _override_key(item)
        (args if key.split(".")[0] in arg_names else tree).append(item)
    return args, tree


def _one_line(exc: BaseException) -> str:
    """The most specific line of a Hydra/OmegaConf error, with the key it names."""
    chain = []
    while exc is not None:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    for e in reversed(chain):  # the root cause names the key most precisely
        if isinstance(e, OmegaConfBaseException) and getattr(e, "full_key", None):
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            return f"{e.full_key}: {first}"
    return str(chain[0]).strip().splitlines()[0]


def _presets(group: str) -> str:
    names = sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))
    return ", ".join(names) or "none"


def _explain_override_error(message: str) -> str:
    unknown = re.match(r"^([\w.\[\]]+): Key '(\w+)' not in '(\w+)'", message)
    if unknown:
        return f"{unknown.group(1)}: unknown key (not in the {unknown.group(3)} schema)"
    if "Could not override" in message:
        key = message.split("'")[1] if "'" in message else message
        return f"{key}: unknown key (not in the config schema)"
    missing = re.search(r"Could not find '(\w+)/([^']+)'", message)
    if missing:
        group, name = missing.groups()
        return f"{group}={name}: no such preset in configs/{group}/ (available: {_presets(group)})"
    return message


def compose_tree(overrides: Sequence[str]) -> DictConfig:
    """Compose configs/reel.yaml with Hydra overrides onto the structured schema."""
    from hydra import compose, initialize_config_dir
    from hydra.core.config_store import ConfigStore
    from hydra.core.global_hydra import GlobalHydra

    ConfigStore.instance().store(name=_SCHEMA_NAME, node=ReelConfig)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
            cfg = compose(config_name="reel", overrides=list(overrides))
        missing = sorted(OmegaConf.missing_keys(cfg))
        if missing:
            raise ReelError(f"{missing[0]}: required, give it as {missing[0]}=...")
        # Re-merging a plain copy onto a strict schema catches keys appended with `+key=`.
        strict = OmegaConf.structured(ReelConfig)
        cfg = OmegaConf.merge(strict, OmegaConf.create(OmegaConf.to_container(cfg)))
    except ReelError:
        raise
    except Exception as exc:  # Hydra and OmegaConf errors are many classes; all are config mistakes
        raise ReelError(_explain_override_error(_one_line(exc))) from None
    experiments = [o.split("=", 1)[1] for o in overrides if _override_key(o) == "experiment"]
    if experiments:
        cfg.experiment = experiments[-1]
    OmegaConf.set_struct(cfg, True)
    return cfg


def parse_args(args_type: type, overrides: Sequence[str], command: str) -> Any:
    """Typed command arguments from `key=value` strings."""
    base = OmegaConf.structured(args_type)
    try:
        given = OmegaConf.from_dotlist(list(overrides))
        merged = OmegaConf.merge(base, given)
    except Exception as exc:
        raise ReelError(f"reel {command}: {_one_line(exc)}") from None
    missing = sorted(OmegaConf.missing_keys(merged))
    if missing:
        raise ReelError(f"reel {command}: missing required argument {missing[0]}=...")
    return OmegaConf.to_object(merged)


def load_config(overrides: Sequence[str] = (), args_type: Optional[type] = None,
                command: str = "", validate: bool = True) -> tuple[DictConfig, Any]:
    """Compose and validate the config tree, and parse the command's own arguments."""
    from reel.config.validate import validate_config

    arg_overrides, tree_overrides = split_overrides(overrides, args_type)
    cfg = compose_tree(tree_overrides)
    args = parse_args(args_type, arg_overrides, command) if args_type else None
    if validate:
        validate_config(cfg)
    return cfg, args
