"""cli: the ``spool-ship`` command line (typer). Thin: parses, calls the spool, renders.

>>> from cli import app  # a typer app; ``spool-ship --help`` lists its commands
"""

from __future__ import annotations

from .app import app, main

__all__ = ["app", "main"]
