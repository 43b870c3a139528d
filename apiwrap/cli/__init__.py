"""The ``apiwrap`` command line (typer + rich): one module a command group, heavy imports deferred."""

from apiwrap.cli.main import app

__all__ = ["app"]
