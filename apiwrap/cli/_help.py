"""Help screens as a person reads them: ``PATH...`` for positional files, no ``<bool>`` beside a flag.

typer 0.29 writes a required argument as ``{images}...`` in the usage line, ``<list[Path]>`` in
its type column, ``<bool>`` beside every flag, though a flag takes no value, and keeps the line
breaks of a docstring. :class:`ReadableCommand` keeps typer's panels and changes only those.
"""

from __future__ import annotations

import inspect
from typing import Any

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup

__all__ = ["ReadableCommand", "ReadableGroup", "readable_help"]


class _ReadableArgument(TyperArgument):
    """An argument named by its metavar alone: the name column says what it takes."""

    def display_type_rich(self, ctx: Any) -> str | None:
        return None

    def _usage_display_name(self) -> str:
        name = self.display_name_raw
        if self.nargs != 1 and not name.endswith("..."):
            name += "..."
        return name if self.required else f"[{name}]"


def _readable(params: list[Any]) -> None:
    for param in params:
        if isinstance(param, TyperArgument):
            # typer builds the argument; only how it is displayed changes.
            param.__class__ = _ReadableArgument
        elif getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""


class ReadableCommand(TyperCommand):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.help:
            # A docstring's line breaks are the source's, not the screen's: paragraphs reflow.
            paragraphs = inspect.cleandoc(self.help).split("\n\n")
            self.help = "\n\n".join(" ".join(paragraph.split()) for paragraph in paragraphs)

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)  # with --help, which click adds here
        _readable(params)
        return params


class ReadableGroup(TyperGroup):
    """The ``apiwrap`` command itself: its flags (``--version``, ``--help``) shown without ``<bool>``."""

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)
        _readable(params)
        return params


def readable_help(app: typer.Typer) -> None:
    """Give every command of ``app`` registered so far the readable help (unless it names its own class)."""
    for command in app.registered_commands:
        if command.cls in {None, TyperCommand}:
            command.cls = ReadableCommand
