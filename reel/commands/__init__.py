"""The command registry: words, the command's own arguments, and the handler."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional


class NotAvailable(Exception):
    """A command whose implementation has not landed yet (exit status 3, not a user error)."""

    exit_code = 3


@dataclass(frozen=True)
class Command:
    words: tuple[str, ...]
    summary: str
    handler: Callable
    args_type: Optional[type] = None
    aliases: dict = field(default_factory=dict)  # shorthand -> config key
    doc: str = ""


def _registry() -> list[Command]:
    from reel.commands import autoencoder, convert, data, encode, evaluate, export, info, sample, train

    return [*data.COMMANDS, *encode.COMMANDS, *evaluate.COMMANDS, *autoencoder.COMMANDS, *train.COMMANDS,
            *info.COMMANDS, *sample.COMMANDS, *export.COMMANDS, *convert.COMMANDS]


COMMANDS: list[Command] = _registry()
