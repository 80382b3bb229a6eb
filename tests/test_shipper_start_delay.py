"""The shipper's start delay, end to end: real spool files, the fake endpoint on loopback, an
injected clock (time moves only when the test moves it). test_shipper_dispatch.py has the
drain (which does not wait) and the batch byte cap."""

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

from shipper import Shipper, ShipperConfig
from shipper.testing import FakeSpanServer, SpanKind
from spool import EventKind, EventRecord, EventState, Outcome, Spool, SpoolConfig, ops

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
