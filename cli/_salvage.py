"""Salvage what a damaged spool still holds into a fresh one (``spool-ship doctor``).

The damaged file is read with plain ``sqlite3``: the spool's own connection refuses it, which
is right for every other command. It is read a range of seqs at a time; a range that SQLite
cannot read is split in two until the unreadable rows stand alone, so one bad page costs the
rows on it and no others. The ``events_by_state`` index is read the same way, separately: it
says which rows existed, and in which state, even where the table's own pages are gone. That
is how lost events are counted instead of guessed.

Salvaged pending and leased events go back as pending (attempts reset), dead events go back
dead with their error, done events stay behind (they were delivered). Lost events that were
not done are counted as dropped with the reason ``salvage_lost``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from spool import Counter, EventKind, EventState, NewEvent, Spool, ops
from spool._files import private_copy

from ._options import find_events

__all__ = ["LOST_REASON", "SalvageReport", "move_aside", "salvage"]

LOST_REASON = Counter.DROPPED_SALVAGE_LOST.reason
_CHUNK = 512
# Chunks in a row with nothing but unreadable seqs before the salvage stops looking (a
# garbled high-water mark must not send it through billions of seqs).
_GIVE_UP_AFTER = 2048
_COLUMNS = "seq, span_id, trace_id, kind, state, enqueued_at, last_error, payload"
_KINDS = {k.value: k for k in EventKind}
_STATES = {s.value for s in EventState}
_DONE = EventState.DONE.value
_DEAD = EventState.DEAD.value


@dataclass(slots=True)
class SalvageReport:
    """What a salvage found: every number is a count of events."""

    salvaged: int = 0
    """Carried into the fresh spool (pending and leased as pending, dead as dead)."""
    dead: int = 0
    """Of ``salvaged``, how many went back as dead."""
    done_left: int = 0
    """Done (already delivered) events left behind in the damaged copy."""
    lost: int = 0
    """Events that were not done and could not be read (or were garbled): counted dropped."""
    unreadable: int = 0
    """Seqs the index could not vouch for and the table did not give: deleted rows or lost
    events, no one can tell."""
    refused: int = 0
    """Read, but the fresh spool would not take them (its size limit)."""
    gave_up_at: int | None = None
    """The seq where reading stopped after a long run of nothing but unreadable pages."""
    table_readable: bool = True
    """False when not even the bounds of the events table could be read: nothing was
    salvaged and nothing can be counted (``sqlite3 FILE .recover`` may get further)."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "salvaged": self.salvaged,
            "salvaged_dead": self.dead,
            "done_left_behind": self.done_left,
            "lost": self.lost,
            "unreadable": self.unreadable,
            "refused_by_new_spool": self.refused,
            "table_readable": self.table_readable,
            "gave_up_at_seq": self.gave_up_at,
        }


def move_aside(path: Path, now: float) -> Path:
    """Rename the spool, its WAL and its shared-memory file to ``<path>.corrupt-<UTC time>``.

    The WAL moves first: a crash between the renames must not leave an old WAL beside a new
    spool, where SQLite would replay it into the fresh file."""
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%SZ")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while any(Path(f"{aside}{s}").exists() for s in ("", "-wal", "-shm")):
        aside = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
        n += 1
    for suffix in ("-wal", "-shm", ""):
        source = Path(f"{path}{suffix}")
        if suffix == "" or source.exists():
            os.replace(source, Path(f"{aside}{suffix}"))
    return aside


def salvage(damaged: Path, target: Spool) -> SalvageReport:
    """Copy what can be read from ``damaged`` into ``target`` (a fresh spool)."""
    padded = _padded_copy(damaged)
    try:
        return _salvage(padded or damaged, target)
    finally:
        if padded is not None:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{padded}{suffix}").unlink(missing_ok=True)


def _padded_copy(damaged: Path) -> Path | None:
    """A truncated file (shorter than its header says) makes SQLite refuse even its schema.
    A copy padded with zeroed pages reads again up to the cut; the damaged file stays as it
    was found."""
    try:
        with damaged.open("rb") as f:
            header = f.read(100)
        size = damaged.stat().st_size
    except OSError:
        return None
    if len(header) < 100 or not header.startswith(b"SQLite format 3\x00"):
        return None
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    expected = page_size * int.from_bytes(header[28:32], "big")
    if size >= expected:
        return None
    copy = damaged.with_name(f"{damaged.name}.padded")
    for suffix in ("", "-wal", "-shm"):  # left over by a salvage that was killed
        Path(f"{copy}{suffix}").unlink(missing_ok=True)
    # Scratch copies hold the spans too: 0600, as the spool.
    private_copy(damaged, copy)
    with copy.open("r+b") as f:
        f.truncate(expected)
    wal = Path(f"{damaged}-wal")
    if wal.exists():
        private_copy(wal, Path(f"{copy}-wal"))
    return copy


def _salvage(damaged: Path, target: Spool) -> SalvageReport:
    report = SalvageReport()
    # Read-only: a read-write connection would checkpoint the WAL into the damaged file when
    # it closes. The damaged copy stays as it was found.
    uri = f"{damaged.absolute().as_uri()}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    try:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("PRAGMA cell_size_check = ON")
        low, high = _bounds(conn)
        report.table_readable = high > 0 or _table_exists(conn)
        dead: list[tuple[str, str, str, str]] = []
        start, failing = low, 0
        while start <= high:
            end = min(start + _CHUNK - 1, high)
            found, errors = _salvage_range(conn, target, start, end, report, dead)
            start = end + 1
            if found:
                failing = 0
            elif errors:
                failing += 1
                if failing >= _GIVE_UP_AFTER:
                    report.gave_up_at = start
                    break
            else:
                # Nothing here and nothing broken: jump over the gap (pruned rows).
                after = _next_seq(conn, end)
                if after is None:
                    break
                start = max(start, after)
        _restore_dead(target, dead, report)
        counters = _read_pairs(conn, "SELECT name, value FROM counters", int)
        meta = _read_pairs(conn, "SELECT key, value FROM meta", str)
    finally:
        conn.close()
    if report.lost:
        key = Counter.DROPPED_SALVAGE_LOST
        counters[key] = counters.get(key, 0) + report.lost
    target.run(ops.add_counters(counters))
    if meta:
        target.run(ops.set_meta(dict(meta)))
    return report


def _scalar(conn: sqlite3.Connection, sql: str, *params: Any) -> int | Exception | None:
    """The integer the query answers, None when it answers nothing, the error if it fails."""
    try:
        row = conn.execute(sql, params).fetchone()
    except sqlite3.Error as exc:
        return exc
    return row[0] if row is not None and isinstance(row[0], int) else None


def _bounds(conn: sqlite3.Connection) -> tuple[int, int]:
    """The seq range to read. ``sqlite_sequence`` (AUTOINCREMENT's high-water mark) is
    trusted over the table's and the index's own maximum, which a damaged page can garble."""
    lows = [
        v
        for v in (
            _scalar(conn, "SELECT MIN(seq) FROM events"),
            _scalar(conn, "SELECT MIN(seq) FROM events INDEXED BY events_by_state"),
        )
        if isinstance(v, int) and v >= 1
    ]
    low = min(lows, default=1)
    mark = _scalar(conn, "SELECT seq FROM sqlite_sequence WHERE name = 'events'")
    if isinstance(mark, int) and mark >= 0:
        return low, mark
    highs = [
        v
        for v in (
            _scalar(conn, "SELECT MAX(seq) FROM events"),
            _scalar(conn, "SELECT MAX(seq) FROM events INDEXED BY events_by_state"),
        )
        if isinstance(v, int)
    ]
    return low, max(highs, default=0)


def _next_seq(conn: sqlite3.Connection, after: int) -> int | None:
    """The next seq after ``after`` that the table or the index knows; ``after + 1`` when
    either cannot tell (read on, chunk by chunk); None when both say there is none."""
    answers = [
        _scalar(conn, "SELECT MIN(seq) FROM events WHERE seq > ?", after),
        _scalar(
            conn, "SELECT MIN(seq) FROM events INDEXED BY events_by_state WHERE seq > ?", after
        ),
    ]
    if any(isinstance(a, Exception) for a in answers):
        return after + 1
    found = [a for a in answers if isinstance(a, int)]
    return min(found) if found else None


def _table_exists(conn: sqlite3.Connection) -> bool:
    """Whether the events table answers at all (an empty one does)."""
    try:
        conn.execute("SELECT seq FROM events LIMIT 1").fetchall()
    except sqlite3.Error:
        return False
    return True


def _ranges(
    conn: sqlite3.Connection, sql: str, start: int, end: int, errors: list[int]
) -> Iterator[tuple[Any, ...]]:
    """Rows of ``sql`` for seqs ``start..end``, splitting the range around unreadable parts;
    seqs that cannot be read even alone go to ``errors``."""
    try:
        rows = conn.execute(sql, (start, end)).fetchall()
    except sqlite3.Error:
        if start == end:
            errors.append(start)
            return
        middle = (start + end) // 2
        yield from _ranges(conn, sql, start, middle, errors)
        yield from _ranges(conn, sql, middle + 1, end, errors)
        return
    yield from rows


def _salvage_range(
    conn: sqlite3.Connection,
    target: Spool,
    start: int,
    end: int,
    report: SalvageReport,
    dead: list[tuple[str, str, str, str]],
) -> tuple[bool, bool]:
    """Salvage seqs ``start..end``; whether anything was found there, and whether anything
    could not be read."""
    table_errors: list[int] = []
    # A damaged page can yield cells with garbage rowids outside the range asked for.
    rows = {
        row[0]: row
        for row in _ranges(
            conn,
            f"SELECT {_COLUMNS} FROM events WHERE seq BETWEEN ? AND ? ORDER BY seq",
            start,
            end,
            table_errors,
        )
        if isinstance(row[0], int) and start <= row[0] <= end
    }
    index_errors: list[int] = []
    index: dict[int, str] = {
        row[0]: row[1]
        for row in _ranges(
            conn,
            "SELECT seq, state FROM events INDEXED BY events_by_state WHERE seq BETWEEN ? AND ?",
            start,
            end,
            index_errors,
        )
        if isinstance(row[0], int) and start <= row[0] <= end
    }
    # A seq the index cannot vouch for and the table did not give: a deleted row or a lost
    # event, no one can tell.
    report.unreadable += len(set(index_errors) - rows.keys())
    events: list[NewEvent] = []
    dead_here: list[tuple[str, str, str, str]] = []
    for seq in sorted(rows.keys() | index.keys()):
        row = rows.get(seq)
        event = _event(row) if row is not None else None
        state = row[4] if row is not None and event is not None else index.get(seq)
        if state == _DONE:
            report.done_left += 1
        elif row is None or event is None:
            report.lost += 1
        else:
            events.append(event)
            if state == _DEAD:
                dead_here.append(
                    (event.span_id, event.trace_id, event.kind.value, row[6] or "dead")
                )
    if events:
        if target.append(events):
            report.salvaged += len(events)
            dead.extend(dead_here)
        else:
            report.refused += len(events)
    return bool(rows or index), bool(table_errors or index_errors)


def _event(row: tuple[Any, ...]) -> NewEvent | None:
    """The row as an event to append, or None when what was read is garbled."""
    _seq, span_id, trace_id, kind, state, enqueued_at, last_error, payload = row
    if not (
        isinstance(span_id, str)
        and span_id
        and isinstance(trace_id, str)
        and trace_id
        and kind in _KINDS
        and state in _STATES
        and isinstance(enqueued_at, int | float)
        and (last_error is None or isinstance(last_error, str))
        and isinstance(payload, bytes)
    ):
        return None
    try:
        body = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    if body.get("id", span_id) != span_id or body.get("trace_id", trace_id) != trace_id:
        return None
    return NewEvent(span_id, trace_id, _KINDS[kind], payload, enqueued_at=float(enqueued_at))


def _restore_dead(
    target: Spool, dead: list[tuple[str, str, str, str]], report: SalvageReport
) -> None:
    """Dead events were appended as pending; find each one's new seq and dead-letter it
    again with its recorded error."""
    taken: set[int] = set()
    reasons: dict[int, str] = {}
    for span_id, trace_id, kind, error in dead:
        for record in find_events(target, span_id):
            if (
                record.seq not in taken
                and record.trace_id == trace_id
                and record.kind.value == kind
                and record.state is EventState.PENDING
            ):
                taken.add(record.seq)
                reasons[record.seq] = error
                break
    if reasons:
        target.run(ops.dead_letter(reasons, now=time.time()))
    report.dead = len(reasons)


def _read_pairs(conn: sqlite3.Connection, sql: str, kind: Callable[[Any], Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with contextlib.suppress(sqlite3.Error, ValueError, TypeError):
        for key, value in conn.execute(sql):
            out[str(key)] = kind(value)
    return out
