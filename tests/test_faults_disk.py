"""Disk full, two ways (issue 6, part A): the spool's own size limit (``max_bytes``) and SQLite
itself answering SQLITE_FULL.

In both the promise is the same: the agent's processor calls return normally, the events that
do not fit are counted as ``dropped`` with a reason, nothing already spooled is lost, a shipper
keeps shipping (to a real ``FakeSpanServer`` through the real SDK) and its done rows make room,
and appends succeed again afterwards.

SQLITE_FULL without a small filesystem: ``PRAGMA max_page_count`` caps the database file per
connection, and no ``SpoolConfig`` option reaches the connections the spool opens itself (the
group committer's and the shipper's). The ``full_disk`` fixture therefore wraps the one
connection factory, ``spool._schema.connect``, where the committer and the stores call it, so
every connection the spool opens gets the cap right after the spool's own pragmas: real SQLite
returns real SQLITE_FULL through the real code paths; nothing is mocked, but the wrapper is a
stand-in for a hook the spool lacks (e.g. ``SpoolConfig.max_page_count``, or a cap derived from
``max_bytes`` in ``_schema._configure``). A cap on the database is not the whole of a full
disk: the WAL file can still grow, which a real full disk would also refuse.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import SPAN_ENDED_AT, SPAN_STARTED_AT, FakeClock, run_async
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import spool._committer
import spool.store
from shipper import DrainResult, Shipper, ShipperConfig
from shipper.testing import FakeSpanServer
from spool import (
    EventKind,
    EventState,
    NewEvent,
    Spool,
    SpoolConfig,
    SpoolProcessor,
    SyncSpoolProcessor,
    ops,
)
from spool._committer import _Batch, acquire_committer, release_committer
from spool._schema import connect

MAX_BYTES = 256 * 1024
INPUT_BYTES = 1500


def span(n: int, size: int = INPUT_BYTES) -> dict[str, Any]:
    """A complete span whose payload is a little over ``size`` bytes."""
    return {
        "name": f"op-{n}",
        "id": f"span-{n:05d}",
        "trace_id": "trace-1",
        "start_timestamp": SPAN_STARTED_AT,
        "end_timestamp": SPAN_ENDED_AT,
        "input": {"prompt": "x" * size},
    }


def spooled_ids(config: SpoolConfig, *states: EventState) -> list[str]:
    with Spool.open(config) as spool:
        return [r.span_id for r in spool.export(list(states or EventState))]


def stats_of(config: SpoolConfig) -> Any:
    with Spool.open(config) as spool:
        return spool.stats()


def drain(
    config: SpoolConfig, ship_config: ShipperConfig, clock: FakeClock | None = None
) -> DrainResult:
    async def main() -> DrainResult:
        options: dict[str, Any] = {} if clock is None else {"clock": clock}
        async with Shipper(config, ship_config, **options) as shipper:
            return await shipper.drain(timeout=30.0)

    return run_async(main())


def shipped_ids(server: FakeSpanServer) -> set[str]:
    return {span_id for _, span_id in server.spans()}


# ---- the agent's side: both processors --------------------------------------------------------

Emit = Callable[[SpoolConfig, list[dict[str, Any]]], None]


def emit_sync(config: SpoolConfig, spans: list[dict[str, Any]]) -> None:
    processor = SyncSpoolProcessor(config=config)
    try:
        for s in spans:
            processor.on_span_end(s)  # must return, whatever the spool's state
    finally:
        processor.shutdown()


def emit_async(config: SpoolConfig, spans: list[dict[str, Any]]) -> None:
    async def main() -> None:
        processor = SpoolProcessor(config=config)
        try:
            for s in spans:
                await processor.on_span_end(s)
        finally:
            await processor.shutdown()

    run_async(main())


EMITTERS = {"sync": emit_sync, "async": emit_async}


# ---- (a) the spool's size limit ---------------------------------------------------------------


@pytest.mark.parametrize("emitter", sorted(EMITTERS))
def test_over_max_bytes_appends_are_dropped_counted_and_shipping_makes_room(
    tmp_path: Path,
    emitter: str,
    span_server: FakeSpanServer,
    ship_config: ShipperConfig,
) -> None:
    emit = EMITTERS[emitter]
    config = SpoolConfig(path=tmp_path / "spool.db", max_bytes=MAX_BYTES)
    first = [span(n) for n in range(300)]  # ~480 KB into 256 KiB
    emit(config, first)

    kept = spooled_ids(config)
    assert 60 < len(kept) < len(first)
    # Equal sizes and no done rows: everything up to the limit, nothing after it.
    assert kept == [s["id"] for s in first[: len(kept)]]
    stats = stats_of(config)
    assert stats.dropped == {"spool_full": len(first) - len(kept)}
    assert (stats.pending, stats.refused) == (len(kept), {})

    # The shipper ships everything that was kept: nothing spooled was lost to the full spool.
    result = drain(config, ship_config)
    assert (result.exit_code, result.shipped) == (0, len(kept))
    assert shipped_ids(span_server) == set(kept)
    assert span_server.duplicates() == 0

    # Done rows make room (pruned as needed, whatever the retention): appends succeed again.
    second = [span(1000 + n) for n in range(40)]
    emit(config, second)
    stats = stats_of(config)
    assert stats.pending == len(second)
    assert stats.dropped == {"spool_full": len(first) - len(kept)}  # no new drops
    assert stats.done < len(kept)
    assert spooled_ids(config, EventState.PENDING) == [s["id"] for s in second]

    result = drain(config, ship_config)
    assert result.exit_code == 0
    assert shipped_ids(span_server) == set(kept) | {s["id"] for s in second}


def test_the_shippers_retention_prune_frees_room(
    tmp_path: Path, span_server: FakeSpanServer, ship_config: ShipperConfig
) -> None:
    """With ``retention=0`` the shipper itself deletes delivered rows (its housekeeping), so a
    full spool has room again before the committer has to prune anything."""
    config = SpoolConfig(path=tmp_path / "spool.db", max_bytes=MAX_BYTES, retention=0.0)
    first = [span(n) for n in range(300)]
    emit_sync(config, first)
    kept = spooled_ids(config)
    assert len(kept) < len(first)

    clock = FakeClock(1_000.0)
    assert drain(config, ship_config, clock).exit_code == 0
    assert stats_of(config).done == len(kept)
    clock.advance(1.0)
    assert drain(config, ship_config, clock).exit_code == 0  # nothing to ship: housekeeping
    stats = stats_of(config)
    assert (stats.done, stats.pending) == (0, 0)

    second = [span(1000 + n) for n in range(len(kept))]
    emit_sync(config, second)  # as many as fitted the first time
    assert spooled_ids(config) == [s["id"] for s in second]
    assert stats_of(config).dropped == {"spool_full": len(first) - len(kept)}


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(st.sampled_from([100, 1500, 6000, 30_000]), min_size=40, max_size=250),
    ship_every=st.integers(10, 80),
    ship_batch=st.integers(1, 50),
)
def test_a_drop_never_takes_an_event_that_was_already_spooled(
    sizes: list[int], ship_every: int, ship_batch: int
) -> None:
    """Appends of mixed sizes against the limit, with a shipper delivering now and then: every
    append is either spooled (and kept byte for byte until it is delivered) or counted as
    dropped; only delivered events ever leave the spool."""
    with scratch_dir() as where:
        config = SpoolConfig(path=where / "spool.db", max_bytes=MAX_BYTES)
        accepted: dict[str, bytes] = {}
        delivered: set[str] = set()
        dropped = 0
        with Spool.open(config) as spool:
            for n, size in enumerate(sizes):
                s = span(n, size)
                payload = json.dumps(s, separators=(",", ":")).encode()
                if spool.append([NewEvent(s["id"], s["trace_id"], EventKind.END, payload)]):
                    accepted[s["id"]] = payload
                else:
                    dropped += 1
                if n % ship_every == ship_every - 1:
                    claimed = spool.run(ops.claim("shipper", ship_batch, 60.0, now=float(n)))
                    spool.run(ops.ack([e.seq for e in claimed], now=float(n)))
                    delivered |= {e.span_id for e in claimed}
            records = list(spool.export(list(EventState)))
            stats = spool.stats()
    assert stats.dropped == ({"spool_full": dropped} if dropped else {})
    present = {r.span_id: r.payload for r in records}
    assert set(accepted) - set(present) <= delivered  # only delivered events were pruned
    assert all(accepted[span_id] == payload for span_id, payload in present.items())
    assert stats.pending == len(set(accepted) - delivered)


@contextlib.contextmanager
def scratch_dir() -> Iterator[Path]:
    where = Path(tempfile.mkdtemp(prefix="spool-faults-"))
    try:
        yield where
    finally:
        shutil.rmtree(where, ignore_errors=True)


# ---- (b) SQLite says SQLITE_FULL -----------------------------------------------------------------


@dataclass
class FullDisk:
    """How many pages the "disk" holds; ``None``: unlimited."""

    pages: int | None = None

    def fill(self, config: SpoolConfig) -> int:
        """From now on the spool's file cannot grow past its current size."""
        conn = sqlite3.connect(config.path)
        try:
            self.pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
        finally:
            conn.close()
        return self.pages


@pytest.fixture
def full_disk(monkeypatch: pytest.MonkeyPatch) -> FullDisk:
    disk = FullDisk()

    def connect_on_full_disk(config: SpoolConfig, *, create: bool = True) -> sqlite3.Connection:
        conn = connect(config, create=create)
        if disk.pages is not None:
            conn.execute(f"PRAGMA max_page_count = {disk.pages}").fetchone()
        return conn

    monkeypatch.setattr(spool._committer, "connect", connect_on_full_disk)
    monkeypatch.setattr(spool.store, "connect", connect_on_full_disk)
    return disk


def test_sqlite_full_is_a_counted_drop_and_shipping_makes_room(
    tmp_path: Path,
    full_disk: FullDisk,
    span_server: FakeSpanServer,
    ship_config: ShipperConfig,
) -> None:
    config = SpoolConfig(path=tmp_path / "spool.db")  # 1 GiB: the size limit plays no part
    before = [span(n) for n in range(40)]
    emit_sync(config, before)
    with Spool.open(config) as spool:
        delivered = spool.run(ops.claim("shipper", 15, lease_seconds=60, now=1.0))
        spool.run(ops.ack([e.seq for e in delivered], now=2.0))
    full_disk.fill(config)

    processor = SyncSpoolProcessor(config=config)
    try:
        during = [span(100 + n) for n in range(60)]
        for s in during:
            processor.on_span_end(s)  # returns normally: no SpoolFullError, no hang
        spooled = set(spooled_ids(config, EventState.PENDING))
        # The committer made room by pruning the 15 done rows, then ran out.
        assert {s["id"] for s in before[15:]} <= spooled  # nothing pending was lost
        taken = [s["id"] for s in during if s["id"] in spooled]
        assert 0 < len(taken) < len(during)
        assert taken == [s["id"] for s in during[: len(taken)]]

        # The shipper keeps shipping on the full disk; its acks leave done rows to prune.
        result = drain(config, ship_config)
        assert result.exit_code == 0
        assert shipped_ids(span_server) >= spooled

        # Room again: the next append prunes done rows, succeeds, and writes the drop counts
        # held since the disk filled.
        after = span(999)
        processor.on_span_end(after)
        assert spooled_ids(config, EventState.PENDING) == [after["id"]]
        assert stats_of(config).dropped == {"disk_full": len(during) - len(taken)}
    finally:
        processor.shutdown()


def test_disk_full_drops_are_counted_even_when_the_processor_stops_first(
    tmp_path: Path,
    full_disk: FullDisk,
    span_server: FakeSpanServer,
    ship_config: ShipperConfig,
) -> None:
    """BUG (spool/_committer.py, ``_run``/``_commit``): drop counts that could not be written
    (the disk was full) wait in ``_unflushed`` for the next successful commit, and only an
    append triggers a commit. When the processor shuts down first (the agent exits, or simply
    appends nothing more), ``close()`` commits nothing and the counts are gone: ``status``
    reports ``dropped == 0`` for events that were dropped. Fix: on close, and whenever a commit
    succeeds without them, retry ``_unflushed`` (one more ``_commit`` of an empty batch when
    ``_unflushed`` is non-empty before the writer exits)."""
    config = SpoolConfig(path=tmp_path / "spool.db")
    emit_sync(config, [span(n) for n in range(20)])
    full_disk.fill(config)
    during = [span(100 + n) for n in range(30)]
    emit_sync(config, during)  # the disk is full: all 30 dropped
    assert spooled_ids(config) == [f"span-{n:05d}" for n in range(20)]

    assert drain(config, ship_config).exit_code == 0  # done rows to prune: room to count
    emit_sync(config, [])  # a processor that starts and stops without appending
    assert stats_of(config).dropped == {"disk_full": len(during)}


def test_a_full_disk_after_the_size_check_counts_each_drop_once(
    tmp_path: Path, full_disk: FullDisk
) -> None:
    """BUG (spool/_committer.py, ``_commit``/``_fit``): when one group commit holds a call
    ``_fit`` drops for ``max_bytes`` and a call that then meets SQLITE_FULL, the retry after
    pruning runs ``_fit`` again on the same ``counts`` and adds ``dropped:spool_full`` a second
    time; if the retry fails too, ``dropped:disk_full`` is added for every row of the batch,
    including the row already counted as ``spool_full``. Two dropped events are counted as
    four. Fix: compute the size verdict once per batch (or on a copy of ``counts`` per
    attempt), and on failure count as ``disk_full`` only the rows ``_fit`` kept.

    White box: two concurrent appends land in one group commit only by timing, so the batch is
    built here and given to the committer's ``_commit`` while its writer thread is idle."""
    config = SpoolConfig(path=tmp_path / "spool.db", max_bytes=MAX_BYTES)
    emit_sync(config, [span(n, size=2000) for n in range(8)])
    with Spool.open(config) as spool:
        used = int(spool.conn.execute("PRAGMA page_count").fetchone()[0]) * int(
            spool.conn.execute("PRAGMA page_size").fetchone()[0]
        )
    config = SpoolConfig(path=config.path, max_bytes=max(used + 4000, 64 * 1024))
    full_disk.fill(config)
    assert config.max_bytes is not None
    room = config.max_bytes - used

    committer = acquire_committer(config)
    try:
        fits = NewEvent("fits", "t", EventKind.END, b"f" * (room // 2)).row(1.0)
        too_big = NewEvent("too-big", "t", EventKind.END, b"b" * (2 * room)).row(1.0)
        assert committer.append([]) in (True, False)  # opens the writer's connection
        batch = _Batch.empty()
        batch.calls[:] = [1, 1]
        batch.rows[:] = [fits, too_big]
        batch.results[:] = [False, False]
        committer._commit(batch, {})
        assert batch.results == [False, False]
        unwritten = committer.local_counts()  # the disk is full: the counts wait in memory
    finally:
        release_committer(committer)
    assert sum(unwritten.values()) == 2, unwritten
