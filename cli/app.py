"""The ``spool-ship`` command line: a typer app whose commands parse, call the spool, render.

Inspection (``status``, ``stuck``, ``show``, ``export``) lives in :mod:`cli.inspect`,
``config`` in :mod:`cli.settings`, maintenance (``retry``, ``purge``, ``doctor``) in
:mod:`cli.maintain`, ``import`` in :mod:`cli.importer`. Shipping commands
(``drain``, ``run``, ``demo``) are registered here too, from their own module.

A command's module is imported when that command runs (or shows its help): ``status`` does
not pay for the imports of ``run``, ``demo`` or ``doctor`` (issue 13; docs/performance.md).
"""

from __future__ import annotations

import importlib
from typing import Annotated, Any

import typer
from typer.main import get_command

from ._errors import SpoolShipGroup

__all__ = ["app", "main"]

# Every command, in the order ``--help`` lists them: name -> (module in cli, function).
COMMANDS: dict[str, tuple[str, str]] = {
    # Shipping.
    "drain": ("ship", "drain"),
    "run": ("ship", "run"),
    "demo": ("demo", "demo"),
    # Inspection: read-only, never create a spool.
    "status": ("inspect", "status"),
    "stuck": ("inspect", "stuck"),
    "show": ("inspect", "show"),
    "export": ("inspect", "export"),
    "config": ("settings", "config"),
    # Maintenance.
    "retry": ("maintain", "retry"),
    "purge": ("maintain", "purge"),
    "doctor": ("maintain", "doctor"),
    "import": ("importer", "import_"),
}


def _load(name: str) -> Any:
    """The click command for ``name``, built by typer from the function in its module."""
    module_name, function = COMMANDS[name]
    module = importlib.import_module(f"{__package__}.{module_name}")
    one = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    one.command(name)(getattr(module, function))
    return get_command(one)


class _LazyGroup(SpoolShipGroup):
    """Lists every command, and imports and builds one only when it is looked up."""

    def list_commands(self, ctx: Any) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name in COMMANDS and cmd_name not in self.commands:
            self.add_command(_load(cmd_name), cmd_name)
        return super().get_command(ctx, cmd_name)


app = typer.Typer(
    name="spool-ship",
    cls=_LazyGroup,
    help="A durable, disk-spooled shipper for Scale GP tracing spans.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as package_version

    try:
        return package_version("spool-ship")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"spool-ship {_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """A durable, disk-spooled shipper for Scale GP tracing spans."""


def main() -> None:
    """The console script ``spool-ship``."""
    app()
