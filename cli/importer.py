"""``spool-ship import FILE.jsonl``: bring events written by ``export`` back into a spool.

Idempotent: an event the spool already holds (same span, kind and payload bytes) is not added
again, so importing a file twice adds nothing. Payloads are kept byte for byte: ``export``
writes each payload as the exact JSON the spool held, and this reads that text back as it is.
Pending and leased events come back pending, ready at once; dead ones come back dead with
their reason (``spool-ship retry`` sends them again); done ones are skipped. A line that is
not an exported event is reported with its number and why; every other line is imported.
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer

from spool import EventKind, EventState, Spool, SpoolFullError, ops

from ._errors import EXIT_FAILED, CommandError
from ._options import BusyTimeoutOption, SpoolOption, open_spool, spool_config
from ._render import clean

__all__ = ["BadLine", "ImportedEvent", "import_file", "parse_line", "raw_member"]

CHUNK = 500
# Bad lines listed one by one before the rest are only counted.
SHOW_BAD = 20

_DECODER = json.JSONDecoder()
_WS = re.compile(r"[ \t\n\r]*")

ImportedEvent = tuple[str, str, EventKind, bytes, float, EventState, str | None]
"""(span_id, trace_id, kind, payload, enqueued_at, state, last_error), for
:func:`spool.ops.import_events`."""


class BadLine(ValueError):
    """A line that is not an exported event."""


def raw_member(text: str, key: str) -> str | None:
    """The JSON text of member ``key`` of the object ``text`` (already known to be valid
    JSON), exactly as it is written there; None when it has no such member."""
    pos = _WS.match(text, 0).end()  # type: ignore[union-attr]
    if text[pos : pos + 1] != "{":
        return None
    found = None
    pos = _WS.match(text, pos + 1).end()  # type: ignore[union-attr]
    while text[pos : pos + 1] not in ("}", ""):
        name, pos = _DECODER.raw_decode(text, pos)
        pos = _WS.match(text, pos).end() + 1  # type: ignore[union-attr] # past ':'
        start = pos = _WS.match(text, pos).end()  # type: ignore[union-attr]
        _, pos = _DECODER.raw_decode(text, pos)
        if name == key:
            found = text[start:pos]  # the last one wins, as in json.loads
        pos = _WS.match(text, pos).end()  # type: ignore[union-attr]
        if text[pos : pos + 1] == ",":
            pos = _WS.match(text, pos + 1).end()  # type: ignore[union-attr]
    return found


def _text(item: dict[str, Any], key: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value:
        raise BadLine(f"{key!r} must be a non-empty string")
    return value


def parse_line(line: str) -> ImportedEvent | None:
    """The event one exported line describes; None for a done event (nothing to ship).
    Raises :class:`BadLine` saying what is wrong."""
    try:
        item = json.loads(line)
    except ValueError as exc:
        raise BadLine(f"not JSON ({exc})") from None
    if not isinstance(item, dict):
        raise BadLine("not a JSON object")
    span_id, trace_id = _text(item, "span_id"), _text(item, "trace_id")
    try:
        kind = EventKind(str(item.get("kind")))
    except ValueError:
        raise BadLine(f"'kind' must be start or end, not {item.get('kind')!r}") from None
    try:
        state = EventState(str(item.get("state")))
    except ValueError:
        raise BadLine(f"'state' must be an event state, not {item.get('state')!r}") from None
    at = item.get("enqueued_at")
    if isinstance(at, bool) or not isinstance(at, int | float) or not math.isfinite(at):
        raise BadLine("'enqueued_at' must be a number (Unix time)")
    if not isinstance(item.get("payload"), dict):
        raise BadLine("'payload' must be a JSON object (the span)")
    raw = raw_member(line, "payload")
    assert raw is not None  # json.loads found it
    if state is EventState.DONE:
        return None
    error = item.get("last_error")
    # Pending, or leased by a shipper of the old spool: ready at once here.
    back = EventState.DEAD if state is EventState.DEAD else EventState.PENDING
    return (
        span_id,
        trace_id,
        kind,
        raw.encode("utf-8"),
        float(at),
        back,
        error if isinstance(error, str) else None,
    )


@dataclass(slots=True)
class _Tally:
    read: int = 0
    added: int = 0
    done: int = 0
    bad: int = 0


def _chunks(lines: TextIO, tally: _Tally, name: str) -> Iterator[list[ImportedEvent]]:
    chunk: list[ImportedEvent] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        tally.read += 1
        try:
            event = parse_line(line)
        except BadLine as exc:
            tally.bad += 1
            if tally.bad <= SHOW_BAD:
                typer.echo(f"{clean(name)}:{number}: skipped: {clean(exc)}", err=True)
            continue
        if event is None:
            tally.done += 1
            continue
        chunk.append(event)
        if len(chunk) >= CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def import_file(spool: Spool, lines: TextIO, name: str) -> _Tally:
    """Import ``lines`` into ``spool`` a chunk at a time (one transaction each)."""
    tally = _Tally()
    for chunk in _chunks(lines, tally, name):
        try:
            tally.added += spool.run(ops.import_events(chunk, time.time(), str(spool.config.path)))
        except SpoolFullError as exc:
            raise CommandError(
                f"{exc}; imported {tally.added} event(s) before it, the rest of {name} "
                "was not imported",
                EXIT_FAILED,
            ) from None
    return tally


def import_(
    file: Annotated[
        Path,
        typer.Argument(metavar="FILE.jsonl", help="An export (JSON Lines); - reads stdin."),
    ],
    spool: SpoolOption = None,
    create: Annotated[
        bool, typer.Option("--create", help="Create the spool if it does not exist yet.")
    ] = False,
    busy_timeout: BusyTimeoutOption = None,
) -> None:
    """Bring exported events back into a spool: idempotent, payloads byte for byte."""
    config = spool_config(spool, busy_timeout)
    name = "stdin" if str(file) == "-" else str(file)
    if create and not config.path.exists():
        Spool.open(config).close()
    try:
        source = sys.stdin if str(file) == "-" else file.open(encoding="utf-8", newline="\n")
    except OSError as exc:
        raise CommandError(f"cannot read {file}: {exc.strerror or exc}") from None
    with source, open_spool(config) as opened:
        try:
            tally = import_file(opened, source, name)
        except UnicodeDecodeError as exc:
            raise CommandError(f"{file} is not UTF-8 text ({exc.reason})") from None
    typer.echo(
        f"imported {tally.added} event(s) from {clean(name)} into {clean(config.path)}: "
        f"{tally.read - tally.bad - tally.done - tally.added} already there, {tally.done} done "
        f"(skipped), {tally.bad} bad line(s)",
        err=True,
    )
    if tally.bad:
        raise typer.Exit(EXIT_FAILED)
