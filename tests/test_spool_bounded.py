"""The size bound: appends past ``max_bytes`` are dropped and counted, done rows make room
first, and ``FullPolicy.DROP_OLDEST`` evicts the oldest pending events instead."""

from __future__ import annotations

import asyncio
from pathlib import Path

from conftest import used_bytes

from spool import (
    AsyncSpool,
    EventKind,
    EventState,
    FullPolicy,
    NewEvent,
    Spool,
    SpoolConfig,
    ops,
)

MAX_BYTES = 256 * 1024
PAYLOAD = 2000


def big(i: int) -> NewEvent:
    return NewEvent(f"span-{i:04d}", "trace", EventKind.START, b"x" * PAYLOAD)


def fill(spool: Spool) -> int:
    """Append one event per call until the first is dropped; return how many fit."""
    for i in range(1000):
        if not spool.append([big(i)]):
            return i
    raise AssertionError("1000 events of 2 KB fit under 256 KiB")


def test_appends_beyond_the_limit_are_dropped_and_counted(tmp_path: Path) -> None:
    config = SpoolConfig(path=tmp_path / "spool.db", max_bytes=MAX_BYTES)
    with Spool.open(config) as spool:
        fitted = fill(spool)
        assert fitted > 40  # most of the 256 KiB holds events
        assert [spool.append([big(2000 + i)]) for i in range(4)] == [False] * 4

        stats = spool.stats()
        assert stats.pending == fitted
        assert stats.dropped == {"spool_full": 5}
        assert stats.refused == {}
        ids = [r.span_id for r in spool.export([EventState.PENDING])]
        assert ids == [f"span-{i:04d}" for i in range(fitted)]
    assert used_bytes(config.path) <= MAX_BYTES


def test_done_rows_are_pruned_to_make_room(tmp_path: Path) -> None:
    config = SpoolConfig(path=tmp_path / "spool.db", max_bytes=MAX_BYTES)
    with Spool.open(config) as spool:
        fitted = fill(spool)
        claimed = spool.run(ops.claim("shipper", limit=40, lease_seconds=60, now=1.0))
        assert spool.run(ops.ack([e.seq for e in claimed], now=2.0)) == 40

        # Done rows are kept while there is room; now there is none, so they go first.
        assert [spool.append([big(5000 + i)]) for i in range(20)] == [True] * 20
        stats = spool.stats()
        assert stats.pending == fitted - 40 + 20
        assert stats.done < 40
        assert stats.dropped == {"spool_full": 1}  # only the one fill() stopped at
        # Nothing pending was lost to make room.
        pending = {r.span_id for r in spool.export([EventState.PENDING])}
        assert {f"span-{i:04d}" for i in range(40, fitted)} <= pending
    assert used_bytes(config.path) <= MAX_BYTES


def test_drop_oldest_evicts_the_oldest_pending_and_counts_them(tmp_path: Path) -> None:
    config = SpoolConfig(
        path=tmp_path / "spool.db", max_bytes=MAX_BYTES, full_policy=FullPolicy.DROP_OLDEST
    )
    total = 300  # about 600 KB of payload into 256 KiB
    with Spool.open(config) as spool:
        assert all(spool.append([big(i)]) for i in range(total))
        stats = spool.stats()
        evicted = stats.dropped.get("evicted", 0)
        assert evicted > 0
        assert set(stats.dropped) == {"evicted"}
        assert stats.pending + evicted == total
        kept = [r.span_id for r in spool.export([EventState.PENDING])]
        # The newest events survive, oldest first out.
        assert kept == [f"span-{i:04d}" for i in range(evicted, total)]
    assert used_bytes(config.path) <= MAX_BYTES


def full_then(tmp_path: Path, policy: FullPolicy) -> tuple[SpoolConfig, int]:
    """A spool filled to its limit one event at a time, then configured with ``policy``."""
    config = SpoolConfig(path=tmp_path / "spool.db", max_bytes=MAX_BYTES)
    with Spool.open(config) as spool:
        fitted = fill(spool)
    return SpoolConfig(path=config.path, max_bytes=MAX_BYTES, full_policy=policy), fitted


def test_drop_oldest_prunes_done_rows_before_evicting(tmp_path: Path) -> None:
    config, fitted = full_then(tmp_path, FullPolicy.DROP_OLDEST)
    with Spool.open(config) as spool:
        claimed = spool.run(ops.claim("shipper", limit=30, lease_seconds=60, now=1.0))
        assert spool.run(ops.ack([e.seq for e in claimed], now=2.0)) == 30
        assert all(spool.append([big(5000 + i)]) for i in range(20))
        stats = spool.stats()
        assert stats.dropped == {"spool_full": 1}  # fill()'s probe; nothing evicted
        assert stats.pending == fitted - 30 + 20
        assert stats.done < 30


def test_drop_oldest_evicts_only_what_the_new_event_needs(tmp_path: Path) -> None:
    """BUG (spool/_committer.py, _evict_pending): eviction deletes pending rows in chunks of
    ``LIMIT 100`` and only then re-measures, so making room for one 2 KB event on a full
    256 KiB spool throws away every pending event (up to 100) instead of one or two."""
    config, fitted = full_then(tmp_path, FullPolicy.DROP_OLDEST)
    with Spool.open(config) as spool:
        assert spool.append([big(5000)])
        stats = spool.stats()
    evicted = stats.dropped.get("evicted", 0)
    assert 1 <= evicted <= 2, f"{evicted} of {fitted} pending events evicted for one new event"
    assert "spool_full" in stats.dropped  # fill()'s probe, before the policy changed
    assert stats.pending == fitted + 1 - evicted


def test_one_batched_append_stays_under_the_limit(tmp_path: Path) -> None:
    """BUG (spool/_committer.py, _fit): the room check estimates each row as payload + ids +
    160 bytes, but a 2,000-byte payload takes a whole 4 KiB page (two such cells do not fit in
    one page), so one batch that "fits" the estimate grows the 256 KiB spool to ~430 KiB.
    Group commit makes big batches the normal case under load."""
    config = SpoolConfig(path=tmp_path / "spool.db", max_bytes=MAX_BYTES)
    with Spool.open(config) as spool:
        spool.append([big(i) for i in range(100)])
    assert used_bytes(config.path) <= MAX_BYTES


def test_concurrent_appends_at_the_limit_each_get_an_answer(tmp_path: Path) -> None:
    """Callers that share a commit are admitted or dropped one by one, and each drop counts."""
    config = SpoolConfig(path=tmp_path / "spool.db", max_bytes=MAX_BYTES)
    with Spool.open(config) as spool:
        fitted = fill(spool)
        claimed = spool.run(ops.claim("shipper", limit=3, lease_seconds=60, now=1.0))
        spool.run(ops.ack([e.seq for e in claimed], now=2.0))  # room for about three more

    async def main() -> list[bool]:
        async with await AsyncSpool.open(config) as spool_async:
            return list(
                await asyncio.gather(*(spool_async.append([big(9000 + i)]) for i in range(30)))
            )

    answers = asyncio.run(main())
    with Spool.open(config) as spool:
        stats = spool.stats()
    accepted = answers.count(True)
    assert 0 < accepted < 30
    assert stats.dropped == {"spool_full": 1 + answers.count(False)}
    assert stats.pending == fitted - 3 + accepted
