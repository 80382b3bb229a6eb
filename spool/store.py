"""Open a spool and run its operations: :class:`Spool` on ``sqlite3``, :class:`AsyncSpool` on
``aiosqlite``. The operations themselves live in :mod:`spool.ops`; these are the drivers.

>>> spool = Spool.open(SpoolConfig(path=Path("/tmp/example.db")))
>>> spool.append([NewEvent("span-1", "trace-1", EventKind.START, b'{"name":"x"}')])
True
>>> [e.span_id for e in spool.run(ops.claim("me", limit=50, lease_seconds=60, now=time.time()))]
['span-1']
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from . import ops
from ._errors import SpoolClosedError
from ._fork import close_tracked, gated, track
from ._model import EventKind, EventRecord, EventState, SpoolStats
from ._reserve import Reserve
from ._schema import connect, translate_error
from .config import SpoolConfig

if TYPE_CHECKING:
    # Imported where they are used: a process that only reads a spool with Spool (spool-ship
    # status) never loads asyncio, aiosqlite or the writer (issue 13, docs/performance.md).
    import aiosqlite

    from ._committer import GroupCommitter, Row

__all__ = ["AsyncSpool", "NewEvent", "Spool", "file_sizes", "watch_appends"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to append: ``payload`` is the SpanCreateParam JSON exactly as it will be sent."""

    span_id: str
    trace_id: str
    kind: EventKind
    payload: bytes
    enqueued_at: float | None = None

    def row(self, now: float) -> Row:
        at = self.enqueued_at if self.enqueued_at is not None else now
        return (self.span_id, self.trace_id, self.kind.value, self.payload, at)


def file_sizes(path: Path) -> tuple[int, int]:
    """Bytes on disk of the spool file and of its WAL."""
    sizes = []
    for candidate in (path, Path(f"{path}-wal")):
        try:
            sizes.append(candidate.stat().st_size)
        except FileNotFoundError:
            sizes.append(0)
    return sizes[0], sizes[1]


def watch_appends(config: SpoolConfig, callback: Callable[[], None]) -> Callable[[], None]:
    """Call ``callback()`` (from the writer thread) after every commit that this process's
    processors make to the spool at ``config.path``. Returns the function that stops it."""
    from ._committer import acquire_committer, release_committer

    committer = acquire_committer(config)
    committer.add_listener(callback)

    def unwatch() -> None:
        committer.remove_listener(callback)
        release_committer(committer)

    return unwatch


def _run_tx(
    conn: sqlite3.Connection,
    tx: ops.Tx[T],
    write: bool,
    abandoned: threading.Event | None = None,
    reserve: Reserve | None = None,
) -> T:
    """Drive one operation on ``conn`` inside ``BEGIN [IMMEDIATE]`` ... ``COMMIT``; rolled back
    if it raises, or if ``abandoned`` is set (its caller is gone) before it commits. A write
    on a nearly full disk first gets the room ``reserve`` holds (spool/_reserve.py)."""
    if reserve is None or not write:
        return _drive(conn, tx, write, abandoned)
    reserve.make_room(conn)
    try:
        return _drive(conn, tx, write, abandoned)
    except sqlite3.OperationalError as exc:
        # Full after all (the disk filled since the look): the next write has the room.
        if "full" in str(exc).lower():
            reserve.release(conn)
        raise


def _drive(
    conn: sqlite3.Connection, tx: ops.Tx[T], write: bool, abandoned: threading.Event | None
) -> T:
    conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
    try:
        query = next(tx)
        while True:
            if query.many:
                conn.executemany(query.sql, query.params)
                rows: ops.Rows = []
            else:
                rows = conn.execute(query.sql, query.params).fetchall()
            query = tx.send(rows)
    except StopIteration as stop:
        if abandoned is None or not abandoned.is_set():
            conn.execute("COMMIT")
        return stop.value  # type: ignore[no-any-return]
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")


# What AsyncSpool runs on its connection's thread: inside the fork gate (spool/_fork.py).
_run_tx_in_gate = gated(_run_tx)


class _Appender:
    """Appends go through the process's one group committer for the path, started lazily so
    that inspecting a spool never starts a writer thread."""

    config: SpoolConfig
    _committer: GroupCommitter | None = None

    def _writer(self) -> GroupCommitter:
        if self._committer is None:
            from ._committer import acquire_committer

            self._committer = acquire_committer(self.config)
        return self._committer

    def _release_writer(self) -> None:
        if self._committer is not None:
            from ._committer import release_committer

            release_committer(self._committer)
            self._committer = None

    def with_sizes(self, stats: SpoolStats) -> SpoolStats:
        file_bytes, wal_bytes = file_sizes(self.config.path)
        return replace(stats, file_bytes=file_bytes, wal_bytes=wal_bytes)


class Spool(_Appender):
    """A spool opened with ``sqlite3``: for threads, the CLI and tests."""

    def __init__(self, config: SpoolConfig, conn: sqlite3.Connection) -> None:
        self.config = config
        self._conn: sqlite3.Connection | None = conn
        # Given back when the disk is full; only a shipper (AsyncSpool) makes it.
        self._reserve = Reserve(config.path, config.reserve_bytes)

    @classmethod
    def open(cls, config: SpoolConfig | str | os.PathLike[str], *, create: bool = True) -> Spool:
        """Open (and with ``create``, make) a spool. Raises :class:`SpoolOpenError`."""
        config = config if isinstance(config, SpoolConfig) else SpoolConfig.from_env(config)
        return cls(config, connect(config, create=create))

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise SpoolClosedError(self.config.path, "the spool is closed")
        return self._conn

    def append(self, events: Sequence[NewEvent]) -> bool:
        """Commit ``events`` (one group commit) and return True; False if they were dropped."""
        now = time.time()
        return self._writer().append([e.row(now) for e in events])

    def run(self, tx: ops.Tx[T], *, write: bool = True) -> T:
        """Run one operation from :mod:`spool.ops` as one transaction."""
        try:
            return _run_tx(self.conn, tx, write, reserve=self._reserve)
        except sqlite3.Error as exc:
            raise translate_error(self.config.path, exc) from exc

    def stats(self) -> SpoolStats:
        return self.with_sizes(self.run(ops.stats(), write=False))

    def export(self, states: Sequence[EventState], page: int = 1000) -> Iterator[EventRecord]:
        """Every event in ``states``, in seq order, read a page at a time."""
        after = 0
        while records := self.run(ops.export_page(states, after, page), write=False):
            yield from records
            after = records[-1].seq

    def data_version(self) -> int:
        """Changes whenever another connection commits: a cheap "anything new?" check."""
        return int(self.conn.execute("PRAGMA data_version").fetchone()[0])

    def checkpoint(self, mode: str = "PASSIVE") -> tuple[int, int, int]:
        """Copy the WAL into the database file; TRUNCATE also empties the WAL."""
        if mode not in ("PASSIVE", "FULL", "RESTART", "TRUNCATE"):
            raise ValueError(f"unknown checkpoint mode {mode!r}")
        try:
            row = self.conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
        except sqlite3.Error as exc:
            raise translate_error(self.config.path, exc) from exc
        return int(row[0]), int(row[1]), int(row[2])

    def integrity_check(self) -> list[str]:
        """SQLite's verdict: ``["ok"]`` for a sound file."""
        try:
            return [str(r[0]) for r in self.conn.execute("PRAGMA integrity_check").fetchall()]
        except sqlite3.Error as exc:
            raise translate_error(self.config.path, exc) from exc

    def close(self) -> None:
        self._release_writer()
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None


class AsyncSpool(_Appender):
    """A spool opened with ``aiosqlite``: for the shipper's event loop."""

    def __init__(
        self, config: SpoolConfig, db: aiosqlite.Connection, conn: sqlite3.Connection
    ) -> None:
        self.config = config
        self._db: aiosqlite.Connection | None = db
        # The sqlite3 connection behind ``db``: used only on ``db``'s thread.
        self._conn = conn
        self._reserve = Reserve(config.path, config.reserve_bytes)

    @classmethod
    async def open(
        cls, config: SpoolConfig | str | os.PathLike[str], *, create: bool = True
    ) -> AsyncSpool:
        import asyncio

        import aiosqlite

        config = config if isinstance(config, SpoolConfig) else SpoolConfig.from_env(config)
        # Open (and check) the file first: a spool that cannot be used raises here, before an
        # aiosqlite worker thread exists that would need stopping.
        conn = track(await asyncio.to_thread(gated(connect), config, create=create))
        db = aiosqlite.Connection(lambda: conn, iter_chunk_size=256)
        # aiosqlite's worker is not a daemon thread: a spool its owner never closed (a shipper
        # abandoned by a failed task, an agent that skipped shutdown) would keep the
        # interpreter from exiting, waiting forever on that thread. Killing it at exit is safe:
        # a transaction it had not committed is rolled back, as after a crash.
        db._thread.daemon = True
        await db
        opened = cls(config, db, conn)
        await asyncio.to_thread(opened._reserve.keep)
        return opened

    async def __aenter__(self) -> AsyncSpool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise SpoolClosedError(self.config.path, "the spool is closed")
        return self._db

    async def append(self, events: Sequence[NewEvent]) -> bool:
        now = time.time()
        return await self._writer().submit([e.row(now) for e in events])

    async def run(self, tx: ops.Tx[T], *, write: bool = True) -> T:
        # The whole transaction runs on the connection's thread in one hand-off (one wake-up of
        # the loop rather than one per statement); that thread runs one function at a time, so
        # transactions cannot interleave. A caller cancelled before the COMMIT rolls it back.
        import asyncio  # loaded already (we run on its loop); not at module level, see above

        db = self.db
        abandoned = threading.Event()
        try:
            result: T = await db._execute(  # type: ignore[no-untyped-call]
                _run_tx_in_gate, self._conn, tx, write, abandoned, self._reserve
            )
        except asyncio.CancelledError:
            abandoned.set()
            raise
        except sqlite3.Error as exc:
            raise translate_error(self.config.path, exc) from exc
        if write and self._reserve.due():
            # Made again once the disk has room (looked at most every 30 s).
            await asyncio.to_thread(self._reserve.keep)
        return result

    async def stats(self) -> SpoolStats:
        return self.with_sizes(await self.run(ops.stats(), write=False))

    async def data_version(self) -> int:
        return (await self._one("PRAGMA data_version"))[0]

    async def checkpoint(self, mode: str = "PASSIVE") -> tuple[int, int, int]:
        if mode not in ("PASSIVE", "FULL", "RESTART", "TRUNCATE"):
            raise ValueError(f"unknown checkpoint mode {mode!r}")
        try:
            row = await self._one(f"PRAGMA wal_checkpoint({mode})")
        except sqlite3.Error as exc:
            raise translate_error(self.config.path, exc) from exc
        return row[0], row[1], row[2]

    async def _one(self, sql: str) -> tuple[int, ...]:
        """The first row of ``sql`` (a pragma that answers numbers), run on the connection's
        thread inside the fork gate."""
        row: tuple[int, ...] = await self.db._execute(  # type: ignore[no-untyped-call]
            _first_row, self._conn, sql
        )
        return row

    async def close(self) -> None:
        self._release_writer()
        if self._db is not None:
            db, self._db = self._db, None
            with contextlib.suppress(sqlite3.Error, ValueError):
                # Closed inside the fork gate; aiosqlite's own close then only stops its thread.
                await db._execute(close_tracked, self._conn)  # type: ignore[no-untyped-call]
                await db.close()


@gated
def _first_row(conn: sqlite3.Connection, sql: str) -> tuple[int, ...]:
    row: tuple[int, ...] = conn.execute(sql).fetchone()
    return row
