"""Backoff survives restarts: every failed attempt is written to the spool (attempts,
next_attempt_at, last_error) and a new shipper honours it. Transient failures dead-letter only
after ``max_age``.

Time is a FakeClock moved by the test; sleeps are injected. Nothing waits for real backoff.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from conftest import (
    FakeClock,
    GatedSleep,
    RecordedSleeps,
    eventually,
    run_async,
    server_reaches,
    span_events,
)

from shipper import Shipper, ShipperConfig
from shipper.testing import FakeSpanServer
from spool import EventKind, EventRecord, EventState, MetaKey, Spool, SpoolConfig, ops

END = EventKind.END
IDS = ["a", "b", "c"]


def find(spool: SpoolConfig, span_id: str) -> EventRecord:
    with Spool.open(spool) as opened:
        (record,) = opened.run(ops.find(span_id), write=False)
    return record


def spool_with(tmp_path: Path, ids: list[str], enqueued_at: float | None = None) -> SpoolConfig:
    spool = SpoolConfig(path=tmp_path / "spool.db")
    with Spool.open(spool) as opened:
        opened.append(span_events(ids, END, enqueued_at=enqueued_at))
    return spool


async def clock_read(clock: FakeClock, times: int) -> None:
    """Let a shipper on ``clock`` go round its claim/idle loop ``times`` more times."""
    target = clock.reads + times
    await eventually(lambda: clock.reads >= target, f"{times} more clock reads")


def test_a_failed_attempt_is_persisted_and_a_restarted_shipper_waits_for_it(
    tmp_path: Path, span_server: FakeSpanServer, ship_config: ShipperConfig
) -> None:
    spool = spool_with(tmp_path, IDS)
    clock = FakeClock()
    started = clock.now
    span_server.faults.fail_next(1, status=503, retry_after=30)
    config = ship_config.with_options(backoff_initial=1.0, backoff_max=2.0)

    async def main() -> None:
        sleep = GatedSleep()
        async with Shipper(spool, config, clock=clock, sleep=sleep, owner="first") as first:
            running = asyncio.create_task(first.run())
            await asyncio.wait_for(sleep.entered.wait(), 10)

            # The failure is on disk before the wait begins.
            for span_id in IDS:
                record = find(spool, span_id)
                assert record.state is EventState.LEASED
                assert record.lease_owner == "first"
                assert record.attempts == 1
                assert record.next_attempt_at == started + 30
                assert record.lease_expires_at == started + 30 + config.lease_seconds
                assert record.last_error == "HTTP 503: service unavailable"
            with Spool.open(spool) as opened:
                meta = opened.stats().meta
            assert meta[MetaKey.LAST_ERROR] == "HTTP 503: service unavailable"

            stopping = asyncio.create_task(first.stop(timeout=5))
            sleep.gate.set()
            await stopping
            await running
        assert sleep.waits == [30.0]
        for span_id in IDS:  # released with the backoff kept
            record = find(spool, span_id)
            assert record.state is EventState.PENDING
            assert record.lease_owner is None
            assert (record.attempts, record.next_attempt_at) == (1, started + 30)

        async with Shipper(spool, config, clock=clock, sleep=RecordedSleeps()) as second:
            running = asyncio.create_task(second.run())
            await clock_read(clock, 20)
            assert span_server.request_count == 1
            clock.advance(29.5)  # still before next_attempt_at
            await clock_read(clock, 20)
            assert span_server.request_count == 1
            clock.advance(0.5)
            await server_reaches(
                span_server, lambda: span_server.completed_ids() == set(IDS), "the retry"
            )
            await second.stop(timeout=5)
            await running
        assert span_server.request_count == 2

    run_async(main())


def test_a_shipper_that_dies_mid_backoff_leaves_its_events_to_nobody_until_due(
    tmp_path: Path, span_server: FakeSpanServer, ship_config: ShipperConfig
) -> None:
    """What a shipper writes before its backoff wait (the test above) keeps every other
    shipper off the events until next_attempt_at + the lease, even if it dies in the wait.
    The dead shipper is its records, written as a shipper writes them: a live one would go
    on renewing its lease."""
    spool = spool_with(tmp_path, IDS)
    clock = FakeClock()
    config = ship_config.with_options(backoff_initial=1.0, backoff_max=2.0, lease_seconds=10)
    with Spool.open(spool) as opened:
        seqs = [e.seq for e in opened.run(ops.claim("dies", 10, 10.0, clock.now))]
        opened.run(
            ops.retry_later(seqs, "dies", next_attempt_at=clock.now + 30, error="HTTP 503",
                            lease_seconds=10.0, now=clock.now)
        )  # fmt: skip

    async def main() -> None:
        async with Shipper(spool, config, clock=clock, owner="heir") as second:
            running = asyncio.create_task(second.run())
            await clock_read(clock, 20)
            clock.advance(35)  # past next_attempt_at, not past the lease
            await clock_read(clock, 20)
            assert span_server.request_count == 0
            assert find(spool, "a").lease_owner == "dies"
            clock.advance(6)
            await server_reaches(
                span_server, lambda: span_server.completed_ids() == set(IDS), "the heir"
            )
            await second.stop(timeout=5)
            await running

    run_async(main())
    assert span_server.request_count == 1
    assert span_server.duplicates() == 0
    assert all(find(spool, i).state is EventState.DONE for i in IDS)


def test_transient_failures_dead_letter_only_after_max_age(
    tmp_path: Path, span_server: FakeSpanServer, ship_config: ShipperConfig
) -> None:
    clock = FakeClock()
    enqueued = clock.now
    spool = spool_with(tmp_path, ["old"], enqueued_at=enqueued)
    span_server.faults.set_random(fail_rate=1.0, status=503)
    config = ship_config.with_options(backoff_initial=10.0, backoff_max=40.0, max_age=100.0)
    seen: list[tuple[float, EventState]] = []

    async def sleep(seconds: float) -> None:
        seen.append((clock.now - enqueued, find(spool, "old").state))
        clock.advance(seconds)
        await asyncio.sleep(0)

    async def main() -> None:
        async with Shipper(spool, config, clock=clock, sleep=sleep) as shipper:
            result = await shipper.drain(timeout=30)
        assert result.exit_code == 2
        assert (result.dead, result.dead_lettered, result.pending) == (1, 1, 0)

    run_async(main())

    young = [state for age, state in seen if age < 100]
    assert len(young) >= 3
    assert all(state is EventState.LEASED for state in young)
    record = find(spool, "old")
    assert record.state is EventState.DEAD
    assert record.last_error == "max_age exceeded after HTTP 503: service unavailable"
    assert span_server.request_count == len(young) + 1
    assert record.attempts == len(young)
    assert record.done_at is not None
    assert record.done_at - enqueued >= 100


def test_a_restarted_shipper_resumes_the_backoff_it_had_reached(
    tmp_path: Path, span_server: FakeSpanServer, ship_config: ShipperConfig
) -> None:
    """DESIGN: attempts are persisted "so a restart does not hammer". An event that already
    failed 6 times waits like a 7th failure after a restart, not like a first one."""
    spool = spool_with(tmp_path, ["a"])
    span_server.faults.set_random(fail_rate=1.0, status=503)
    initial, maximum = 1.0, 60.0
    config = ship_config.with_options(backoff_initial=initial, backoff_max=maximum)

    clock = FakeClock()

    async def run_until_waits(n: int) -> list[float]:
        clock.advance(maximum + 1)  # past whatever next_attempt_at the last run persisted
        sleeps = RecordedSleeps(clock)
        async with Shipper(spool, config, clock=clock, sleep=sleeps) as shipper:
            running = asyncio.create_task(shipper.run())
            await eventually(lambda: len(sleeps.waits) >= n, f"{n} waits")
            await shipper.stop(timeout=5)
            await running
        return sleeps.waits

    first = run_async(run_until_waits(6))
    assert find(spool, "a").attempts >= 6
    persisted = find(spool, "a").attempts
    after_restart = run_async(run_until_waits(1))

    assert after_restart[0] >= min(initial * 2**persisted, maximum), (first, after_restart)
