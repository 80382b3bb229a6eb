"""Group commit: concurrent appends share transactions, and each caller still returns only
once its own event is committed (visible to any other connection)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from spool import (
    EventState,
    Spool,
    SpoolConfig,
    SpoolProcessor,
    SyncSpoolProcessor,
    watch_appends,
)
from spool._committer import GroupCommitter, acquire_committer, release_committer

EVENTS = 500


def span(i: int) -> dict[str, Any]:
    return {
        "id": f"span-{i}",
        "trace_id": f"trace-{i % 7}",
        "name": "work",
        "start_timestamp": "2025-01-01T00:00:00+00:00",
        "metadata": {"i": i},
    }


class Commits:
    """Counts the commits that stored events, through the committer's own listener."""

    def __init__(self, config: SpoolConfig) -> None:
        self.count = 0
        self._lock = threading.Lock()
        self.committer: GroupCommitter = acquire_committer(config)
        self.committer.add_listener(self._seen)

    def _seen(self) -> None:
        with self._lock:
            self.count += 1

    def stop(self) -> int:
        """Release the writer; once the last user lets go this joins its thread, so every
        listener call has happened when the count is read."""
        release_committer(self.committer)
        assert not self.committer._thread.is_alive()
        return self.count


@pytest.fixture
def created(spool_config: SpoolConfig) -> SpoolConfig:
    Spool.open(spool_config).close()
    return spool_config


def reader(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None, check_same_thread=False)


def is_visible(conn: sqlite3.Connection, span_id: str) -> bool:
    row = conn.execute("SELECT state FROM events WHERE span_id = ?", (span_id,)).fetchone()
    return bool(row == (EventState.PENDING.value,))


def stored(config: SpoolConfig) -> list[str]:
    with Spool.open(config) as spool:
        return [r.span_id for r in spool.export([EventState.PENDING])]


def test_async_appends_share_commits_and_each_returns_committed(created: SpoolConfig) -> None:
    commits = Commits(created)
    conn = reader(created.path)
    invisible: list[int] = []

    async def main() -> None:
        processor = SpoolProcessor(config=created)

        async def one(i: int) -> None:
            await processor.on_span_start(span(i))
            if not is_visible(conn, f"span-{i}"):
                invisible.append(i)

        await asyncio.gather(*(one(i) for i in range(EVENTS)))
        await processor.shutdown()

    try:
        asyncio.run(main())
    finally:
        conn.close()
    count = commits.stop()

    assert invisible == []
    assert sorted(stored(created)) == sorted(f"span-{i}" for i in range(EVENTS))
    # 500 events in at most 25 transactions (in practice a handful): the durable hot path
    # costs a commit per batch, not per event.
    assert 1 <= count <= EVENTS // 20, f"{count} commits for {EVENTS} events"


def test_threaded_appends_share_commits_and_each_returns_committed(
    created: SpoolConfig,
) -> None:
    commits = Commits(created)
    processor = SyncSpoolProcessor(config=created)
    threads = 10
    start = threading.Barrier(threads)
    invisible: list[int] = []

    def worker(t: int) -> None:
        conn = reader(created.path)
        try:
            start.wait()
            for i in range(t, EVENTS, threads):
                processor.on_span_start(span(i))
                if not is_visible(conn, f"span-{i}"):
                    invisible.append(i)
        finally:
            conn.close()

    pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    processor.shutdown()
    count = commits.stop()

    assert invisible == []
    assert sorted(stored(created)) == sorted(f"span-{i}" for i in range(EVENTS))
    # Ten threads each waiting for their commit: while one batch commits, the others queue.
    assert 1 <= count <= EVENTS // 2, f"{count} commits for {EVENTS} events"


def test_one_call_with_many_spans_is_one_commit(created: SpoolConfig) -> None:
    commits = Commits(created)

    async def main() -> None:
        processor = SpoolProcessor(config=created)
        await processor.on_spans_start([span(i) for i in range(100)])
        await processor.shutdown()

    asyncio.run(main())
    assert commits.stop() == 1
    assert len(stored(created)) == 100


def test_the_event_loop_keeps_running_while_the_spool_is_locked(created: SpoolConfig) -> None:
    """Another process holds the write lock: the append waits off the loop, other tasks run,
    and the event is committed (not dropped) once the lock is released."""
    blocker = sqlite3.connect(created.path, isolation_level=None)
    ticks = 0

    async def main() -> bool:
        nonlocal ticks
        processor = SpoolProcessor(config=created)
        blocker.execute("BEGIN IMMEDIATE")
        append = asyncio.create_task(processor.on_span_start(span(1)))
        for _ in range(200):
            await asyncio.sleep(0)  # a yield to the loop, not a timed wait
            ticks += 1
        waited = not append.done()
        blocker.execute("COMMIT")
        await append
        await processor.shutdown()
        return waited

    try:
        waited = asyncio.run(main())
    finally:
        blocker.close()
    assert waited, "the append finished while another connection held the write lock"
    assert ticks == 200
    assert stored(created) == ["span-1"]


def test_appends_from_several_event_loops_share_commits(created: SpoolConfig) -> None:
    """Four threads, each with its own event loop: one commit may wake callers on several
    loops, and each must be woken on its own."""
    commits = Commits(created)
    loops = 4
    per_loop = 100
    start = threading.Barrier(loops)
    failures: list[BaseException] = []

    def run_loop(n: int) -> None:
        async def main() -> None:
            processor = SpoolProcessor(config=created)
            start.wait()
            await asyncio.gather(
                *(processor.on_span_start(span(n * per_loop + i)) for i in range(per_loop))
            )
            await processor.shutdown()

        try:
            asyncio.run(main())
        except BaseException as exc:
            failures.append(exc)

    pool = [threading.Thread(target=run_loop, args=(n,), daemon=True) for n in range(loops)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=60)  # a bound on a hang, not a wait for progress
    assert not any(thread.is_alive() for thread in pool), "a caller was never woken"
    assert failures == []
    count = commits.stop()
    assert sorted(stored(created)) == sorted(f"span-{i}" for i in range(loops * per_loop))
    assert 1 <= count < loops * per_loop


def test_a_failing_watcher_does_not_stop_the_writer(created: SpoolConfig) -> None:
    """BUG (spool/_committer.py, GroupCommitter._commit): listeners run on the writer thread
    without a guard, so a callback given to the public ``watch_appends`` that raises (say,
    ``call_soon_threadsafe`` on a loop that has closed) kills the writer thread, and every
    later append in the process waits forever: the agent hangs on its next span."""
    crashed: list[BaseException | None] = []
    previous = threading.excepthook
    threading.excepthook = lambda args: crashed.append(args.exc_value)

    def broken_watcher() -> None:
        raise RuntimeError("Event loop is closed")

    unwatch = watch_appends(created, broken_watcher)
    processor = SyncSpoolProcessor(config=created)
    second_returned = threading.Event()

    def second() -> None:
        processor.on_span_start(span(2))
        second_returned.set()

    try:
        processor.on_span_start(span(1))
        threading.Thread(target=second, daemon=True).start()
        returned = second_returned.wait(timeout=5)  # a bound on a hang, not a wait for progress
    finally:
        threading.excepthook = previous
        unwatch()
        processor.shutdown()
    assert returned, f"the second append never returned; the writer died of {crashed}"
    assert sorted(stored(created)) == ["span-1", "span-2"]
