"""The group committer's write path (spool/_committer.py), seen through the statements its
connection runs (SQLite's trace callback) and through what each caller is told.

- With ample room a batch is one ``INSERT ... SELECT`` statement, its own transaction; near
  the size limit it takes the measured path (``BEGIN IMMEDIATE``), and the limit holds.
- A large batch of async callers is committed in two halves, and each caller still gets the
  answer for its own rows; sync callers' batches are never cut.
- The callers of a committed batch are woken even when the next commit fails.
- Under sustained appends the WAL stays bounded (SQLite's automatic checkpoint inside the
  writer's commits still runs and still rewinds it).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import used_bytes

from spool import EventKind, EventState, NewEvent, Spool, SpoolConfig
from spool._committer import (
    _AMPLE_CHUNK,
    _SPLIT_CALLS,
    GroupCommitter,
    Row,
    _estimate,
    acquire_committer,
    release_committer,
)


def row(i: int, size: int = 100) -> Row:
    return NewEvent(f"span-{i:05d}", "trace", EventKind.START, b"x" * size).row(1.0)


class Traced:
    """A committer whose connection reports every statement it runs, and which can be held
    inside its next append watcher call (so that callers queue up behind it)."""

    def __init__(self, config: SpoolConfig) -> None:
        self.committer: GroupCommitter = acquire_committer(config)
        self.statements: list[str] = []
        self.held = threading.Event()
        self.release = threading.Event()
        self.release.set()
        self.committer.add_listener(self._watch)
        assert self.committer.append([]) in (True, False)  # opens the writer's connection
        conn = self.committer._conn
        assert conn is not None
        conn.set_trace_callback(self.statements.append)

    def _watch(self) -> None:
        self.held.set()
        self.release.wait(timeout=30)

    def hold_next_commit(self) -> None:
        self.held.clear()
        self.release.clear()

    def inserts(self) -> list[str]:
        return [s for s in self.statements if s.startswith("INSERT INTO events")]

    def begins(self) -> int:
        return sum(s == "BEGIN IMMEDIATE" for s in self.statements)

    def close(self) -> None:
        self.release.set()
        release_committer(self.committer)


@pytest.fixture
def traced(spool_config: SpoolConfig) -> Iterator[Traced]:
    Spool.open(spool_config).close()
    t = Traced(spool_config)
    try:
        yield t
    finally:
        t.close()


def seqs_in_order(config: SpoolConfig) -> list[str]:
    with Spool.open(config) as spool:
        return [r.span_id for r in spool.export([EventState.PENDING])]


@pytest.mark.parametrize("n", [1, 2, 3, 63, 64, 65, _AMPLE_CHUNK - 1, _AMPLE_CHUNK])
def test_with_ample_room_a_batch_is_one_statement_and_keeps_its_order(
    traced: Traced, spool_config: SpoolConfig, n: int
) -> None:
    rows = [row(i) for i in reversed(range(n))]  # ids descending: order is not by id
    assert traced.committer.append(rows)
    assert traced.begins() == 0
    assert len(traced.inserts()) == 1
    assert seqs_in_order(spool_config) == [r[0] for r in rows]


def test_a_batch_larger_than_one_statement_takes_the_measured_path(
    traced: Traced, spool_config: SpoolConfig
) -> None:
    rows = [row(i) for i in reversed(range(_AMPLE_CHUNK + 1))]
    assert traced.committer.append(rows)
    assert traced.begins() == 1
    assert seqs_in_order(spool_config) == [r[0] for r in rows]


def test_the_room_is_checked_once_per_statement_so_a_batch_goes_in_whole(tmp_path: Path) -> None:
    # Room for the fast path's margin and hardly more: were the check made row by row, the
    # rows already inserted would fail it for the rest of the batch.
    rows = [row(i, size=20_000) for i in range(_AMPLE_CHUNK)]
    need = _estimate(rows)
    probe = SpoolConfig(path=tmp_path / "probe.db")
    Spool.open(probe).close()
    config = SpoolConfig(
        path=tmp_path / "spool.db", max_bytes=used_bytes(probe.path) + 4 * need + (1 << 20) + 100
    )
    Spool.open(config).close()
    traced = Traced(config)
    try:
        assert traced.committer.append(rows)
        assert traced.begins() == 0
        assert len(traced.inserts()) == 1
    finally:
        traced.close()
    assert seqs_in_order(config) == [r[0] for r in rows]


def test_near_the_limit_batches_are_measured_and_the_limit_holds(tmp_path: Path) -> None:
    config = SpoolConfig(path=tmp_path / "spool.db", max_bytes=3 << 20)
    Spool.open(config).close()
    traced = Traced(config)
    answers: list[bool] = []
    try:
        for i in range(400):
            answers.append(traced.committer.append([row(i, size=20_000)]))
            if not answers[-1]:
                break
        # The first appends had ample room: one statement each, no transaction around it.
        first_begin = traced.statements.index("BEGIN IMMEDIATE")
        # (SQLite reports the pragma functions inside a statement as "-- PRAGMA ..." lines.)
        fast = [s for s in traced.statements[:first_begin] if not s.startswith("--")]
        assert len(fast) > 10
        assert all(s.startswith("INSERT INTO events") for s in fast)
    finally:
        traced.close()
    with Spool.open(config) as spool:
        stored = spool.stats().pending
    used = used_bytes(config.path)
    assert config.max_bytes is not None
    assert used <= config.max_bytes
    assert answers[-1] is False
    assert stored == answers.count(True) == len(answers) - 1
    # It stopped because the room was gone (less than two events' worth), not at the margin.
    assert config.max_bytes - used < 2 * 24_576


def test_a_large_batch_of_async_callers_commits_in_two_halves(
    traced: Traced, spool_config: SpoolConfig
) -> None:
    calls = 2 * _SPLIT_CALLS

    async def main() -> list[bool]:
        traced.hold_next_commit()
        first = traced.committer.submit([row(100_000)])
        assert await asyncio.to_thread(traced.held.wait, 10)
        # The writer is inside its watcher: everything submitted now waits as one batch.
        futures = [traced.committer.submit([row(i)]) for i in range(calls)]
        before = len(traced.inserts())
        traced.release.set()
        answers = await asyncio.wait_for(asyncio.gather(first, *futures), 30)
        assert len(traced.inserts()) - before == 2
        return answers[1:]

    assert asyncio.run(main()) == [True] * calls
    assert seqs_in_order(spool_config)[1:] == [f"span-{i:05d}" for i in range(calls)]


def test_each_caller_gets_the_answer_for_its_own_rows_across_the_halves(tmp_path: Path) -> None:
    # Room for about 1.5 halves: the first half fits whole, the second only in part.
    config = SpoolConfig(path=tmp_path / "spool.db", max_bytes=1 << 20)
    Spool.open(config).close()
    assert config.max_bytes is not None
    room = config.max_bytes - used_bytes(config.path)
    calls = 2 * _SPLIT_CALLS
    size = int(room / (0.75 * calls))
    traced = Traced(config)

    async def main() -> list[bool]:
        traced.hold_next_commit()
        first = traced.committer.submit([row(100_000, size=10)])
        assert await asyncio.to_thread(traced.held.wait, 10)
        futures = [traced.committer.submit([row(i, size=size)]) for i in range(calls)]
        traced.release.set()
        answers = await asyncio.wait_for(asyncio.gather(first, *futures), 30)
        assert answers[0] is True
        return answers[1:]

    try:
        answers = asyncio.run(main())
        traced.committer.append([])  # what the writer counted is written with a commit
    finally:
        traced.close()
    with Spool.open(config) as spool:
        kept = {r.span_id for r in spool.export([EventState.PENDING])}
        dropped = spool.stats().dropped
    told_kept = {f"span-{i:05d}" for i, ok in enumerate(answers) if ok}
    assert told_kept == kept - {"span-100000"}
    assert all(answers[: calls // 2])  # the first half fitted whole
    assert not all(answers)
    assert dropped == {"spool_full": answers.count(False)}


def test_sync_callers_are_never_cut(traced: Traced, spool_config: SpoolConfig) -> None:
    threads = _SPLIT_CALLS + 8
    traced.hold_next_commit()
    holder = threading.Thread(target=traced.committer.append, args=([row(100_000)],))
    holder.start()
    assert traced.held.wait(10)
    answers: list[bool] = []
    pool = [
        threading.Thread(target=lambda i=i: answers.append(traced.committer.append([row(i)])))
        for i in range(threads)
    ]
    for thread in pool:
        thread.start()
    # Wait until every thread is queued behind the held commit.
    for _ in range(30_000):
        if len(traced.committer._batch.calls) == threads:
            break
        threading.Event().wait(0.001)
    assert len(traced.committer._batch.calls) == threads
    before = len(traced.inserts())
    traced.release.set()
    for thread in [holder, *pool]:
        thread.join(timeout=30)
        assert not thread.is_alive()
    assert answers == [True] * threads
    assert len(traced.inserts()) - before == 1


def test_callers_of_a_committed_half_are_woken_when_the_next_commit_fails(
    traced: Traced, spool_config: SpoolConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = 2 * _SPLIT_CALLS
    opened = 0
    real = GroupCommitter._connection

    def connection(self: GroupCommitter) -> sqlite3.Connection:
        nonlocal opened
        opened += 1
        if opened == 2:  # the first half is written, the second half's commit fails
            raise sqlite3.OperationalError("disk I/O error")
        return real(self)

    async def main() -> list[bool]:
        traced.hold_next_commit()
        first = traced.committer.submit([row(100_000)])
        assert await asyncio.to_thread(traced.held.wait, 10)
        monkeypatch.setattr(GroupCommitter, "_connection", connection)
        futures = [traced.committer.submit([row(i)]) for i in range(calls)]
        traced.release.set()
        await asyncio.wait_for(first, 30)
        return list(await asyncio.wait_for(asyncio.gather(*futures), 30))

    answers = asyncio.run(main())
    assert answers == [True] * (calls // 2) + [False] * (calls // 2)
    assert seqs_in_order(spool_config)[1:] == [f"span-{i:05d}" for i in range(calls // 2)]


def test_the_wal_stays_bounded_under_sustained_appends(
    traced: Traced, spool_config: SpoolConfig
) -> None:
    conn = traced.committer._conn
    assert conn is not None
    autocheckpoint = conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
    largest = 0
    for b in range(150):  # about 6 MB of events, 20 rows of 2 KB per commit
        assert traced.committer.append([row(b * 20 + i, size=2000) for i in range(20)])
        largest = max(largest, os.path.getsize(f"{spool_config.path}-wal"))
    # Frames of 4 KiB pages with 24-byte headers: the automatic checkpoint's threshold, and
    # one commit's worth beyond it.
    assert largest <= (autocheckpoint + 64) * (4096 + 24), largest
    with Spool.open(spool_config) as spool:
        assert spool.stats().pending == 150 * 20
