"""The shipper's start delay and batch byte cap, end to end: real spool files, the fake
endpoint on loopback, an injected clock (time moves only when the test moves it)."""

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

from shipper import Shipper, ShipperConfig, batch_body, split_batches
from shipper.testing import FakeSpanServer, SpanKind
from spool import EventKind, EventRecord, EventState, NewEvent, Outcome, Spool, SpoolConfig, ops

START, END = EventKind.START, EventKind.END
T0 = 1_000_000.0
DELAY = 5.0


def records(spool: SpoolConfig, span_id: str) -> list[EventRecord]:
    with Spool.open(spool) as opened:
        return sorted(opened.run(ops.find(span_id), write=False), key=lambda r: r.seq)


def arrived(server: FakeSpanServer) -> list[tuple[str, SpanKind]]:
    return [(a.span_id, a.kind) for a in server.arrivals()]


def spooled_starts(tmp_path: Path, *span_ids: str) -> SpoolConfig:
    """A spool holding the starts of ``span_ids``, spooled at ``T0``."""
    spool = SpoolConfig(path=tmp_path / "spool.db")
    with Spool.open(spool) as opened:
        assert opened.append(span_events(span_ids, START, enqueued_at=T0))
    return spool


async def turning(clock: FakeClock) -> None:
    """Until the shipper has read the clock 20 more times: it has looked, and found nothing."""
    reads = clock.reads
    await eventually(lambda: clock.reads >= reads + 20, "the shipper turning")


def test_the_default_delay_is_five_seconds() -> None:
    assert ShipperConfig().start_delay == DELAY


def test_a_span_that_ends_within_the_delay_is_shipped_once(
    tmp_path: Path, span_server: FakeSpanServer, ship_config: ShipperConfig
) -> None:
    spool = spooled_starts(tmp_path, "quick")
    clock = FakeClock(T0)
    config = ship_config.with_options(start_delay=DELAY)

    async def main() -> None:
        async with Shipper(spool, config, clock=clock) as shipper:
            running = asyncio.create_task(shipper.run())
            await turning(clock)
            assert span_server.request_count == 0  # the start is too young
            clock.advance(DELAY - 1)
            await append_off_loop(spool, span_events(["quick"], END, enqueued_at=clock.now))
            await server_reaches(span_server, lambda: span_server.request_count == 1, "the end")
            clock.advance(10 * DELAY)
            await turning(clock)
            await shipper.stop(timeout=5)
            await running

    run_async(main())
    assert arrived(span_server) == [("quick", SpanKind.END)]
    start, end = records(spool, "quick")
    assert (start.state, start.outcome) == (EventState.DONE, Outcome.SUPERSEDED)
    assert (end.state, end.outcome) == (EventState.DONE, Outcome.SHIPPED)


def test_a_long_span_shows_up_in_progress_once_the_delay_is_over(
    tmp_path: Path, span_server: FakeSpanServer, ship_config: ShipperConfig
) -> None:
    """And a crashed agent's start (no end ever) arrives the same way."""
    spool = spooled_starts(tmp_path, "long", "orphan")
    clock = FakeClock(T0)
    config = ship_config.with_options(start_delay=DELAY)

    async def main() -> None:
        async with Shipper(spool, config, clock=clock) as shipper:
            running = asyncio.create_task(shipper.run())
            await turning(clock)
            assert span_server.request_count == 0
            clock.advance(DELAY)
            await server_reaches(
                span_server, lambda: len(span_server.arrivals()) == 2, "both starts"
            )
            clock.advance(15)
            await append_off_loop(spool, span_events(["long"], END, enqueued_at=clock.now))
            await server_reaches(span_server, lambda: len(span_server.arrivals()) == 3, "the end")
            await shipper.stop(timeout=5)
            await running

    run_async(main())
    assert arrived(span_server) == [
        ("long", SpanKind.START),
        ("orphan", SpanKind.START),
        ("long", SpanKind.END),
    ]
    assert span_server.completed_ids() == {"long"}


def test_a_drain_ships_a_young_start_at_once(
    tmp_path: Path, span_server: FakeSpanServer, ship_config: ShipperConfig
) -> None:
    """A drain is the end of shipping: nothing is gained by waiting for the end."""
    spool = spooled_starts(tmp_path, "young")
    clock = FakeClock(T0)

    async def main() -> None:
        async with Shipper(spool, ship_config.with_options(start_delay=DELAY), clock=clock) as s:
            result = await s.drain()
            assert (result.exit_code, result.shipped) == (0, 1)

    run_async(main())
    assert arrived(span_server) == [("young", SpanKind.START)]


# ---- the byte cap --------------------------------------------------------------------------------


def big_events(n: int, size: int) -> list[NewEvent]:
    events = span_events([f"s{i:02}" for i in range(n)], END)
    # Pad each payload's JSON with an attribute of ``size`` bytes.
    return [
        NewEvent(
            e.span_id,
            e.trace_id,
            e.kind,
            e.payload[:-1] + b',"metadata":{"pad":"' + b"x" * size + b'"}}',
            e.enqueued_at,
        )
        for e in events
    ]


def test_batches_are_cut_by_bytes_before_the_endpoint_says_413(
    tmp_path: Path, span_server: FakeSpanServer, ship_config: ShipperConfig
) -> None:
    cap = 16 * 1024
    events = big_events(40, 3000)
    spool = SpoolConfig(path=tmp_path / "spool.db")
    with Spool.open(spool) as opened:
        assert opened.append(events)
    span_server.faults.set_max_body_bytes(cap)
    config = ship_config.with_options(batch_size=50, batch_max_bytes=cap, concurrency=4)

    async def main() -> None:
        async with Shipper(spool, config) as shipper:
            result = await shipper.drain()
            assert (result.exit_code, result.shipped) == (0, 40)

    run_async(main())
    stats = span_server.stats()
    assert stats.by_status == {200: stats.requests}  # no 413, no split after the fact
    assert stats.items_accepted == 40
    assert stats.requests == len(split_batches(events, 50, cap))
    assert all(r.item_count <= 5 for r in span_server.requests())
    assert len(batch_body([e.payload for e in events[:6]])) > cap  # the cap did bind
