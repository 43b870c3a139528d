"""Help screens as a person reads them: ``PATH...`` for positional files, no ``<bool>`` beside a flag.

typer 0.29 writes a required argument as ``{images}...`` in the usage line, ``<list[Path]>`` in
its type column, and ``<bool>`` beside every flag, though a flag takes no value.
:class:`ReadableCommand` keeps typer's panels and changes only those three.
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperArgument, TyperCommand

__all__ = ["ReadableCommand", "readable_help"]


class _ReadableArgument(TyperArgument):
    """An argument named by its metavar alone: the name column says what it takes."""

    def display_type_rich(self, ctx: Any) -> str | None:
        return None

    def _usage_display_name(self) -> str:
        name = self.display_name_raw
        if self.nargs != 1 and not name.endswith("..."):
            name += "..."
        return name if self.required else f"[{name}]"


class ReadableCommand(TyperCommand):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if isinstance(param, TyperArgument):
                # typer builds the argument; only how it is displayed changes.
                param.__class__ = _ReadableArgument
            elif getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)
        if option is not None:
            option.metavar = ""
        return option


def readable_help(app: typer.Typer) -> None:
    """Give every command of ``app`` registered so far the readable help (unless it names its own class)."""
    for command in app.registered_commands:
        if command.cls in {None, TyperCommand}:
            command.cls = ReadableCommand
