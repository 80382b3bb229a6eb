"""Group commit: one writer thread per spool per process.

Callers (the async and sync processors, ``Spool.append``) hand rows to the writer and wait.
The writer takes everything queued since its last commit and writes it in one transaction,
then wakes every caller of that batch: async callers through their loop, sync callers through
a ``threading.Event``. The callers' code is the same either way; only the wait differs.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING

from . import _errors as errors
from ._errors import SpoolError
from ._fill import USED_BYTES, DropBursts, FillWatch
from ._fork import GATE, close_tracked, track
from ._model import Counter
from ._registry import REGISTRY
from ._schema import connect, translate_error
from .config import FullPolicy, SpoolConfig

if TYPE_CHECKING:
    # Not at run time: processes that only read a spool (spool-ship status) never load
    # asyncio; submit() is called from a running loop, where it is loaded already.
    import asyncio

__all__ = ["GroupCommitter", "Row", "acquire_committer", "release_committer"]

log = logging.getLogger("spool")

Row = tuple[str, str, str, bytes, float]
"""(span_id, trace_id, kind, payload, enqueued_at)"""

_INSERT = "INSERT INTO events (span_id, trace_id, kind, payload, enqueued_at) VALUES "
# Rows go in with multi-row INSERTs of power-of-two sizes up to this many rows: one statement
# step (and one release of the GIL) per chunk rather than per row, and at most nine distinct
# statements for the statement cache.
_INSERT_CHUNK = 256
_INSERTS = {
    1 << k: _INSERT + ",".join(["(?,?,?,?,?)"] * (1 << k))
    for k in range(_INSERT_CHUNK.bit_length())
}
# The common case in one statement, and so in one implicit transaction that takes the write
# lock first, as BEGIN IMMEDIATE does: insert every row of a batch, provided the spool has
# ample room (see _AMPLE_FACTOR). Rows are padded with NULLs to a power of two (at most nine
# cached statements); the padding is filtered out. The room subquery is not correlated, so
# SQLite evaluates it once per execution: all the rows go in, or none, and none means "not
# ample": the batch then takes the measured path. One statement is one step, so the writer
# drops the GIL once per batch for the whole transaction, its commit and any checkpoint.
_AMPLE_CHUNK = 256
_INSERT_IF_AMPLE = {
    1 << k: "INSERT INTO events (span_id, trace_id, kind, payload, enqueued_at) "
    "SELECT column1, column2, column3, column4, column5 FROM (VALUES "
    + ",".join(["(?,?,?,?,?)"] * (1 << k))
    + f") WHERE column1 IS NOT NULL AND ({USED_BYTES}) <= ?"
    for k in range(_AMPLE_CHUNK.bit_length())
}
_PAD: Row = (None, None, None, None, None)  # type: ignore[assignment]
# A batch may go in without measuring when the spool has room for this many times its
# estimated size plus _AMPLE_SLACK bytes: rows take whole cells, split pages and grow both
# indexes, but never by more than that.
_AMPLE_FACTOR = 4
_AMPLE_SLACK = 1 << 20
_ADD_COUNTER = (
    "INSERT INTO counters (name, value) VALUES (?, ?) "
    "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value"
)
# Per-row bytes beyond the payload: the row header, both indexes, and page slack.
_ROW_OVERHEAD = 160
_PRUNE_CHUNK = 5_000
# A batch of at least this many async calls is committed in two halves (see _take).
_SPLIT_CALLS = 64
# After a failed open, a broken spool is retried at most this often.
_REOPEN_INTERVAL = 5.0


@dataclass(slots=True)
class _Batch:
    rows: list[Row]
    calls: list[int]
    futures: list[tuple[int, asyncio.Future[bool]]]
    results: list[bool]
    done: threading.Event
    # The loop of the first future, and whether any other future is on another loop.
    loop: asyncio.AbstractEventLoop | None = None
    many_loops: bool = False
    # The second half of a cut batch: not cut again (see GroupCommitter._take).
    cut: bool = False

    @classmethod
    def empty(cls) -> _Batch:
        return cls([], [], [], [], threading.Event())

    def split(self, n: int) -> tuple[_Batch, _Batch]:
        """The first ``n`` calls, and the rest, as two batches."""
        nrows = sum(self.calls[:n])
        head = _Batch(self.rows[:nrows], self.calls[:n], [], [], threading.Event())
        tail = _Batch(self.rows[nrows:], self.calls[n:], [], [], threading.Event(), cut=True)
        for index, future in self.futures:
            if index < n:
                head.futures.append((index, future))
            else:
                tail.futures.append((index - n, future))
        for part in (head, tail):
            if part.futures:
                part.loop = self.loop
                part.many_loops = self.many_loops
        return head, tail


class GroupCommitter:
    """The writer of one spool in this process. Get it with :func:`acquire_committer`."""

    def __init__(self, config: SpoolConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        # True while the writer waits for work: only then does an append need to notify it.
        self._idle = False
        self._batch = _Batch.empty()
        self._counts: dict[str, int] = {}
        # Counters that could not be written (broken spool); written with the next commit.
        self._unflushed: dict[str, int] = {}
        self._listeners: list[Callable[[], None]] = []
        self._closing = False
        self._conn: sqlite3.Connection | None = None
        self._identity: tuple[int, int] | None = None
        self._open_error: SpoolError | None = None
        self._next_open_at = 0.0
        self._fill = FillWatch(config, log)
        self._max_bytes = self._fill.limit
        self._drops = DropBursts(log)
        self._thread = threading.Thread(
            target=self._run, name=f"spool-writer:{config.path.name}", daemon=True
        )
        self._thread.start()

    # ---- producer side -------------------------------------------------------------------
    def _enqueue(
        self, rows: Sequence[Row], future: asyncio.Future[bool] | None = None
    ) -> tuple[_Batch, int]:
        with self._lock:
            if self._closing:
                raise SpoolError(self.config.path, "the spool writer is closed")
            batch = self._batch
            index = len(batch.calls)
            batch.calls.append(len(rows))
            batch.rows.extend(rows)
            if future is not None:
                # Registered while the batch is still open: the writer takes the batch, and
                # with it every future, under this same lock.
                batch.futures.append((index, future))
                loop = future.get_loop()
                if batch.loop is None:
                    batch.loop = loop
                elif loop is not batch.loop:
                    batch.many_loops = True
            if self._idle:
                self._cond.notify()
            return batch, index

    def append(self, rows: Sequence[Row]) -> bool:
        """Write ``rows`` and return once they are committed: True, or False when dropped."""
        batch, index = self._enqueue(rows)
        batch.done.wait()
        return batch.results[index]

    def submit(self, rows: Sequence[Row]) -> asyncio.Future[bool]:
        """As :meth:`append` for async callers: queue ``rows`` and return a future of the
        running loop that resolves once they are committed (True) or dropped (False)."""
        import asyncio  # loaded already: this is called from a running loop

        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._enqueue(rows, future)
        return future

    def count(self, name: Counter, n: int = 1) -> None:
        """Add to a counter with the next commit (refused and dropped events), without waiting."""
        with self._cond:
            self._counts[name] = self._counts.get(name, 0) + n
            self._cond.notify()

    def local_counts(self) -> dict[str, int]:
        """Counters not yet written because the spool could not be written."""
        with self._cond:
            return dict(self._unflushed)

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` from the writer thread after each commit that stored events."""
        with self._cond:
            self._listeners.append(callback)

    def remove_listener(self, callback: Callable[[], None]) -> None:
        with self._cond, contextlib.suppress(ValueError):
            self._listeners.remove(callback)

    def close(self, timeout: float | None = None) -> None:
        """Commit what is queued, then stop the writer and close its connection."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    # ---- writer thread -------------------------------------------------------------------
    def _run(self) -> None:
        # A committed batch whose callers are not woken yet: they wake once the next batch is
        # taken and about to be written, so the writer is inside SQLite (without the GIL)
        # while the loop serves them. With nothing more queued they wake at once.
        committed: tuple[_Batch, int] | None = None
        while True:
            with self._cond:
                while not (self._batch.calls or self._counts or self._closing or committed):
                    self._idle = True
                    self._cond.wait(self._drops.due_in())
                    self._idle = False
                    self._drops.flush()
                work = self._take() if self._batch.calls or self._counts else None
                closing = self._closing
            if work is not None:
                before = partial(self._deliver, *committed) if committed else None
                committed = (work[0], self._commit(*work, before))
                continue
            if committed:
                self._deliver(*committed)
                committed = None
            if closing:
                with self._cond:
                    if self._batch.calls or self._counts:
                        continue
                if self._unflushed:
                    # Drops counted while the spool could not be written: a last try.
                    self._commit(_Batch.empty(), {})
                if self._conn is not None:
                    close_tracked(self._conn)
                    self._conn = None
                self._drops.flush(final=True)
                return

    def _take(self) -> tuple[_Batch, dict[str, int]]:
        """What the next commit writes; called under the lock.

        A large batch of async callers is cut in two. Its first half is committed, and its
        callers wake, while the second is written; from then on the loop serializes the
        events of one batch while the writer commits the other, instead of each waiting for
        the other. (Sync callers wait on their batch object, so theirs are never cut.)
        """
        batch, self._batch = self._batch, _Batch.empty()
        calls = len(batch.calls)
        if calls >= _SPLIT_CALLS and len(batch.futures) == calls and not batch.cut:
            batch, self._batch = batch.split(len(batch.calls) // 2)
        counts, self._counts = self._counts, {}
        return batch, counts

    def _commit(
        self, batch: _Batch, counts: dict[str, int], before: Callable[[], None] | None = None
    ) -> int:
        """Write ``batch`` and ``counts`` in one transaction; the number of rows stored. The
        callers are woken by :meth:`_deliver`. ``before`` runs once the connection is
        ready, just before the write."""
        for name, n in self._unflushed.items():
            counts[name] = counts.get(name, 0) + n
        self._unflushed = {}
        results = [False] * len(batch.calls)
        stored = 0
        try:
            try:
                with GATE:
                    conn = self._connection()
            finally:
                if before is not None:
                    before()
            with GATE:
                stored = self._write_or_roll_back(conn, batch, counts, results)
        except Exception as exc:
            # Never let the writer thread die: every later append in the process would wait
            # for it forever. Whatever went wrong, this batch is dropped and counted.
            error = _as_spool_error(self.config.path, exc)
            counter = _drop_counter(error)
            results = [False] * len(batch.calls)
            stored = 0
            counts[counter] = counts.get(counter, 0) + len(batch.rows)
            self._unflushed = counts
            if batch.rows:
                self._drops.dropped(counter.reason, len(batch.rows), str(error))
        batch.results[:] = results
        return stored

    def _write_or_roll_back(
        self, conn: sqlite3.Connection, batch: _Batch, counts: dict[str, int], results: list[bool]
    ) -> int:
        """:meth:`_write`, once more after pruning if the disk is full; rolled back if it
        raises (inside the fork gate: no transaction stays open across a fork)."""
        try:
            # Each attempt counts into its own copy: a retried batch is not counted twice.
            try:
                return self._write(conn, batch, dict(counts), results)
            except sqlite3.OperationalError as exc:
                if "full" not in str(exc).lower():
                    raise
                # The disk (or max_page_count) is full: free what done rows hold, try once more.
                self._rollback(conn)
                self._prune_all_done(conn)
                results[:] = [False] * len(batch.calls)
                return self._write(conn, batch, dict(counts), results)
        except Exception:
            self._rollback(conn)
            raise

    def _deliver(self, batch: _Batch, stored: int) -> None:
        """Wake the callers of a committed batch, then the append watchers."""
        batch.done.set()
        self._wake(batch)
        if stored:
            for callback in list(self._listeners):
                try:
                    callback()
                except Exception:
                    log.exception("spool: an append watcher failed")

    def _write(
        self, conn: sqlite3.Connection, batch: _Batch, counts: dict[str, int], results: list[bool]
    ) -> int:
        rows = batch.rows
        self._max_bytes = self._fill.current(conn)
        if not counts and 0 < len(rows) <= _AMPLE_CHUNK:
            size = 1 << (len(rows) - 1).bit_length()
            params = list(chain.from_iterable(rows))
            if size > len(rows):
                params.extend(_PAD * (size - len(rows)))
            params.append(self._max_bytes - _AMPLE_FACTOR * _estimate(rows) - _AMPLE_SLACK)
            if conn.execute(_INSERT_IF_AMPLE[size], params).rowcount == len(rows):
                results[:] = [True] * len(batch.calls)
                return len(rows)
        conn.execute("BEGIN IMMEDIATE")
        rows = self._fit(conn, batch, counts, results)
        conn.execute("SAVEPOINT batch")
        _insert(conn, rows)
        if rows and _used_bytes(conn) > self._max_bytes:
            # The estimate was short (rows take whole cells and pages): redo it call by call,
            # measuring, so that one batch cannot carry the spool past its limit.
            conn.execute("ROLLBACK TO batch")
            rows = self._insert_measured(conn, batch, counts, results)
        conn.execute("RELEASE batch")
        if counts:
            conn.executemany(_ADD_COUNTER, list(counts.items()))
        conn.execute("COMMIT")
        return len(rows)

    def _fit(
        self, conn: sqlite3.Connection, batch: _Batch, counts: dict[str, int], results: list[bool]
    ) -> list[Row]:
        """The rows that fit under ``max_bytes``, pruning done rows and applying the policy."""
        need = _estimate(batch.rows)
        used = _used_bytes(conn)
        self._fill.check(used)
        room = self._max_bytes - used
        if need > room:
            room += self._prune_done(conn, need - room)
        if need > room and self.config.full_policy is FullPolicy.DROP_OLDEST:
            before = counts.get(Counter.DROPPED_EVICTED, 0)
            room += self._evict_pending(conn, need - room, counts)
            if evicted := counts.get(Counter.DROPPED_EVICTED, 0) - before:
                self._drops.dropped(
                    "evicted",
                    evicted,
                    f"{self.config.path} is at its size limit ({self._max_bytes} bytes); the "
                    "oldest pending events made room",
                )
        if need <= room:
            results[:] = [True] * len(batch.calls)
            return batch.rows
        kept: list[Row] = []
        start = 0
        for i, n in enumerate(batch.calls):
            rows = batch.rows[start : start + n]
            start += n
            size = _estimate(rows)
            if size <= room:
                room -= size
                kept.extend(rows)
                results[i] = True
            else:
                counts[_FULL] = counts.get(_FULL, 0) + n
        if len(kept) < len(batch.rows):
            self._drops.dropped(
                "spool_full",
                len(batch.rows) - len(kept),
                f"{self.config.path} is at its size limit ({self._max_bytes} bytes)",
            )
        return kept

    def _insert_measured(
        self, conn: sqlite3.Connection, batch: _Batch, counts: dict[str, int], results: list[bool]
    ) -> list[Row]:
        kept: list[Row] = []
        start = 0
        for i, n in enumerate(batch.calls):
            rows = batch.rows[start : start + n]
            start += n
            if not results[i]:
                continue
            conn.execute("SAVEPOINT call")
            _insert(conn, rows)
            if _used_bytes(conn) > self._max_bytes:
                conn.execute("ROLLBACK TO call")
                results[i] = False
                counts[_FULL] = counts.get(_FULL, 0) + n
            else:
                kept.extend(rows)
            conn.execute("RELEASE call")
        return kept

    def _prune_done(self, conn: sqlite3.Connection, want: int) -> int:
        """Delete done rows, oldest first, until ``want`` bytes are free (or none are left)."""
        return _delete_oldest(conn, "done", want, first_chunk=_PRUNE_CHUNK)

    def _evict_pending(self, conn: sqlite3.Connection, want: int, counts: dict[str, int]) -> int:
        """Delete the oldest pending rows until ``want`` bytes are free, counting them."""
        # Evict no more than the new events need: start with one row, double.
        return _delete_oldest(conn, "pending", want, first_chunk=1, counts=counts)

    def _prune_all_done(self, conn: sqlite3.Connection) -> None:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("DELETE FROM events WHERE state = 'done'")
            conn.execute("COMMIT")
        self._rollback(conn)

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")

    def _connection(self) -> sqlite3.Connection:
        if self._conn is not None:
            if self._same_file():
                return self._conn
            # The file was moved aside (``spool-ship doctor``) or removed: writing on would
            # spool into a file nothing ships. Open the spool at the path afresh.
            close_tracked(self._conn)
            self._conn = None
        now = time.monotonic()
        # At shutdown every try is a real one: the last chance to write what is queued and
        # the counts of what was dropped.
        if self._open_error is not None and now < self._next_open_at and not self._closing:
            raise self._open_error
        try:
            self._conn = track(connect(self.config))
        except SpoolError as exc:
            self._open_error = exc
            self._next_open_at = now + _REOPEN_INTERVAL
            raise
        self._open_error = None
        self._identity = _file_identity(self.config.path)
        return self._conn

    def _same_file(self) -> bool:
        """One ``stat`` per commit: is the path still the file this connection has open?"""
        return _file_identity(self.config.path) == self._identity

    @staticmethod
    def _wake(batch: _Batch) -> None:
        if batch.loop is None:
            return
        by_loop = {batch.loop: batch.futures}
        if batch.many_loops:
            by_loop = {}
            for entry in batch.futures:
                by_loop.setdefault(entry[1].get_loop(), []).append(entry)
        for loop, futures in by_loop.items():
            with contextlib.suppress(RuntimeError):  # the caller's loop is already closed
                loop.call_soon_threadsafe(_resolve, futures, batch.results)


def _insert(conn: sqlite3.Connection, rows: list[Row]) -> None:
    """Insert ``rows`` in order, as ``executemany`` would, in few statements."""
    start, left = 0, len(rows)
    while left:
        n = min(_INSERT_CHUNK, 1 << (left.bit_length() - 1))
        conn.execute(_INSERTS[n], list(chain.from_iterable(rows[start : start + n])))
        start += n
        left -= n


def _estimate(rows: list[Row]) -> int:
    """The bytes ``rows`` will take in the spool, about."""
    return sum([len(p) + len(s) + len(t) for s, t, _, p, _ in rows]) + _ROW_OVERHEAD * len(rows)


def _resolve(futures: list[tuple[int, asyncio.Future[bool]]], results: list[bool]) -> None:
    for index, future in futures:
        if not future.done():
            future.set_result(results[index])


def _used_bytes(conn: sqlite3.Connection) -> int:
    """Bytes in use: pages minus free pages, times the page size (one statement)."""
    return int(conn.execute(USED_BYTES).fetchone()[0])


def _delete_oldest(
    conn: sqlite3.Connection,
    state: str,
    want: int,
    *,
    first_chunk: int,
    counts: dict[str, int] | None = None,
) -> int:
    """Delete rows in ``state``, oldest first, until ``want`` bytes are free; the bytes freed.
    With ``counts``, the deleted rows are counted as ``Counter.DROPPED_EVICTED``."""
    before = _used_bytes(conn)
    chunk = first_chunk
    while _used_bytes(conn) > before - want:
        cur = conn.execute(
            "DELETE FROM events WHERE seq IN "
            "(SELECT seq FROM events WHERE state = ? ORDER BY seq LIMIT ?)",
            (state, chunk),
        )
        if cur.rowcount <= 0:
            break
        if counts is not None:
            counts[_EVICTED] = counts.get(_EVICTED, 0) + cur.rowcount
        chunk = min(2 * chunk, _PRUNE_CHUNK)
    return before - _used_bytes(conn)


def _file_identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _as_spool_error(path: Path, exc: Exception) -> SpoolError:
    if isinstance(exc, SpoolError):
        return exc
    if isinstance(exc, sqlite3.Error):
        return translate_error(path, exc)
    return SpoolError(path, f"unexpected error in the spool writer: {exc!r}")


def _drop_counter(error: SpoolError) -> Counter:
    for kind, counter in _DROP_COUNTERS:
        if isinstance(error, kind):
            return counter
    return Counter.DROPPED_SPOOL_ERROR


_DROP_COUNTERS: tuple[tuple[type[SpoolError], Counter], ...] = (
    (errors.SpoolFullError, Counter.DROPPED_DISK_FULL),
    (errors.SpoolCorruptError, Counter.DROPPED_SPOOL_CORRUPT),
    (errors.NotASpoolError, Counter.DROPPED_NOT_A_SPOOL),
    (errors.NewerSchemaError, Counter.DROPPED_NEWER_SCHEMA),
    (errors.SpoolLockedError, Counter.DROPPED_SPOOL_LOCKED),
    (errors.UnsafeSpoolError, Counter.DROPPED_UNSAFE_FILE),
)
_FULL = Counter.DROPPED_SPOOL_FULL
_EVICTED = Counter.DROPPED_EVICTED


_WRITER = "writer"


def acquire_committer(config: SpoolConfig) -> GroupCommitter:
    """The one writer for ``config.path`` in this process, started on first use (and
    afresh in a forked child: see :mod:`spool._registry`)."""
    return REGISTRY.acquire(_WRITER, _key(config), lambda: GroupCommitter(config))


def release_committer(committer: GroupCommitter, timeout: float | None = None) -> bool:
    """Drop one reference; the last one commits what is queued and stops the writer (True)."""
    if not REGISTRY.release(_WRITER, _key(committer.config), committer):
        return False
    committer.close(timeout)
    return True


def _key(config: SpoolConfig) -> str:
    return os.path.realpath(config.path)


def _close_all() -> None:
    for committer in REGISTRY.take_all(_WRITER):
        committer.close(timeout=10.0)


atexit.register(_close_all)
