"""Options every command shares (``--spool``, ``--busy-timeout``), durations, and opening the
spool the way the CLI does: never creating one where there is none."""

from __future__ import annotations

import contextlib
import enum
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from spool import (
    EventRecord,
    EventState,
    NotASpoolError,
    Spool,
    SpoolConfig,
    file_sizes,
    open_readonly,
    ops,
)

from ._errors import EXIT_USAGE, CommandError

__all__ = [
    "BusyTimeoutOption",
    "JsonOption",
    "SpoolOption",
    "choice_option",
    "duration_option",
    "find_events",
    "format_duration",
    "open_spool",
    "parse_duration",
    "spool_config",
]

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0, "w": 604_800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_duration(text: str | float) -> float:
    """Seconds in ``text``: ``90``, ``0.5``, ``90s``, ``15m``, ``2h``, ``7d``, ``1w``, ``1h30m``.

    >>> parse_duration("1h30m")
    5400.0
    """
    raw = str(text).strip().lower()
    try:
        seconds = float(raw)
    except ValueError:
        parts = _PART.findall(raw)
        if not parts or "".join(n + u for n, u in parts) != raw:
            raise ValueError(
                f"{text!r} is not a duration; use seconds or a number with a unit: "
                "90s, 15m, 2h, 7d, 1h30m"
            ) from None
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{text!r} is not a duration: a duration is zero or more, and finite")
    return seconds


def format_duration(seconds: float) -> str:
    """``3600.0`` -> ``1h``: the shortest form :func:`parse_duration` reads back."""
    if seconds < 60 and seconds != int(seconds):
        return f"{seconds:g}s"
    rest = int(seconds)
    out = []
    for unit in ("w", "d", "h", "m", "s"):
        size = int(_UNITS[unit])
        if rest >= size:
            out.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(out) or "0s"


def duration_option(value: str | float) -> float:
    """:func:`parse_duration` for an option: a bad duration is a usage error."""
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


E = TypeVar("E", bound=enum.StrEnum)


def choice_option(kind: type[E]) -> Callable[[str | E], E]:
    """A parser for an option with a fixed set of values: a wrong one is a usage error that
    names the choices (and nothing of the validation library beneath typer)."""
    names = ", ".join(member.value for member in kind)

    def parse(value: str | E) -> E:
        try:
            return kind(str(value).lower())
        except ValueError:
            raise typer.BadParameter(f"{value!r} is not one of: {names}") from None

    return parse


SpoolOption = Annotated[
    Path | None,
    typer.Option(
        "--spool",
        metavar="PATH",
        help="The spool file. Default: $SPOOL_SHIP_PATH, else $XDG_STATE_HOME/spool-ship/spool.db.",
        show_default=False,
    ),
]
BusyTimeoutOption = Annotated[
    float | None,
    typer.Option(
        "--busy-timeout",
        metavar="DURATION",
        parser=duration_option,
        help="How long to wait for another process's lock. Default: $SPOOL_SHIP_BUSY_TIMEOUT "
        "or 30s.",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]


def spool_config(path: Path | None, busy_timeout: float | None = None) -> SpoolConfig:
    """``--spool``, else ``SPOOL_SHIP_PATH``, else the per-user default; options from the
    environment."""
    try:
        config = SpoolConfig.from_env(path)
        if busy_timeout is not None:
            config = replace(config, busy_timeout=max(busy_timeout, 0.001))
    except ValueError as exc:
        raise CommandError(f"configuration: {exc}", EXIT_USAGE) from None
    return config


@contextlib.contextmanager
def open_spool(config: SpoolConfig, *, readonly: bool = False) -> Iterator[Spool]:
    """The existing spool at ``config.path``; :class:`spool.SpoolOpenError` when there is
    none. An empty file is not a spool: opening it must not turn it into one. ``readonly``:
    for commands that only look (they then work on a read-only file system too)."""
    file_bytes, wal_bytes = file_sizes(config.path)
    if config.path.is_file() and file_bytes == 0 and wal_bytes == 0:
        raise NotASpoolError(config.path, "is an empty file, not a spool")
    spool = open_readonly(config) if readonly else Spool.open(config, create=False)
    try:
        yield spool
    finally:
        spool.close()


_MAX_SEQ = 2**63 - 1


def find_events(spool: Spool, ident: str) -> list[EventRecord]:
    """The events ``ident`` names: a seq, or every event of a span id."""
    ident = ident.strip()
    if ident.isdigit() and not (ident.isascii() and int(ident) <= _MAX_SEQ):
        # Digits that cannot be a seq ("²", or past SQLite's 64-bit integers) can only be a
        # span id; ops.find would try them as a seq and fail.
        return [r for r in spool.export(list(EventState)) if r.span_id == ident]
    return spool.run(ops.find(ident), write=False)
