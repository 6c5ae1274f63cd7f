"""The `detnas` command line: a thin typer layer, one module per command group, over the Python API."""

from detnas.cli.main import app, main

__all__ = ["app", "main"]
