"""The ``spool-ship`` command line: a typer app whose commands parse, call the spool, render.

Inspection (``status``, ``stuck``, ``show``, ``export``) lives in :mod:`cli.inspect`,
``config`` in :mod:`cli.settings`, maintenance (``retry``, ``purge``, ``doctor``) in
:mod:`cli.maintain`, ``import`` in :mod:`cli.importer`. Shipping commands
(``drain``, ``run``, ``demo``) are registered here too, from their own module.
"""

from __future__ import annotations

from typing import Annotated

import typer

from . import demo, importer, inspect, maintain, settings, ship
from ._errors import SpoolShipGroup

__all__ = ["app", "main"]

app = typer.Typer(
    name="spool-ship",
    cls=SpoolShipGroup,
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


# Shipping.
app.command("drain")(ship.drain)
app.command("run")(ship.run)
app.command("demo")(demo.demo)

# Inspection: read-only, never create a spool.
app.command("status")(inspect.status)
app.command("stuck")(inspect.stuck)
app.command("show")(inspect.show)
app.command("export")(inspect.export)
app.command("config")(settings.config)

# Maintenance.
app.command("retry")(maintain.retry)
app.command("purge")(maintain.purge)
app.command("doctor")(maintain.doctor)
app.command("import")(importer.import_)


def main() -> None:
    """The console script ``spool-ship``."""
    app()
