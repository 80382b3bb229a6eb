"""Housekeeping while shipping: done rows older than the retention window are pruned by the
running shipper, and the WAL stays bounded through a long drain."""

from __future__ import annotations

import asyncio
from pathlib import Path

from conftest import FakeClock, append_off_loop, eventually, run_async, span_events

from shipper import DrainResult, Progress, Shipper, ShipperConfig
from shipper.testing import FakeSpanServer
from spool import EventKind, EventState, Spool, SpoolConfig, SpoolStats, file_sizes

END = EventKind.END
MIB = 1 << 20


def stats(spool: SpoolConfig) -> SpoolStats:
    with Spool.open(spool) as opened:
        return opened.stats()


def test_a_running_shipper_prunes_done_rows_past_retention(
    tmp_path: Path, span_server: FakeSpanServer, ship_config: ShipperConfig
) -> None:
    spool = SpoolConfig(path=tmp_path / "spool.db", retention=10.0)
    old = [f"old{i:03}" for i in range(100)]
    new = [f"new{i:03}" for i in range(50)]
    with Spool.open(spool) as opened:
        opened.append(span_events(old, END))
    clock = FakeClock()
    config = ship_config.with_options(prune_interval=5.0)

    async def main() -> None:
        async with Shipper(spool, config, clock=clock) as shipper:
            running = asyncio.create_task(shipper.run())
            await eventually(lambda: stats(spool).done == 100, "the old events shipped")
            clock.advance(8)
            await append_off_loop(spool, span_events(new, END))
            await eventually(lambda: stats(spool).done == 150, "the new events shipped")
            assert stats(spool).done == 150  # nothing is past retention yet

            clock.advance(7)  # old rows finished 15 s ago, new ones 7 s ago; retention is 10 s
            await eventually(lambda: stats(spool).done == 50, "the old rows pruned")
            await shipper.stop(timeout=5)
            await running

    run_async(main())
    with Spool.open(spool) as opened:
        kept = {r.span_id for r in opened.export(list(EventState))}
    assert kept == set(new)
    assert span_server.completed_ids() == set(old + new)


def test_the_wal_stays_bounded_through_a_long_drain(
    tmp_path: Path, ship_config: ShipperConfig
) -> None:
    spool = SpoolConfig(path=tmp_path / "spool.db")
    events = 20_000
    with Spool.open(spool) as opened:
        opened.append(span_events([f"s{i:06}" for i in range(events)], END))
    wal_sizes: list[int] = []

    def sample(progress: Progress) -> None:
        wal_sizes.append(file_sizes(spool.path)[1])

    async def main() -> DrainResult:
        async with Shipper(spool, ship_config.with_options(batch_size=100)) as shipper:
            return await shipper.drain(timeout=120, progress=sample)

    result = run_async(main(), timeout=150)

    assert result.exit_code == 0
    assert result.shipped == events
    assert len(wal_sizes) == events // 100
    db_bytes = file_sizes(spool.path)[0]
    # Every event is written three times (append, claim, ack); unchecked, the WAL would hold
    # all of it. Checkpoints keep it near SQLite's 1000-page autocheckpoint (about 4 MiB).
    print(f"max WAL {max(wal_sizes) / MIB:.1f} MiB, spool {db_bytes / MIB:.1f} MiB")
    assert max(wal_sizes) < 8 * MIB
    assert max(wal_sizes) < 2 * db_bytes
