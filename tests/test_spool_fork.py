"""Processors across ``os.fork()`` (multiprocessing's fork context, gunicorn --preload, celery
prefork) and across ``os.chdir()``: a processor used in the parent keeps its promise in a
forked child, and a relative spool path stays the spool it named at construction.

Children are real forks; every wait on them is bounded, so a hang fails the test instead of
stalling the suite.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import threading
from multiprocessing.synchronize import Event as EventType
from pathlib import Path

import pytest
from conftest import span_item

from shipper import ShipperConfig
from shipper.testing import FakeSpanServer
from spool import EventState, Spool, SpoolConfig, SpoolProcessor, SyncSpoolProcessor
from spool._fork import GATE, close_tracked, track

# A fork with threads running is what this file tests (Python 3.12 warns about it).
pytestmark = pytest.mark.filterwarnings("ignore:This process .* is multi-threaded")

FORK = multiprocessing.get_context("fork")
CHILD_BOUND = 30.0


def spooled_ids(path: Path) -> list[str]:
    with Spool.open(path, create=False) as opened:
        states = list(EventState)
        return sorted(record.span_id for record in opened.export(states))


def join_child(child: multiprocessing.process.BaseProcess, what: str) -> None:
    child.join(CHILD_BOUND)
    if child.is_alive():
        child.kill()
        child.join(CHILD_BOUND)
        raise AssertionError(f"the forked child hung: {what}")
    assert child.exitcode == 0, f"the forked child failed ({child.exitcode}): {what}"


def sync_child(processor: SyncSpoolProcessor) -> None:
    processor.on_span_start(span_item("child", end=False))
    processor.shutdown()


def async_child(processor: SpoolProcessor) -> None:
    async def main() -> None:
        await processor.on_span_start(span_item("child", end=False))
        await processor.shutdown()

    asyncio.run(main())


def test_a_sync_processor_used_before_fork_commits_in_the_child(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    processor = SyncSpoolProcessor(path)
    processor.on_span_start(span_item("parent", end=False))

    child = FORK.Process(target=sync_child, args=(processor,))
    child.start()
    join_child(child, "its first on_span_start never returned")

    # The parent's writer is still its own and still works.
    processor.on_span_end(span_item("parent", end=True))
    processor.shutdown()
    assert spooled_ids(path) == ["child", "parent", "parent"]


def test_an_async_processor_used_before_fork_commits_in_the_child(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    processor = SpoolProcessor(path)

    async def parent() -> None:
        await processor.on_span_start(span_item("parent", end=False))

    asyncio.run(parent())

    child = FORK.Process(target=async_child, args=(processor,))
    child.start()
    join_child(child, "its first await on_span_start never returned")

    asyncio.run(processor.shutdown())
    assert spooled_ids(path) == ["child", "parent"]


def shipping_child(processor: SyncSpoolProcessor, go: EventType) -> None:
    if not go.wait(CHILD_BOUND):
        raise SystemExit(3)
    processor.on_span_end(span_item("child", end=True))
    processor.shutdown(timeout=CHILD_BOUND / 2)


def test_ship_true_in_a_forked_child_starts_the_childs_own_shipper(
    tmp_path: Path, span_server: FakeSpanServer, ship_config: ShipperConfig
) -> None:
    path = tmp_path / "spool.db"
    processor = SyncSpoolProcessor(path, ship=ship_config)
    processor.on_span_end(span_item("parent", end=True))
    assert span_server.wait_for(lambda: "parent" in span_server.completed_ids(), 10.0)

    go = FORK.Event()
    child = FORK.Process(target=shipping_child, args=(processor, go))
    child.start()
    # The parent's shipper stops before the child appends: only a shipper of the child's own
    # can deliver the child's span.
    processor.shutdown()
    go.set()
    join_child(child, "on_span_end or shutdown never returned")

    assert span_server.completed_ids() == {"parent", "child"}
    assert spooled_ids(path) == ["child", "parent"]
    with Spool.open(path, create=False) as opened:
        assert opened.stats().pending == 0


def child_of_a_busy_parent(committed_at_fork: threading.Event, path: Path) -> None:
    # The child's copy of the event is as it was at the fork.
    if not committed_at_fork.is_set():
        raise SystemExit(4)
    processor = SyncSpoolProcessor(path)
    processor.on_span_start(span_item("child", end=False))
    processor.shutdown()


def test_a_fork_waits_until_no_worker_is_inside_a_transaction(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    opened = Spool.open(path)
    track(opened.conn)
    in_transaction, release, committed = threading.Event(), threading.Event(), threading.Event()

    def worker() -> None:
        # A worker's transaction (it holds the WAL's write lock), as the writer's or a
        # shipper's would be when the fork comes.
        with GATE:
            opened.conn.execute("BEGIN IMMEDIATE")
            in_transaction.set()
            release.wait(CHILD_BOUND)
            opened.conn.execute("COMMIT")
        committed.set()

    thread = threading.Thread(target=worker)
    thread.start()
    assert in_transaction.wait(CHILD_BOUND)
    child = FORK.Process(target=child_of_a_busy_parent, args=(committed, path))
    forker = threading.Thread(target=child.start)
    forker.start()
    try:
        assert GATE.waiting.wait(CHILD_BOUND), "the fork did not wait for the transaction"
    finally:
        release.set()
        forker.join(CHILD_BOUND)
        thread.join(CHILD_BOUND)
    join_child(child, "forked inside a transaction, or its writer waited on the parent's lock")

    assert opened.stats().pending == 1  # the parent's connection still works
    close_tracked(opened.conn)
    opened.close()
    assert spooled_ids(path) == ["child"]


def child_outliving_its_parent(
    processor: SyncSpoolProcessor, opened: EventType, parent_closed: EventType
) -> None:
    processor.on_span_start(span_item("child", end=False))
    opened.set()
    if not parent_closed.wait(CHILD_BOUND):
        raise SystemExit(3)
    processor.on_span_end(span_item("child", end=True))
    processor.shutdown()


def test_the_parents_last_close_loses_nothing_the_child_commits_after_it(tmp_path: Path) -> None:
    # The parent closing its last connection checkpoints and deletes the WAL when it sees no
    # other process holding the spool; the child's commits must not go to a deleted WAL.
    path = tmp_path / "spool.db"
    processor = SyncSpoolProcessor(path)
    processor.on_span_start(span_item("parent", end=False))

    opened, parent_closed = FORK.Event(), FORK.Event()
    child = FORK.Process(target=child_outliving_its_parent, args=(processor, opened, parent_closed))
    child.start()
    assert opened.wait(CHILD_BOUND), "the child's first on_span_start never returned"
    processor.shutdown()
    parent_closed.set()
    join_child(child, "its on_span_end after the parent closed never returned")

    assert spooled_ids(path) == ["child", "child", "parent"]


@pytest.fixture
def two_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """Two directories; the test starts in the first."""
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    monkeypatch.chdir(first)
    return first, second


def test_a_relative_path_is_resolved_once_at_construction(two_dirs: tuple[Path, Path]) -> None:
    first, second = two_dirs
    processor = SyncSpoolProcessor("spool.db")
    config = SpoolConfig.from_env("relative.db")
    processor.on_span_start(span_item("a", end=False))

    os.chdir(second)
    processor.on_span_end(span_item("a", end=True))
    processor.shutdown()

    assert processor.config.path == first / "spool.db"
    assert config.path == first / "relative.db"
    assert spooled_ids(first / "spool.db") == ["a", "a"]
    assert not (second / "spool.db").exists()


def test_a_relative_path_given_before_the_first_call_is_not_reread_after_chdir(
    two_dirs: tuple[Path, Path],
) -> None:
    first, second = two_dirs
    processor = SpoolProcessor("spool.db")

    os.chdir(second)
    asyncio.run(processor.on_span_start(span_item("a", end=False)))
    asyncio.run(processor.shutdown())

    assert spooled_ids(first / "spool.db") == ["a"]
    assert not (second / "spool.db").exists()
