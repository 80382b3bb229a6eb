"""Clock jumps (issue 12): every wait is bounded by its configured maximum relative to now,
and an event's age for ``max_age`` is not read off the wall clock alone.

The wall clock is a FakeClock the test steps a day back or eight days forward.
"""

from __future__ import annotations

from pathlib import Path

from conftest import FakeClock, RecordedSleeps, run_async, span_events

from shipper import DrainResult, Shipper, ShipperConfig
from shipper.testing import FakeSpanServer
from spool import EventKind, EventRecord, Spool, SpoolConfig, ops

END = EventKind.END
DAY = 86_400.0
IDS = ["a", "b", "c"]


def spool_with(tmp_path: Path, ids: list[str], enqueued_at: float | None = None) -> SpoolConfig:
    spool = SpoolConfig(path=tmp_path / "spool.db")
    with Spool.open(spool) as opened:
        assert opened.append(span_events(ids, END, enqueued_at=enqueued_at))
    return spool


def all_records(spool: SpoolConfig) -> list[EventRecord]:
    with Spool.open(spool) as opened:
        return [r for i in IDS for r in opened.run(ops.find(i), write=False)]


def drain(
    spool: SpoolConfig, config: ShipperConfig, clock: FakeClock, timeout: float = 10
) -> DrainResult:
    async def main() -> DrainResult:
        sleeps = RecordedSleeps(clock)
        async with Shipper(spool, config, clock=clock, sleep=sleeps) as shipper:
            return await shipper.drain(timeout=timeout)

    return run_async(main())


def test_events_in_backoff_do_not_wait_a_day_after_the_clock_steps_back(
    tmp_path: Path, span_server: FakeSpanServer, ship_config: ShipperConfig
) -> None:
    clock = FakeClock()
    spool = spool_with(tmp_path, IDS)
    with Spool.open(spool) as opened:
        seqs = [e.seq for e in opened.run(ops.claim("earlier", 10, 60.0, clock.now))]
        opened.run(ops.fail(seqs, "earlier", clock.now + 20, "HTTP 503: service unavailable"))
    clock.advance(-DAY)

    result = drain(spool, ship_config, clock, timeout=5)

    assert result.exit_code == 0, result.describe()
    assert span_server.completed_ids() == set(IDS)


def test_leased_events_do_not_wait_a_day_after_the_clock_steps_back(
    tmp_path: Path, span_server: FakeSpanServer, ship_config: ShipperConfig
) -> None:
    """A shipper died holding a lease; the clock then went back a day. Its lease counts as
    expired once it lies further ahead than any lease this configuration writes."""
    clock = FakeClock()
    spool = spool_with(tmp_path, IDS)
    with Spool.open(spool) as opened:
        assert len(opened.run(ops.claim("died", 10, 60.0, clock.now))) == len(IDS)
    clock.advance(-DAY)

    result = drain(spool, ship_config, clock, timeout=5)

    assert result.exit_code == 0, result.describe()
    assert span_server.completed_ids() == set(IDS)


def test_a_lease_within_its_horizon_still_holds(tmp_path: Path) -> None:
    """The bound does not free leases that are merely long: a lease covering a backoff wait
    (up to the largest wait, plus the lease) still keeps others out."""
    spool = spool_with(tmp_path, ["a"])
    with Spool.open(spool) as opened:
        (held,) = opened.run(ops.claim("A", 1, 60.0, 1000.0))
        opened.run(
            ops.retry_later([held.seq], "A", next_attempt_at=1300.0, error="503",
                            lease_seconds=60.0, now=1000.0)
        )  # fmt: skip
        assert opened.run(ops.claim("B", 1, 60.0, 1001.0, max_wait=300.0)) == []
        assert opened.run(ops.claim("B", 1, 60.0, 1001.0, max_wait=200.0)) != []


def test_a_clock_step_forward_does_not_dead_letter_fresh_events_for_max_age(
    tmp_path: Path, span_server: FakeSpanServer, ship_config: ShipperConfig
) -> None:
    """issue 12: eight days forward, then one 503: the events are a moment old, not eight
    days, and are delivered on the next attempt."""
    clock = FakeClock()
    spool = spool_with(tmp_path, IDS, enqueued_at=clock.now)
    clock.advance(8 * DAY)
    span_server.faults.fail_next(1, status=503)

    result = drain(spool, ship_config, clock)

    assert result.exit_code == 0, result.describe()
    assert (result.dead_lettered, result.dead) == (0, 0)
    assert span_server.completed_ids() == set(IDS)
    assert {r.attempts for r in all_records(spool)} == {1}


def test_extending_leases_never_shortens_one_except_after_a_step_back(tmp_path: Path) -> None:
    spool = spool_with(tmp_path, ["a", "b"])
    with Spool.open(spool) as opened:
        a, b = (e.seq for e in opened.run(ops.claim("A", 2, 60.0, 1000.0)))
        opened.run(ops.retry_later([a], "A", next_attempt_at=1300.0, error="503",
                                   lease_seconds=60.0, now=1000.0))  # fmt: skip
        # b's lease (1060) is extended; a's (1360, covering its wait) is kept.
        assert opened.run(ops.extend_leases([a, b], "A", 1090.0, latest=1400.0)) == 1
        assert opened.run(ops.extend_leases([a, b], "B", 1095.0, latest=1400.0)) == 0
        expiry = {r.seq: r.lease_expires_at for r in opened.run(ops.find("a"), write=False)}
        expiry |= {r.seq: r.lease_expires_at for r in opened.run(ops.find("b"), write=False)}
        assert expiry == {a: 1360.0, b: 1090.0}
        # The clock went back: a lease beyond the latest any lease could end comes back.
        assert opened.run(ops.extend_leases([a, b], "A", 1000.0 - DAY + 60, 1000 - DAY + 400)) == 2
