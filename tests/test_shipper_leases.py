"""Leases: shippers sharing a spool never hold the same event, and a dead shipper's events go to
another once its lease runs out."""

from __future__ import annotations

import asyncio
from pathlib import Path

from conftest import (
    FakeClock,
    append_off_loop,
    eventually,
    run_async,
    server_reaches,
    span_events,
)

from shipper import DrainResult, Shipper, ShipperConfig
from shipper.dispatch import MAX_IDLE
from shipper.testing import FakeSpanServer
from spool import EventKind, Spool, SpoolConfig, SpoolStats, ops

START, END = EventKind.START, EventKind.END


def spool_with(tmp_path: Path, ids: list[str]) -> SpoolConfig:
    spool = SpoolConfig(path=tmp_path / "spool.db")
    with Spool.open(spool) as opened:
        assert opened.append(span_events(ids, END))
    return spool


def stats(spool: SpoolConfig) -> SpoolStats:
    with Spool.open(spool) as opened:
        return opened.stats()


def test_two_shippers_on_one_spool_share_the_work_without_overlap(
    tmp_path: Path, span_server: FakeSpanServer, ship_config: ShipperConfig
) -> None:
    ids = [f"s{i:05}" for i in range(3000)]
    spool = spool_with(tmp_path, ids)
    span_server.faults.set_latency((0.001, 0.003))
    config = ship_config.with_options(batch_size=50, concurrency=2)

    async def drain(owner: str) -> DrainResult:
        async with Shipper(spool, config, owner=owner) as shipper:
            return await shipper.drain(timeout=60)

    async def main() -> list[DrainResult]:
        # The second shipper runs on its own thread and event loop, as another process would.
        return list(
            await asyncio.gather(drain("one"), asyncio.to_thread(asyncio.run, drain("two")))
        )

    results = run_async(main())

    assert [r.exit_code for r in results] == [0, 0]
    assert sum(r.shipped for r in results) == len(ids)
    assert all(r.shipped > 0 for r in results), [r.shipped for r in results]
    assert span_server.duplicates() == 0
    assert span_server.completed_ids() == set(ids)
    assert stats(spool).done == len(ids)


def test_a_dead_shippers_leases_are_taken_over_after_they_expire(
    tmp_path: Path, span_server: FakeSpanServer, ship_config: ShipperConfig
) -> None:
    ids = [f"s{i:03}" for i in range(120)]
    spool = spool_with(tmp_path, ids)
    clock = FakeClock()
    lease = 30.0
    with Spool.open(spool) as opened:
        held = opened.run(ops.claim("dead-owner", 100, lease, clock.now))
    assert len(held) == 100  # and the owner dies without acking or releasing

    async def main() -> None:
        async with Shipper(spool, ship_config, clock=clock, owner="heir") as shipper:
            running = asyncio.create_task(shipper.run())
            # The 20 free events go at once; the 100 held ones wait for the lease.
            await server_reaches(
                span_server, lambda: span_server.completed_ids() == set(ids[100:]), "free ones"
            )
            clock.advance(lease - 1)
            reads = clock.reads
            await eventually(lambda: clock.reads >= reads + 20, "the loop turning")
            assert stats(spool).leased == 100
            assert span_server.completed_ids() == set(ids[100:])

            # The lease has run out; an idle shipper looks again at least every MAX_IDLE.
            clock.advance(1 + MAX_IDLE)
            await server_reaches(
                span_server, lambda: span_server.completed_ids() == set(ids), "the takeover"
            )
            await eventually(lambda: stats(spool).done == len(ids), "the acks")
            await shipper.stop(timeout=5)
            await running

    run_async(main())
    assert span_server.duplicates() == 0


def test_a_lease_outlasts_the_bisection_of_its_batch(
    tmp_path: Path, span_server: FakeSpanServer, ship_config: ShipperConfig
) -> None:
    """Isolating one refused item in a batch of 16 takes 9 requests. Each takes 0.2 s, well
    inside a 1 s lease, but all of them together do not: unless the lease is renewed while the
    batch is bisected, it expires and the second shipper claims and sends the same events
    while the first is still working on them."""
    ids = [f"s{i:02}" for i in range(16)]
    spool = spool_with(tmp_path, ids)
    span_server.faults.refuse(["s05"], status=409)
    span_server.faults.set_latency(0.2)
    config = ship_config.with_options(
        batch_size=16, concurrency=1, lease_seconds=1.0, request_timeout=0.9
    )

    async def drain(owner: str) -> DrainResult:
        async with Shipper(spool, config, owner=owner) as shipper:
            return await shipper.drain(timeout=30)

    async def main() -> list[DrainResult]:
        return list(await asyncio.gather(drain("one"), drain("two")))

    results = run_async(main())

    assert {r.exit_code for r in results} == {2}
    assert span_server.completed_ids() == set(ids) - {"s05"}
    assert span_server.duplicates() == 0
    assert stats(spool).dead == 1
    assert sum(r.dead_lettered for r in results) == 1


def test_a_start_held_through_a_long_bisection_never_arrives_after_its_end(
    tmp_path: Path, span_server: FakeSpanServer, ship_config: ShipperConfig
) -> None:
    """The same lease running out mid-bisection, seen from span order: the second shipper
    takes the expired starts, supersedes them with their ends and delivers the ends, while
    the first still sends those starts in the last piece of its batch."""
    ids = [f"s{i:02}" for i in range(16)]
    ended = [ids[5], *ids[8:]]
    spool = SpoolConfig(path=tmp_path / "spool.db")
    with Spool.open(spool) as opened:
        assert opened.append(span_events(ids, START))
    # Only s05's start is refused: its end (and every other item) is accepted.
    span_server.faults.refuse(lambda item: item["id"] == "s05" and "end_timestamp" not in item)
    span_server.faults.set_latency(0.2)
    config = ship_config.with_options(
        batch_size=16, concurrency=1, lease_seconds=1.0, request_timeout=0.9
    )

    async def main() -> None:
        async with (
            Shipper(spool, config, owner="first") as first,
            Shipper(spool, config, owner="second") as second,
        ):
            draining = asyncio.create_task(first.drain(timeout=30))
            await server_reaches(span_server, lambda: span_server.request_count >= 1, "first")
            await append_off_loop(spool, span_events(ended, END))
            await second.drain(timeout=30)
            await draining

    run_async(main())

    assert span_server.completed_ids() == set(ended)
    assert span_server.order_violations() == []
