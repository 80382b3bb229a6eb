"""Dispatch and the concurrency controller: requests in flight are bounded by the controller's
``limit``, read again as it changes, and every finished request is reported to it with its
round-trip time and what its answer signals."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    FakeClock,
    RecordedSleeps,
    append_off_loop,
    eventually,
    run_async,
    span_events,
    span_payload,
)

from shipper import Action, Shipper, ShipperConfig, Signal, Verdict
from shipper.delivery import signal_of
from shipper.testing import FakeSpanServer
from spool import ClaimedEvent, EventKind, NewEvent, Spool, SpoolConfig, ops

START, END = EventKind.START, EventKind.END


class SteeredLimit:
    """A controller the test sets by hand; it records what it is told."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.recorded: list[tuple[float, Signal]] = []

    def record(self, rtt: float, signal: Signal) -> None:
        self.recorded.append((rtt, signal))


def test_requests_in_flight_follow_the_controllers_limit(
    tmp_path: Path, span_server: FakeSpanServer, ship_config: ShipperConfig
) -> None:
    spool = SpoolConfig(path=tmp_path / "spool.db")
    ids = [f"s{i:02}" for i in range(50)]
    with Spool.open(spool) as opened:
        assert opened.append(span_events(ids, END))
    span_server.faults.hang()
    config = ship_config.with_options(batch_size=5, concurrency=8)
    limit = SteeredLimit(2)

    async def main() -> None:
        async with Shipper(spool, config, concurrency=limit) as shipper:
            running = asyncio.create_task(shipper.run())
            await eventually(lambda: span_server.stats().in_flight == 2, "two in flight")
            # However often the loop turns (every append wakes it), no third request starts.
            for n in range(3):
                await append_off_loop(spool, span_events([f"more{n}"], END))
            assert span_server.stats().in_flight == 2

            limit.limit = 4  # read again at the next wake-up
            await append_off_loop(spool, span_events(["last"], END))
            await eventually(lambda: span_server.stats().in_flight == 4, "four in flight")

            span_server.faults.unhang()
            everything = {*ids, "more0", "more1", "more2", "last"}
            await eventually(lambda: span_server.completed_ids() == everything, "delivery")
            await shipper.stop(timeout=5)
            await running

    run_async(main())

    assert len(limit.recorded) == span_server.request_count
    assert {signal for _, signal in limit.recorded} == {Signal.OK}
    assert all(rtt > 0 for rtt, _ in limit.recorded)


def test_back_pressure_is_reported_to_the_controller(
    tmp_path: Path, span_server: FakeSpanServer, ship_config: ShipperConfig
) -> None:
    spool = SpoolConfig(path=tmp_path / "spool.db")
    with Spool.open(spool) as opened:
        assert opened.append(span_events(["a"], END))
    span_server.faults.fail_next(1, status=503)
    span_server.faults.fail_next(1, status=429)
    limit = SteeredLimit(1)

    async def main() -> None:
        async with Shipper(spool, ship_config, concurrency=limit, sleep=RecordedSleeps()) as s:
            assert (await s.drain(timeout=30)).exit_code == 0

    run_async(main())

    signals = [signal for _, signal in limit.recorded]
    assert signals == [Signal.BACKPRESSURE, Signal.BACKPRESSURE, Signal.OK]


@pytest.mark.parametrize(
    ("verdict", "signal"),
    [
        (Verdict(Action.ACK, 200), Signal.OK),
        (Verdict(Action.RETRY, 503), Signal.BACKPRESSURE),
        (Verdict(Action.RETRY, 429), Signal.BACKPRESSURE),
        (Verdict(Action.RETRY, None, "timeout: read"), Signal.BACKPRESSURE),
        (Verdict(Action.RETRY, None, "connection error: refused"), Signal.BACKPRESSURE),
        (Verdict(Action.RETRY, 500), Signal.OTHER),
        (Verdict(Action.BISECT, 422), Signal.OTHER),
        (Verdict(Action.PAUSE, 401), Signal.OTHER),
    ],
)
def test_each_answer_signals_what_the_brief_says(verdict: Verdict, signal: Signal) -> None:
    assert signal_of(verdict) is signal


def starts_spooled_now(tmp_path: Path, ids: list[str], clock: FakeClock) -> SpoolConfig:
    spool = SpoolConfig(path=tmp_path / "spool.db")
    with Spool.open(spool) as opened:
        assert opened.append(span_events(ids, START, enqueued_at=clock.now))
    return spool


def test_a_start_waits_for_the_start_delay_and_an_end_that_comes_first_supersedes_it(
    tmp_path: Path, span_server: FakeSpanServer, ship_config: ShipperConfig
) -> None:
    clock = FakeClock()
    spool = starts_spooled_now(tmp_path, ["long", "short"], clock)
    config = ship_config.with_options(start_delay=5.0)

    async def main() -> None:
        async with Shipper(spool, config, clock=clock) as shipper:
            running = asyncio.create_task(shipper.run())
            reads = clock.reads
            await eventually(lambda: clock.reads >= reads + 20, "the loop turning")
            assert span_server.request_count == 0  # both starts are younger than 5 s
            await append_off_loop(spool, span_events(["short"], END))
            await eventually(lambda: span_server.completed_ids() == {"short"}, "short's end")
            clock.advance(5)
            await eventually(lambda: ("trace-1", "long") in span_server.spans(), "long's start")
            await shipper.stop(timeout=5)
            await running

    run_async(main())

    kinds = sorted((a.span_id, a.kind.value) for a in span_server.arrivals())
    assert kinds == [("long", "start"), ("short", "end")]  # short's start never sent
    with Spool.open(spool) as opened:
        assert opened.stats().superseded == 1


def test_a_start_that_comes_due_between_a_claim_and_the_idle_wait_is_claimed_at_once(
    tmp_path: Path,
    span_server: FakeSpanServer,
    ship_config: ShipperConfig,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The race once seen only under load: the claim looks while the start is 4.9 s old, the
    clock passes 5 s before the idle wait reads it. The idle wait must claim again at once;
    it used to take the start's due time for one held back for another reason and wait for a
    wake-up that never came (the clock here stands still from then on)."""
    clock = FakeClock()
    spool = starts_spooled_now(tmp_path, ["a"], clock)
    clock.advance(4.9)
    claim = ops.claim
    jumped: list[float] = []

    def claim_then_time_passes(*args: Any, **kwargs: Any) -> ops.Tx[list[ClaimedEvent]]:
        claimed = yield from claim(*args, **kwargs)
        if not claimed and not jumped:
            jumped.append(clock.now)
            clock.advance(0.2)  # right after the claim found nothing ready
        return claimed

    monkeypatch.setattr(ops, "claim", claim_then_time_passes)

    async def main() -> None:
        config = ship_config.with_options(start_delay=5.0, poll_interval=0.01)
        async with Shipper(spool, config, clock=clock) as shipper:
            running = asyncio.create_task(shipper.run())
            await eventually(lambda: span_server.request_count == 1, "a's start", 5.0)
            await shipper.stop(timeout=5)
            await running

    run_async(main())

    assert len(jumped) == 1
    assert [(a.span_id, a.kind.value) for a in span_server.arrivals()] == [("a", "start")]


def test_a_drain_ships_young_starts_at_once(
    tmp_path: Path, span_server: FakeSpanServer, ship_config: ShipperConfig
) -> None:
    clock = FakeClock()
    spool = starts_spooled_now(tmp_path, ["a"], clock)
    config = ship_config.with_options(start_delay=60.0)

    async def main() -> None:
        async with Shipper(spool, config, clock=clock) as shipper:
            assert (await shipper.drain(timeout=30)).exit_code == 0

    run_async(main())
    assert [a.span_id for a in span_server.arrivals()] == ["a"]


def test_batches_are_cut_by_bytes_before_the_endpoint_says_413(
    tmp_path: Path, span_server: FakeSpanServer, ship_config: ShipperConfig
) -> None:
    spool = SpoolConfig(path=tmp_path / "spool.db")
    ids = [f"big{i:02}" for i in range(30)]
    events = [
        NewEvent(i, "trace-1", END, span_payload(i, end=True, metadata={"blob": "x" * 900}))
        for i in ids
    ]
    with Spool.open(spool) as opened:
        assert opened.append(events)
    span_server.faults.set_max_body_bytes(4096)
    config = ship_config.with_options(batch_size=50, batch_max_bytes=4096, concurrency=4)

    async def main() -> None:
        async with Shipper(spool, config) as shipper:
            assert (await shipper.drain(timeout=30)).exit_code == 0

    run_async(main())

    assert span_server.completed_ids() == set(ids)
    assert 413 not in span_server.stats().by_status
    assert max(r.item_count for r in span_server.requests()) < 5
