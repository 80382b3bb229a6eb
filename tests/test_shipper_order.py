"""Span order as the endpoint sees it: a start never arrives after its end; a span whose start
and end were both pending is sent once, as its end."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections import defaultdict
from pathlib import Path

from conftest import (
    FakeClock,
    RecordedSleeps,
    append_off_loop,
    eventually,
    run_async,
    server_reaches,
    span_events,
)

from shipper import DrainResult, Shipper, ShipperConfig
from shipper.testing import FakeSpanServer, SpanKind
from spool import EventKind, EventState, Outcome, Spool, SpoolConfig, ops

START, END = EventKind.START, EventKind.END


def kinds_by_span(server: FakeSpanServer) -> dict[str, list[SpanKind]]:
    seen: dict[str, list[SpanKind]] = defaultdict(list)
    for arrival in server.arrivals():
        seen[arrival.span_id].append(arrival.kind)
    return dict(seen)


def more_requests(server: FakeSpanServer, than: int) -> bool:
    return server.request_count > than


async def stop_all(shippers: list[Shipper], runs: list[asyncio.Task[None]]) -> None:
    for shipper in shippers:
        await shipper.stop(timeout=5)
    await asyncio.gather(*runs)


def drain(spool: SpoolConfig, config: ShipperConfig) -> DrainResult:
    async def main() -> DrainResult:
        async with Shipper(spool, config) as shipper:
            return await shipper.drain(timeout=30)

    return run_async(main())


def test_a_span_pending_whole_is_sent_once_as_its_end(
    tmp_path: Path, span_server: FakeSpanServer, ship_config: ShipperConfig
) -> None:
    spool = SpoolConfig(path=tmp_path / "spool.db")
    both = [f"both{i:03}" for i in range(60)]
    open_only = [f"open{i:03}" for i in range(20)]
    with Spool.open(spool) as opened:
        for span_id in both:
            opened.append(span_events([span_id], START) + span_events([span_id], END))
        opened.append(span_events(open_only, START))

    assert drain(spool, ship_config).exit_code == 0

    kinds = kinds_by_span(span_server)
    assert {kinds[s] == [SpanKind.END] for s in both} == {True}
    assert {kinds[s] == [SpanKind.START] for s in open_only} == {True}
    assert span_server.order_violations() == []
    with Spool.open(spool) as opened:
        stats = opened.stats()
        records = list(opened.export([EventState.DONE]))
    assert stats.superseded == len(both)
    assert stats.done == 2 * len(both) + len(open_only)
    superseded = {r.span_id for r in records if r.outcome is Outcome.SUPERSEDED}
    assert superseded == set(both)
    assert all(r.kind is START for r in records if r.outcome is Outcome.SUPERSEDED)


def test_a_start_already_delivered_is_followed_by_its_end(
    tmp_path: Path, span_server: FakeSpanServer, ship_config: ShipperConfig
) -> None:
    spool = SpoolConfig(path=tmp_path / "spool.db")
    ids = [f"s{i:02}" for i in range(30)]
    with Spool.open(spool) as opened:
        opened.append(span_events(ids, START))
    assert drain(spool, ship_config).exit_code == 0
    with Spool.open(spool) as opened:
        opened.append(span_events(ids, END))
    assert drain(spool, ship_config).exit_code == 0

    kinds = kinds_by_span(span_server)
    assert {tuple(kinds[s]) for s in ids} == {(SpanKind.START, SpanKind.END)}
    assert span_server.completed_ids() == set(ids)


def test_an_end_waits_while_its_start_is_in_backoff(
    tmp_path: Path, span_server: FakeSpanServer, ship_config: ShipperConfig
) -> None:
    """The start failed and its shipper holds it through the backoff; the end, spooled
    meanwhile, is not claimed until the start is delivered."""
    spool = SpoolConfig(path=tmp_path / "spool.db")
    with Spool.open(spool) as opened:
        opened.append(span_events(["s1"], START))
    span_server.faults.fail_next(1, status=503)
    clock = FakeClock()
    entered, gate = asyncio.Event(), asyncio.Event()

    async def sleep(seconds: float) -> None:
        entered.set()
        await gate.wait()
        clock.advance(seconds)

    async def main() -> None:
        async with Shipper(spool, ship_config, clock=clock, sleep=sleep) as shipper:
            running = asyncio.create_task(shipper.run())
            await asyncio.wait_for(entered.wait(), 10)
            await append_off_loop(spool, span_events(["s1"], END))
            reads = clock.reads
            await eventually(lambda: clock.reads >= reads + 20, "the loop turning")
            with Spool.open(spool) as opened:
                (end,) = [r for r in opened.run(ops.find("s1"), write=False) if r.kind is END]
            assert end.state is EventState.PENDING
            assert span_server.request_count == 1

            gate.set()
            await server_reaches(
                span_server, lambda: "s1" in span_server.completed_ids(), "the end"
            )
            await shipper.stop(timeout=5)
            await running

    run_async(main())
    assert kinds_by_span(span_server) == {"s1": [SpanKind.START, SpanKind.END]}


def test_no_start_arrives_after_its_end_while_ends_stream_in_under_failures(
    tmp_path: Path, span_server: FakeSpanServer, ship_config: ShipperConfig
) -> None:
    """Starts are shipping (two shippers, failures, latency) while the ends are spooled in
    waves: whatever races, the endpoint never sees a start after its end."""
    spool = SpoolConfig(path=tmp_path / "spool.db")
    ids = [f"s{i:04}" for i in range(600)]
    with Spool.open(spool) as opened:
        opened.append(span_events(ids, START))
    span_server.faults.set_random(fail_rate=0.2, status=503, drop_rate=0.05, seed=11)
    span_server.faults.set_latency((0.005, 0.015))
    config = ship_config.with_options(batch_size=20, concurrency=3)

    async def main() -> None:
        shippers = [
            Shipper(spool, config, sleep=RecordedSleeps(), owner=owner) for owner in ("a", "b")
        ]
        async with contextlib.AsyncExitStack() as stack:
            for shipper in shippers:
                await stack.enter_async_context(shipper)
            runs = [asyncio.create_task(s.run()) for s in shippers]
            stack.push_async_callback(stop_all, shippers, runs)  # before closing, even on failure
            ends = ids[::-1]  # the last spans' starts are still queued when their ends arrive
            # Between waves, let the shippers move on by a request. The count is read before
            # each append: that wave's own ends must then be uploaded, so the wait always ends,
            # however fast the shippers ran through everything spooled before it.
            before = 0
            for wave in range(0, len(ends), 30):
                await server_reaches(
                    span_server, functools.partial(more_requests, span_server, before), "a request"
                )
                before = span_server.request_count
                await append_off_loop(spool, span_events(ends[wave : wave + 30], END))
            await server_reaches(
                span_server,
                lambda: len(span_server.completed_ids()) == len(ids),
                "every span complete",
                timeout=60,
            )

    run_async(main(), timeout=120)

    assert span_server.order_violations() == []
    kinds = kinds_by_span(span_server)
    for span_id in ids:
        seen = kinds[span_id]
        assert SpanKind.END in seen
        assert SpanKind.START not in seen[seen.index(SpanKind.END) :], (span_id, seen)
    sent_whole = sum(1 for s in ids if SpanKind.START not in kinds[s])
    print(f"spans sent only as their end: {sent_whole}/{len(ids)}")
    assert 0 < sent_whole < len(ids)  # both paths were taken
    assert span_server.duplicates() == 0  # drops happen before storing: no double delivery


def test_an_end_waiting_for_its_start_does_not_make_the_shipper_spin(
    tmp_path: Path, span_server: FakeSpanServer, ship_config: ShipperConfig
) -> None:
    """Another shipper holds the start; the end is pending but cannot be claimed. The idle
    loop should wait (poll_interval, or a wake-up) between claims, not claim back to back:
    each claim is a write transaction on the spool that every process shares."""
    spool = SpoolConfig(path=tmp_path / "spool.db")
    clock = FakeClock()
    with Spool.open(spool) as opened:
        opened.append(span_events(["s1"], START))
        assert len(opened.run(ops.claim("elsewhere", 10, 30.0, clock.now))) == 1
        opened.append(span_events(["s1"], END))
    config = ship_config.with_options(poll_interval=0.05)

    async def main() -> int:
        async with Shipper(spool, config, clock=clock) as shipper:
            running = asyncio.create_task(shipper.run())
            await eventually(lambda: clock.reads >= 5, "the shipper to start")
            before = clock.reads
            # A measurement window, not a synchronisation: how busy is an idle shipper?
            await asyncio.sleep(0.5)
            turns = clock.reads - before
            await shipper.stop(timeout=5)
            await running
        return turns

    turns = run_async(main())
    assert span_server.request_count == 0
    # Polling every 0.05 s is some 10 turns (a few clock reads each) in 0.5 s.
    assert turns < 200, f"{turns} clock reads in 0.5 s: the idle loop is spinning"
