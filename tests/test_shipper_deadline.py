"""A request has a total deadline, shorter than the lease, and the lease is renewed while the
request is in flight: a slow answer never lets another shipper (or this one) claim and send
the same events, and a late answer never changes events another shipper holds."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from conftest import (
    FakeClock,
    GatedSleep,
    RecordedSleeps,
    append_off_loop,
    eventually,
    run_async,
    server_reaches,
    span_events,
)

from shipper import Shipper, ShipperConfig
from shipper.testing import FakeSpanServer
from spool import EventKind, EventRecord, EventState, Outcome, Spool, SpoolConfig, ops

START, END = EventKind.START, EventKind.END


def records(spool: SpoolConfig, span_id: str) -> list[EventRecord]:
    with Spool.open(spool) as opened:
        return opened.run(ops.find(span_id), write=False)


def test_a_trickled_answer_is_cut_off_at_the_request_deadline(
    tmp_path: Path, span_server: FakeSpanServer, ship_config: ShipperConfig
) -> None:
    """issue 11: an answer trickled a byte at a time never trips a per-read timeout (one
    request stayed open 19 s with a 3 s timeout). The whole request has a deadline: the
    attempt fails as a timeout and is retried, long before the trickle would end (about 10 s
    here)."""
    spool = SpoolConfig(path=tmp_path / "spool.db")
    with Spool.open(spool) as opened:
        assert opened.append(span_events(["a"], END))
    span_server.faults.trickle(0.05)
    config = ship_config.with_options(request_timeout=0.5)

    async def main() -> None:
        sleep = GatedSleep()
        async with Shipper(spool, config, sleep=sleep) as shipper:
            running = asyncio.create_task(shipper.run())
            await asyncio.wait_for(sleep.entered.wait(), 5)
            (record,) = records(spool, "a")
            assert record.attempts == 1
            assert record.last_error is not None
            assert record.last_error.startswith("no response: timeout"), record.last_error
            span_server.faults.clear()
            sleep.gate.set()
            await server_reaches(span_server, lambda: span_server.completed_ids() == {"a"}, "a")
            await shipper.stop(timeout=5)
            await running

    run_async(main())


def test_a_lease_is_renewed_while_its_request_is_in_flight(
    tmp_path: Path, span_server: FakeSpanServer, ship_config: ShipperConfig
) -> None:
    """issue 11's re-claim: a request outlasts the lease it was claimed with (here the clock
    moves 3 leases on while the endpoint holds the request). The lease is renewed, so another
    shipper neither takes the start nor supersedes it and sends the end ahead of it."""
    spool = SpoolConfig(path=tmp_path / "spool.db")
    with Spool.open(spool) as opened:
        assert opened.append(span_events(["x"], START))
    span_server.faults.hang()
    clock = FakeClock()
    lease = 60.0
    config = ship_config.with_options(lease_seconds=lease)

    async def main() -> None:
        async with (
            Shipper(spool, config, clock=clock, owner="first") as first,
            Shipper(spool, config, clock=clock, owner="second") as second,
        ):
            running = [asyncio.create_task(first.run())]
            await server_reaches(span_server, lambda: span_server.request_count == 1, "start")
            clock.advance(3 * lease)
            await eventually(
                lambda: (records(spool, "x")[0].lease_expires_at or 0) > clock.now,
                "the lease renewed",
            )
            await append_off_loop(spool, span_events(["x"], END))
            running.append(asyncio.create_task(second.run()))
            reads = clock.reads
            await eventually(lambda: clock.reads >= reads + 40, "both shippers turning")
            assert span_server.request_count == 1  # the end waits for its start
            start, end = records(spool, "x")
            assert (start.state, start.lease_owner) == (EventState.LEASED, "first")
            assert end.state is EventState.PENDING

            span_server.faults.unhang()
            await eventually(
                lambda: all(r.state is EventState.DONE for r in records(spool, "x")), "both done"
            )
            await first.stop(timeout=5)
            await second.stop(timeout=5)
            await asyncio.gather(*running)

    run_async(main())

    start, end = records(spool, "x")
    assert (start.outcome, end.outcome) == (Outcome.SHIPPED, Outcome.SHIPPED)
    assert span_server.order_violations() == []
    assert span_server.duplicates() == 0


def test_a_late_answer_leaves_events_another_shipper_now_holds_alone(tmp_path: Path) -> None:
    spool = SpoolConfig(path=tmp_path / "spool.db")
    with Spool.open(spool) as opened:
        assert opened.append(span_events(["a", "b"], END))
        seqs = [e.seq for e in opened.run(ops.claim("A", 10, 30.0, 1000.0))]
        assert [e.seq for e in opened.run(ops.claim("B", 10, 30.0, 1030.0))] == seqs

        assert opened.run(ops.ack(seqs, 1031.0, owner="A")) == 0
        assert opened.run(ops.dead_letter({seqs[0]: "HTTP 422"}, 1031.0, owner="A")) == 0
        assert {r.lease_owner for r in opened.run(ops.find("a"), write=False)} == {"B"}

        assert opened.run(ops.ack(seqs, 1032.0, owner="B")) == 2


def test_the_deadline_applies_to_uploads_it_does_not_own(
    tmp_path: Path, span_server: FakeSpanServer, ship_config: ShipperConfig
) -> None:
    """Any uploader (here the SGP one, with the SDK's per-read timeout longer than the
    deadline) is cut off: the deadline is the shipper's, not the transport's."""
    spool = SpoolConfig(path=tmp_path / "spool.db")
    with Spool.open(spool) as opened:
        assert opened.append(span_events(["a"], END))
    span_server.faults.hang()
    config = ship_config.with_options(request_timeout=30.0, lease_seconds=1.0)

    async def main() -> None:
        sleeps = RecordedSleeps()
        async with Shipper(spool, config, sleep=sleeps) as shipper:
            running = asyncio.create_task(shipper.run())
            await eventually(lambda: len(sleeps.waits) >= 1, "a failed attempt")
            (record,) = records(spool, "a")
            assert record.last_error is not None
            assert record.last_error.startswith("no response: timeout"), record.last_error
            await shipper.stop(timeout=1)
            await running

    run_async(main())


def test_an_owners_ack_looks_up_its_events_and_scans_nothing(tmp_path: Path) -> None:
    """The owner condition must not turn the ack into a scan of every pending row (an OR of
    state tests does, through events_by_state): a batch's ack is a few key lookups."""
    spool = SpoolConfig(path=tmp_path / "spool.db")
    with Spool.open(spool) as opened:
        assert opened.append(span_events([f"s{i}" for i in range(10)], END))
    dead_letter = ops.dead_letter({1: "422"}, 5.0, owner="A")
    next(dead_letter)  # total_changes() before
    for query in (next(ops.ack([1, 2], 5.0, owner="A")), dead_letter.send([(0,)])):
        params = query.params[0] if query.many else query.params
        conn = sqlite3.connect(spool.path)
        try:
            plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {query.sql}", params)]
        finally:
            conn.close()
        assert not any(step.startswith("MULTI-INDEX") or "SCAN events" in step for step in plan)
        assert any("PRIMARY KEY" in step for step in plan), plan
