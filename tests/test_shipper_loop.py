"""The ship loop: batch size and concurrency, linger, waking on new events (this process and
others), stop() under a hung endpoint, and what drain() reports."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import (
    SPAN_ENDED_AT,
    SPAN_STARTED_AT,
    FakeClock,
    RecordedSleeps,
    append_off_loop,
    eventually,
    run_async,
    server_reaches,
    span_events,
)

from shipper import AdaptiveConcurrency, DrainResult, Shipper, ShipperConfig, StopReason
from shipper.dispatch import MAX_IDLE
from shipper.testing import FakeSpanServer, RequestRecord
from spool import EventKind, EventRecord, EventState, Spool, SpoolConfig, SpoolProcessor, SpoolStats

END = EventKind.END
CHILDREN = Path(__file__).parent / "shipper_children"


def spool_with(tmp_path: Path, ids: list[str]) -> SpoolConfig:
    spool = SpoolConfig(path=tmp_path / "spool.db")
    with Spool.open(spool) as opened:
        if ids:
            assert opened.append(span_events(ids, END))
    return spool


def stats(spool: SpoolConfig) -> SpoolStats:
    with Spool.open(spool) as opened:
        return opened.stats()


def all_records(spool: SpoolConfig) -> list[EventRecord]:
    with Spool.open(spool) as opened:
        return list(opened.export(list(EventState)))


def ids_of(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i:04}" for i in range(n)]


def busiest_window(requests: list[RequestRecord], latency: float) -> int:
    """The most requests that arrived within ``latency`` of one another. The server holds each
    for ``latency`` before answering, so all of them were in flight together: a lower bound on
    the client's concurrency that never over-counts."""
    arrivals = sorted(r.at for r in requests)
    most = 0
    for i, start in enumerate(arrivals):
        most = max(most, sum(1 for t in arrivals[i:] if t - start < latency))
    return most


# -- batching and concurrency ---------------------------------------------------------------------


def test_batch_size_and_concurrency_are_respected(
    tmp_path: Path, span_server: FakeSpanServer, ship_config: ShipperConfig
) -> None:
    ids = ids_of("s", 600)
    spool = spool_with(tmp_path, ids)
    latency = 0.05
    span_server.faults.set_latency(latency)
    config = ship_config.with_options(batch_size=20, concurrency=3)

    async def main() -> DrainResult:
        async with Shipper(spool, config) as shipper:
            return await shipper.drain(timeout=60)

    result = run_async(main())

    assert result.exit_code == 0
    requests = span_server.requests()
    assert {r.item_count for r in requests} == {20}
    assert len(requests) == 30
    assert busiest_window(requests, latency) == 3
    assert span_server.completed_ids() == set(ids)


# -- linger ---------------------------------------------------------------------------------------


def test_a_partial_batch_lingers_for_company_at_most_linger(
    tmp_path: Path, span_server: FakeSpanServer, ship_config: ShipperConfig
) -> None:
    spool = spool_with(tmp_path, ids_of("a", 12))
    clock = FakeClock()
    config = ship_config.with_options(batch_size=5, linger=1.0, concurrency=4)

    async def main() -> None:
        async with Shipper(spool, config, clock=clock) as shipper:
            running = asyncio.create_task(shipper.run())
            # Full batches go at once, without waiting for the clock.
            await server_reaches(span_server, lambda: span_server.request_count >= 2, "2 batches")
            await eventually(lambda: stats(spool).leased == 2, "the partial batch claimed")
            reads = clock.reads
            await eventually(lambda: clock.reads >= reads + 20, "the linger loop turning")
            assert span_server.request_count == 2

            # Company arrives while it lingers: it joins the batch.
            await append_off_loop(spool, span_events(ids_of("b", 2), END))
            await eventually(lambda: stats(spool).leased == 4, "the late events joining")
            clock.advance(0.9)
            reads = clock.reads
            await eventually(lambda: clock.reads >= reads + 20, "the linger loop turning")
            assert span_server.request_count == 2

            clock.advance(0.1)  # linger is up
            await server_reaches(span_server, lambda: span_server.request_count == 3, "linger")
            await shipper.stop(timeout=5)
            await running

    run_async(main())
    assert [r.item_count for r in span_server.requests()] == [5, 5, 4]
    assert span_server.completed_ids() == set(ids_of("a", 12) + ids_of("b", 2))


# -- waking up ------------------------------------------------------------------------------------


async def until_idle(clock: FakeClock) -> None:
    # On a quiet spool the loop reads the clock as it starts (1), housekeeps (2), claims (3)
    # and goes idle (4, 5): after the fifth read it is waiting for news.
    await eventually(lambda: clock.reads >= 5, "the shipper to go idle")


def test_appends_in_this_process_wake_the_shipper_at_once(
    tmp_path: Path, span_server: FakeSpanServer, ship_config: ShipperConfig
) -> None:
    spool = spool_with(tmp_path, [])
    clock = FakeClock()  # stands still: the idle timeout never fires
    config = ship_config.with_options(poll_interval=60.0)  # polling would take a minute

    async def main() -> None:
        processor = SpoolProcessor(spool.path)
        async with Shipper(spool, config, clock=clock) as shipper:
            running = asyncio.create_task(shipper.run())
            await until_idle(clock)
            item = {
                "name": "woken",
                "id": "w1",
                "trace_id": "trace-1",
                "start_timestamp": SPAN_STARTED_AT,
                "end_timestamp": SPAN_ENDED_AT,
            }
            await processor.on_span_end(item)
            # Sooner than the idle loop's own look-around (MAX_IDLE, real seconds here).
            await server_reaches(
                span_server,
                lambda: "w1" in span_server.completed_ids(),
                "the shipper to wake",
                timeout=MAX_IDLE / 2,
            )
            await shipper.stop(timeout=5)
            await running
        await processor.shutdown()

    run_async(main(), timeout=30)
    assert span_server.request_count == 1


def test_appends_from_another_process_are_noticed(
    tmp_path: Path, span_server: FakeSpanServer, ship_config: ShipperConfig
) -> None:
    spool = spool_with(tmp_path, [])
    clock = FakeClock()
    config = ship_config.with_options(poll_interval=0.05)

    async def main() -> None:
        async with Shipper(spool, config, clock=clock) as shipper:
            running = asyncio.create_task(shipper.run())
            await until_idle(clock)
            child = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, str(CHILDREN / "shipper_append.py"), str(spool.path), "x", "30"],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert child.returncode == 0, child.stderr
            assert child.stdout.strip() == "appended 30"
            await server_reaches(
                span_server, lambda: len(span_server.completed_ids()) == 30, "the child's spans"
            )
            await shipper.stop(timeout=5)
            await running

    run_async(main())
    assert span_server.completed_ids() == {f"x{i}" for i in range(30)}


# -- stop -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("events", "concurrency"),
    [
        (60, 4),  # two batches hang, two slots free
        (1000, 2),  # every slot hangs: the dispatcher itself waits for a slot
    ],
)
def test_stop_returns_within_its_timeout_when_the_endpoint_hangs(
    tmp_path: Path,
    span_server: FakeSpanServer,
    ship_config: ShipperConfig,
    events: int,
    concurrency: int,
) -> None:
    ids = ids_of("h", events)
    spool = spool_with(tmp_path, ids)
    span_server.faults.hang()
    config = ship_config.with_options(concurrency=concurrency, request_timeout=3.0)
    timeout = 0.5

    async def main() -> float:
        # Every slot open from the start: no answer ever comes to raise the adaptive limit.
        limit = AdaptiveConcurrency(concurrency, initial=concurrency)
        async with Shipper(spool, config, concurrency=limit) as shipper:
            running = asyncio.create_task(shipper.run())
            hung = min(concurrency, -(-events // config.batch_size))
            await server_reaches(
                span_server, lambda: span_server.stats().in_flight == hung, "hung requests"
            )
            began = time.monotonic()
            await shipper.stop(timeout=timeout)
            elapsed = time.monotonic() - began
            await running
        return elapsed

    elapsed = run_async(main(), timeout=30)
    assert elapsed < timeout + 1.0
    after = stats(spool)
    assert (after.pending, after.leased, after.done, after.dead) == (events, 0, 0, 0)
    assert all(r.attempts == 0 and r.lease_owner is None for r in all_records(spool))

    # Nothing was lost: once the endpoint answers again, a new shipper delivers everything.
    span_server.faults.unhang()

    async def again() -> DrainResult:
        async with Shipper(spool, config) as shipper:
            return await shipper.drain(timeout=30)

    assert run_async(again()).exit_code == 0
    assert span_server.completed_ids() == set(ids)


# -- drain results --------------------------------------------------------------------------------


def test_drain_exit_0_when_everything_is_delivered(
    tmp_path: Path, span_server: FakeSpanServer, ship_config: ShipperConfig
) -> None:
    spool = spool_with(tmp_path, ids_of("d", 130))
    progress: list[tuple[int, int]] = []

    async def main() -> DrainResult:
        async with Shipper(spool, ship_config) as shipper:
            return await shipper.drain(
                timeout=30, progress=lambda p: progress.append((p.shipped, p.remaining))
            )

    result = run_async(main())
    assert result.exit_code == 0
    assert (result.shipped, result.pending, result.leased, result.dead) == (130, 0, 0, 0)
    assert result.reason is None
    assert result.describe().endswith("everything delivered")
    assert sorted(progress) == progress
    assert progress[-1] == (130, 0)


def test_drain_exit_2_when_some_events_are_dead(
    tmp_path: Path, span_server: FakeSpanServer, ship_config: ShipperConfig
) -> None:
    spool = spool_with(tmp_path, ids_of("d", 30))
    span_server.faults.refuse(["d0007"], status=409)

    async def main() -> DrainResult:
        async with Shipper(spool, ship_config) as shipper:
            return await shipper.drain(timeout=30)

    result = run_async(main())
    assert result.exit_code == 2
    assert (result.shipped, result.dead_lettered, result.dead, result.pending) == (29, 1, 1, 0)
    assert result.reason is None
    assert "1 event(s) dead-lettered" in result.describe()


def test_drain_exit_1_on_timeout(
    tmp_path: Path, span_server: FakeSpanServer, ship_config: ShipperConfig
) -> None:
    spool = spool_with(tmp_path, ids_of("t", 60))
    span_server.faults.hang()
    config = ship_config.with_options(request_timeout=3.0)

    async def main() -> tuple[DrainResult, float]:
        async with Shipper(spool, config) as shipper:
            began = time.monotonic()
            result = await shipper.drain(timeout=0.3)
            return result, time.monotonic() - began

    result, elapsed = run_async(main(), timeout=30)
    assert elapsed < 0.3 + 1.0  # the in-flight requests hang: they are abandoned, not awaited
    assert result.exit_code == 1
    assert result.reason is StopReason.TIMEOUT
    assert result.detail == "after 0.3s"
    assert (result.pending, result.leased, result.shipped) == (60, 0, 0)
    assert "stopped, timeout (after 0.3s)" in result.describe()


def test_drain_exit_1_when_the_endpoint_keeps_answering_503(
    tmp_path: Path, span_server: FakeSpanServer, ship_config: ShipperConfig
) -> None:
    spool = spool_with(tmp_path, ["u1"])
    span_server.faults.set_random(fail_rate=1.0, status=503)
    sleeps = RecordedSleeps()

    async def main() -> DrainResult:
        async with Shipper(spool, ship_config, sleep=sleeps) as shipper:
            return await shipper.drain(timeout=30)

    result = run_async(main())
    assert result.exit_code == 1
    # It answered, with an error: the reason says so, not "unreachable".
    assert (result.reason, result.status) == (StopReason.ENDPOINT_ERROR, 503)
    assert result.detail == "HTTP 503: service unavailable"
    assert "stopped, HTTP 503 from the endpoint (HTTP 503: service unavailable)" in (
        result.describe()
    )
    assert (result.pending, result.dead) == (1, 0)
    (record,) = all_records(spool)
    assert record.state is EventState.PENDING
    # Every failed attempt is on the event, the last one included.
    assert record.attempts == span_server.request_count


def test_a_shipper_never_closed_does_not_keep_the_process_from_exiting(tmp_path: Path) -> None:
    """A shipper abandoned open (its task raised; the traceback keeps it alive) must not leave
    a thread behind that the interpreter waits for at exit: this hung a whole test run once."""
    child = subprocess.run(
        [sys.executable, str(CHILDREN / "abandoned.py"), str(tmp_path / "spool.db")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (child.returncode, child.stdout) == (0, "abandoned\n"), child.stderr
