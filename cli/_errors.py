"""The one place where failures become a line on stderr and an exit code.

    CommandError            a command could not do what was asked (``code`` is the exit code)
    spool.SpoolError        the spool cannot be opened or used: always exit 3

Exit codes of the inspection and maintenance commands (``drain`` keeps its own 0/1/2):

==  =====================================================================================
0   done
1   the command ran but could not do what was asked (unknown id, declined, cannot write)
2   usage error (bad option, bad duration, nothing selected)
3   the spool cannot be opened or used: missing, not a spool, corrupt, locked past the
    busy timeout, written by a newer spool-ship
==  =====================================================================================
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from typer.core import TyperGroup

from spool import SpoolError, SpoolOpenError

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_SPOOL",
    "EXIT_USAGE",
    "CommandError",
    "SpoolShipGroup",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_SPOOL = 3

PROG = "spool-ship"


class CommandError(Exception):
    """A command could not do what was asked; the message is one line for the operator."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


class SpoolShipGroup(TyperGroup):
    """Runs every subcommand so that spool and command errors print one line, no traceback."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except SpoolError as exc:
            message = str(exc)
            if type(exc) is SpoolOpenError and not Path(exc.path).exists():
                message += " (pass --spool PATH or set SPOOL_SHIP_PATH)"
            typer.echo(f"{PROG}: {_one_line(message)}", err=True)
            raise typer.Exit(EXIT_SPOOL) from None
        except CommandError as exc:
            typer.echo(f"{PROG}: {_one_line(str(exc))}", err=True)
            raise typer.Exit(exc.code) from None


def _one_line(text: str) -> str:
    return " ".join(text.split())
