"""Salvage what a damaged spool still holds into a fresh one (``spool-ship doctor``), in steps
that a kill at any point leaves resumable.

The damaged file is read with plain ``sqlite3``: the spool's own connection refuses it, which
is right for every other use. It is read a range of seqs at a time; a range that SQLite cannot
read is split in two until the unreadable rows stand alone, so one bad page costs the rows on
it and no others. The ``events_by_state`` index is read the same way, separately: it says
which rows existed, and in which state, even where the table's own pages are gone. That is how
lost events are counted instead of guessed.

Salvaged pending and leased events go back as pending (attempts reset), dead events go back
dead with their error, done events stay behind (they were delivered). Lost events that were
not done are counted as dropped (``Counter.DROPPED_SALVAGE_LOST``).

Restartable: before anything moves, a marker ``<spool>.salvage`` names the moved-aside copy
(:func:`begin`). Each range of seqs goes into the fresh spool in one transaction with the
progress (the next seq, the counts so far) in its meta table; the last transaction adds the
counters and facts of the damaged spool and marks the salvage finished; only then is the
marker removed (:func:`finish`). A salvage killed at any point is taken up again where it
stopped (:func:`unfinished`, then :func:`salvage` again), nothing copied twice, nothing left
only in the moved-aside copy.

>>> aside = begin(path, time.time())
>>> with Spool.open(config) as fresh:
...     report = salvage(aside, fresh)
>>> finish(path)
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ._files import private_copy
from ._fill import USED_BYTES, limit_from_meta
from ._model import Counter, EventKind, EventState, MetaKey
from .ops import Query, Tx, add_counters, set_meta
from .store import Spool

__all__ = [
    "MARKER_SUFFIX",
    "SalvageReport",
    "begin",
    "finish",
    "move_aside",
    "salvage",
    "unfinished",
]

MARKER_SUFFIX = ".salvage"
_CHUNK = 512
# Chunks in a row with nothing but unreadable seqs before the salvage stops looking (a
# garbled high-water mark must not send it through billions of seqs).
_GIVE_UP_AFTER = 2048
_COLUMNS = "seq, span_id, trace_id, kind, state, enqueued_at, last_error, payload"
_KINDS = {k.value: k for k in EventKind}
_STATES = {s.value for s in EventState}
_DONE = EventState.DONE.value
_DEAD = EventState.DEAD.value
_PENDING = EventState.PENDING.value
# Per-row bytes beyond the payload, as the writer estimates them (spool/_committer.py).
_ROW_OVERHEAD = 160
_INSERT = (
    "INSERT INTO events (span_id, trace_id, kind, payload, enqueued_at, state, last_error, "
    "done_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


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
    resumed: int = 0
    """How many times this salvage was taken up again after it was stopped part-way."""

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
            "resumed": self.resumed,
        }


@dataclass(frozen=True, slots=True)
class _Progress:
    """Kept in the fresh spool's meta table (``MetaKey.SALVAGE``), written with each range."""

    source: str
    next_seq: int
    done: bool
    report: dict[str, Any]

    def dumps(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def loads(cls, text: str) -> _Progress | None:
        try:
            raw = json.loads(text)
            return cls(str(raw["source"]), int(raw["next_seq"]), bool(raw["done"]), raw["report"])
        except (ValueError, KeyError, TypeError):
            return None

    def salvage_report(self) -> SalvageReport:
        names = {f.name for f in fields(SalvageReport)}
        return SalvageReport(**{k: v for k, v in self.report.items() if k in names})


# ---- the steps around the copy -------------------------------------------------------------


def marker(path: Path) -> Path:
    return path.with_name(f"{path.name}{MARKER_SUFFIX}")


def unfinished(path: Path) -> Path | None:
    """The moved-aside copy a salvage of ``path`` was working from when it stopped, if any."""
    try:
        text = marker(path).read_text()
    except FileNotFoundError:
        return None
    aside = Path(text.strip())
    return aside if aside.name.startswith(f"{path.name}.corrupt-") else None


def begin(path: Path, now: float) -> Path:
    """Name the moved-aside copy in the marker, then move the spool there; the copy's path.
    A salvage that was stopped before the move is taken up by calling this again."""
    aside = unfinished(path)
    if aside is None:
        aside = _aside_name(path, now)
        tmp = marker(path).with_name(f"{marker(path).name}.tmp")
        tmp.unlink(missing_ok=True)
        with os.fdopen(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600), "w") as f:
            f.write(f"{aside}\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, marker(path))
    if not aside.exists():
        _move(path, aside)
    return aside


def finish(path: Path) -> None:
    """The salvage of ``path`` is complete: forget it."""
    marker(path).unlink(missing_ok=True)


def move_aside(path: Path, now: float) -> Path:
    """Rename the spool, its WAL and its shared-memory file to ``<path>.corrupt-<UTC time>``."""
    aside = _aside_name(path, now)
    _move(path, aside)
    return aside


def _aside_name(path: Path, now: float) -> Path:
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%SZ")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while any(Path(f"{aside}{s}").exists() for s in ("", "-wal", "-shm")):
        aside = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
        n += 1
    return aside


def _move(path: Path, aside: Path) -> None:
    # The WAL moves first: a crash between the renames must not leave an old WAL beside a new
    # spool, where SQLite would replay it into the fresh file.
    for suffix in ("-wal", "-shm", ""):
        source = Path(f"{path}{suffix}")
        if suffix == "" or source.exists():
            os.replace(source, Path(f"{aside}{suffix}"))


# ---- the copy ------------------------------------------------------------------------------


def salvage(damaged: Path, target: Spool, now: float | None = None) -> SalvageReport:
    """Copy what can be read from ``damaged`` into ``target`` (a fresh spool), or take up
    where a stopped salvage of the same copy left off. Dead events keep their error and end
    ``now``."""
    now = time.time() if now is None else now
    progress = target.run(_read_progress(), write=False)
    if progress is not None and progress.source != str(damaged):
        progress = None  # another salvage's, finished long ago
    if progress is not None and progress.done:
        return progress.salvage_report()
    report = progress.salvage_report() if progress else SalvageReport()
    if progress is not None:
        report.resumed += 1
    padded = _padded_copy(damaged)
    try:
        _salvage(padded or damaged, str(damaged), target, report, progress=progress, now=now)
    finally:
        if padded is not None:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{padded}{suffix}").unlink(missing_ok=True)
    return report


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


def _salvage(
    damaged: Path,
    source: str,
    target: Spool,
    report: SalvageReport,
    *,
    progress: _Progress | None,
    now: float,
) -> None:
    # Read-only: a read-write connection would checkpoint the WAL into the damaged file when
    # it closes. The damaged copy stays as it was found.
    uri = f"{damaged.absolute().as_uri()}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    # The fresh spool's limit: the one configured, else the one the damaged spool stored
    # (its meta is read whole again below, for the counters and facts carried over).
    max_bytes = target.config.max_bytes or limit_from_meta(
        _read_pairs(conn, "SELECT key, value FROM meta", str)
    )
    try:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("PRAGMA cell_size_check = ON")
        low, high = _bounds(conn)
        if progress is None:
            report.table_readable = high > 0 or _table_exists(conn)
        start, failing = max(low, progress.next_seq if progress else low), 0
        while start <= high:
            end = min(start + _CHUNK - 1, high)
            rows, found, errors = _read_range(conn, start, end, report, now)
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
                start = high + 1 if after is None else max(start, after)
            if rows or found or start > high:
                target.run(_store(rows, source, start, report, max_bytes))
        counters = _read_pairs(conn, "SELECT name, value FROM counters", int)
        meta = _read_pairs(conn, "SELECT key, value FROM meta", str)
    finally:
        conn.close()
    meta.pop(MetaKey.SALVAGE, None)
    if report.lost:
        key = Counter.DROPPED_SALVAGE_LOST
        counters[key] = counters.get(key, 0) + report.lost
    done = _Progress(source, start, True, asdict(report))
    target.run(_finish(counters, meta, done))


_Row = tuple[str, str, str, bytes, float, str, str | None, float | None]


def _store(
    rows: list[_Row], source: str, next_seq: int, report: SalvageReport, max_bytes: int
) -> Tx[None]:
    """One range of salvaged events and the progress after it, in one transaction; the
    events are refused (counted) if the fresh spool has no room for them."""
    if rows:
        used = int((yield Query(USED_BYTES))[0][0])
        need = sum(len(r[3]) + len(r[0]) + len(r[1]) + _ROW_OVERHEAD for r in rows)
        if used + need <= max_bytes:
            yield Query(_INSERT, rows, many=True)
            report.salvaged += len(rows)
            report.dead += sum(1 for r in rows if r[5] == _DEAD)
        else:
            report.refused += len(rows)
    step = _Progress(source, next_seq, False, asdict(report))
    yield from set_meta({MetaKey.SALVAGE: step.dumps()})


def _finish(counters: dict[str, int], meta: dict[str, str], done: _Progress) -> Tx[None]:
    yield from add_counters(counters)
    yield from set_meta({**meta, MetaKey.SALVAGE: done.dumps()})


def _read_progress() -> Tx[_Progress | None]:
    rows = yield Query("SELECT value FROM meta WHERE key = ?", (MetaKey.SALVAGE.value,))
    return _Progress.loads(rows[0][0]) if rows else None


# ---- reading the damaged copy --------------------------------------------------------------


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


def _read_range(
    conn: sqlite3.Connection, start: int, end: int, report: SalvageReport, now: float
) -> tuple[list[_Row], bool, bool]:
    """The events of seqs ``start..end`` to store, whether anything was found there, and
    whether anything could not be read. Counts what is left behind or lost in ``report``."""
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
    events: list[_Row] = []
    for seq in sorted(rows.keys() | index.keys()):
        row = rows.get(seq)
        event = _event(row, now) if row is not None else None
        state = row[4] if row is not None and event is not None else index.get(seq)
        if state == _DONE:
            report.done_left += 1
        elif row is None or event is None:
            report.lost += 1
        else:
            events.append(event)
    return events, bool(rows or index), bool(table_errors or index_errors)


def _event(row: tuple[Any, ...], now: float) -> _Row | None:
    """The row as it goes into the fresh spool, or None when what was read is garbled."""
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
    at = float(enqueued_at)
    if state == _DEAD:
        return (span_id, trace_id, kind, payload, at, _DEAD, last_error or "dead", now)
    # Pending and leased events go back as pending, attempts reset.
    return (span_id, trace_id, kind, payload, at, _PENDING, None, None)


def _read_pairs(conn: sqlite3.Connection, sql: str, kind: Callable[[Any], Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with contextlib.suppress(sqlite3.Error, ValueError, TypeError):
        for key, value in conn.execute(sql):
            out[str(key)] = kind(value)
    return out
