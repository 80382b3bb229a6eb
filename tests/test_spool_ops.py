"""The spool's operations, one contract suite run over both drivers (huey ``StorageTests``
style): :class:`spool.Spool` on sqlite3 and :class:`spool.AsyncSpool` on aiosqlite.

Every time is injected (``now=``, ``enqueued_at=``): nothing here waits for a clock.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Sequence
from typing import Protocol, TypeVar

import pytest

from spool import (
    AsyncSpool,
    ClaimedEvent,
    EventKind,
    EventRecord,
    EventState,
    MetaKey,
    NewEvent,
    Outcome,
    Spool,
    SpoolConfig,
    SpoolStats,
    ops,
)

T = TypeVar("T")

START, END = EventKind.START, EventKind.END
LEASE = 30.0


class Driver(Protocol):
    """What the contract suite needs from a spool, with the async driver made blocking."""

    def run(self, tx: ops.Tx[T], *, write: bool = True) -> T: ...

    def append(self, events: Sequence[NewEvent]) -> bool: ...

    def stats(self) -> SpoolStats: ...


class AsyncDriver:
    """Runs :class:`AsyncSpool` on a private event loop so the same tests drive both."""

    def __init__(self, runner: asyncio.Runner, spool: AsyncSpool) -> None:
        self._runner = runner
        self._spool = spool

    def run(self, tx: ops.Tx[T], *, write: bool = True) -> T:
        return self._runner.run(self._spool.run(tx, write=write))

    def append(self, events: Sequence[NewEvent]) -> bool:
        return self._runner.run(self._spool.append(events))

    def stats(self) -> SpoolStats:
        return self._runner.run(self._spool.stats())


@pytest.fixture(params=["sync", "async"])
def driver(request: pytest.FixtureRequest, spool_config: SpoolConfig) -> Iterator[Driver]:
    if request.param == "sync":
        with Spool.open(spool_config) as spool:
            yield spool
        return
    with asyncio.Runner() as runner:
        spool_async = runner.run(AsyncSpool.open(spool_config))
        try:
            yield AsyncDriver(runner, spool_async)
        finally:
            runner.run(spool_async.close())


def payload(span_id: str, kind: EventKind, trace_id: str = "t") -> bytes:
    return json.dumps({"id": span_id, "trace_id": trace_id, "kind": kind.value}).encode()


def event(
    span_id: str, kind: EventKind = START, *, trace_id: str = "t", at: float = 100.0
) -> NewEvent:
    return NewEvent(span_id, trace_id, kind, payload(span_id, kind, trace_id), enqueued_at=at)


def add(driver: Driver, *events: NewEvent) -> list[int]:
    """Append each event in its own commit; return the new seqs in order."""
    for e in events:
        assert driver.append([e])
    records = driver.run(ops.export_page(list(EventState), 0, 10_000), write=False)
    return [r.seq for r in records][-len(events) :]


def claim(driver: Driver, owner: str, now: float, limit: int = 50) -> list[ClaimedEvent]:
    return driver.run(ops.claim(owner, limit=limit, lease_seconds=LEASE, now=now))


def one(driver: Driver, seq: int) -> EventRecord:
    (record,) = driver.run(ops.find(str(seq)), write=False)
    return record


def names(events: Sequence[ClaimedEvent]) -> list[tuple[str, str]]:
    return [(e.span_id, e.kind.value) for e in events]


# ---- append and claim ---------------------------------------------------------------------


def test_append_then_claim_oldest_first(driver: Driver) -> None:
    seqs = add(driver, *(event(f"s{i}", at=100.0 + i) for i in range(5)))
    assert seqs == sorted(seqs)

    first = claim(driver, "A", now=200.0, limit=3)
    assert [e.seq for e in first] == seqs[:3]
    assert [e.span_id for e in first] == ["s0", "s1", "s2"]
    assert first[0].payload == payload("s0", START)
    assert first[0].trace_id == "t"
    assert first[0].kind is START
    assert first[0].attempts == 0
    assert first[0].enqueued_at == 100.0

    second = claim(driver, "A", now=200.0, limit=3)
    assert [e.span_id for e in second] == ["s3", "s4"]
    assert claim(driver, "A", now=200.0) == []
    record = one(driver, seqs[0])
    assert record.state is EventState.LEASED
    assert record.lease_owner == "A"
    assert record.lease_expires_at == 200.0 + LEASE


def test_append_many_events_in_one_call(driver: Driver) -> None:
    assert driver.append([event(f"s{i}") for i in range(20)])
    claimed = claim(driver, "A", now=1.0, limit=100)
    assert [e.span_id for e in claimed] == [f"s{i}" for i in range(20)]


def test_ack_then_claim_acks_first_so_the_end_of_a_start_just_acked_is_claimable(
    driver: Driver,
) -> None:
    start, other = add(driver, event("s1", START), event("s2", START))
    assert [e.seq for e in claim(driver, "A", now=200.0)] == [start, other]
    (end,) = add(driver, event("s1", END))
    assert claim(driver, "B", now=200.0) == []  # its start is in flight

    claimed = driver.run(ops.ack_then([start], 210.0, "A", ops.claim("A", 50, LEASE, 210.0)))

    assert [e.seq for e in claimed] == [end]
    acked = one(driver, start)
    assert (acked.state, acked.outcome, acked.done_at) == (EventState.DONE, Outcome.SHIPPED, 210.0)
    assert one(driver, other).state is EventState.LEASED  # not acked, still A's
    assert one(driver, end).lease_owner == "A"
    assert driver.run(ops.ack_then([], 210.0, "A", ops.claim("A", 50, LEASE, 210.0))) == []
    assert driver.stats().done == 1


# ---- leases -------------------------------------------------------------------------------


def test_a_lease_keeps_other_owners_out_until_it_expires(driver: Driver) -> None:
    seqs = add(driver, event("a"), event("b"))
    assert [e.seq for e in claim(driver, "A", now=1000.0)] == seqs

    assert claim(driver, "B", now=1000.0 + LEASE - 0.001) == []

    reclaimed = claim(driver, "B", now=1000.0 + LEASE)
    assert [e.seq for e in reclaimed] == seqs
    assert one(driver, seqs[0]).lease_owner == "B"

    # A's upload finished after all: its late ack still counts (the upsert is idempotent).
    assert driver.run(ops.ack(seqs, now=1031.0)) == 2
    assert one(driver, seqs[0]).state is EventState.DONE
    assert one(driver, seqs[0]).outcome is Outcome.SHIPPED
    assert one(driver, seqs[0]).done_at == 1031.0
    # B's ack finds nothing left to do.
    assert driver.run(ops.ack(seqs, now=1032.0)) == 0
    stats = driver.stats()
    assert (stats.pending, stats.leased, stats.done) == (0, 0, 2)


def test_ack_after_expiry_without_reclaim_marks_done(driver: Driver) -> None:
    (seq,) = add(driver, event("a"))
    claim(driver, "A", now=0.0)
    assert driver.run(ops.ack([seq], now=LEASE * 10)) == 1
    assert one(driver, seq).state is EventState.DONE
    assert claim(driver, "B", now=LEASE * 20) == []


# ---- fail, release, dead letter, retry ------------------------------------------------------


def test_fail_counts_an_attempt_and_holds_the_event(driver: Driver) -> None:
    seqs = add(driver, event("a"), event("b"))
    claim(driver, "A", now=10.0)
    assert driver.run(ops.fail(seqs, "A", next_attempt_at=500.0, error="503 unavailable")) == 2

    record = one(driver, seqs[0])
    assert record.state is EventState.PENDING
    assert record.attempts == 1
    assert record.next_attempt_at == 500.0
    assert record.last_error == "503 unavailable"
    assert record.lease_owner is None
    assert record.lease_expires_at is None

    assert claim(driver, "B", now=499.9) == []
    again = claim(driver, "B", now=500.0)
    assert [e.seq for e in again] == seqs
    assert [e.attempts for e in again] == [1, 1]

    assert driver.run(ops.fail(seqs, "B", next_attempt_at=900.0, error="timeout")) == 2
    record = one(driver, seqs[1])
    assert (record.attempts, record.last_error) == (2, "timeout")


def test_fail_by_another_owner_changes_nothing(driver: Driver) -> None:
    (seq,) = add(driver, event("a"))
    claim(driver, "A", now=10.0)
    assert driver.run(ops.fail([seq], "B", next_attempt_at=500.0, error="x")) == 0
    record = one(driver, seq)
    assert (record.state, record.attempts, record.lease_owner) == (EventState.LEASED, 0, "A")


def test_release_gives_events_back_without_an_attempt(driver: Driver) -> None:
    seqs = add(driver, event("a"), event("b"))
    claim(driver, "A", now=10.0)
    assert driver.run(ops.release(seqs, "B")) == 0
    assert driver.run(ops.release(seqs, "A")) == 2
    record = one(driver, seqs[0])
    assert (record.state, record.attempts, record.lease_owner) == (EventState.PENDING, 0, None)
    assert [e.seq for e in claim(driver, "B", now=10.0)] == seqs

    assert driver.run(ops.release(seqs, "B", next_attempt_at=50.0, error="401 paused")) == 2
    record = one(driver, seqs[1])
    assert (record.attempts, record.last_error, record.next_attempt_at) == (0, "401 paused", 50.0)
    assert claim(driver, "A", now=49.0) == []
    assert len(claim(driver, "A", now=50.0)) == 2


def test_dead_letter_keeps_a_reason_per_event(driver: Driver) -> None:
    seqs = add(driver, event("a"), event("b"), event("c"))
    claim(driver, "A", now=10.0)
    reasons = {seqs[0]: "422: name is required", seqs[1]: "413: too large"}
    driver.run(ops.dead_letter(reasons, now=20.0))

    for seq, reason in reasons.items():
        record = one(driver, seq)
        assert record.state is EventState.DEAD
        assert record.last_error == reason
        assert record.done_at == 20.0
        assert record.lease_owner is None
    assert one(driver, seqs[2]).state is EventState.LEASED
    stats = driver.stats()
    assert (stats.dead, stats.leased) == (2, 1)
    # Dead events are never claimed again, even after every lease ran out.
    assert [e.seq for e in claim(driver, "B", now=10_000.0)] == [seqs[2]]


def test_retry_dead_by_seq_and_all_resets_attempts(driver: Driver) -> None:
    seqs = add(driver, event("a"), event("b"), event("c"))
    claim(driver, "A", now=10.0)
    driver.run(ops.fail(seqs, "A", next_attempt_at=20.0, error="503"))
    claim(driver, "A", now=20.0)
    driver.run(ops.dead_letter({s: f"refused {s}" for s in seqs}, now=30.0))
    assert one(driver, seqs[0]).attempts == 1

    assert driver.run(ops.retry_dead([seqs[0]])) == 1
    record = one(driver, seqs[0])
    assert record.state is EventState.PENDING
    assert (record.attempts, record.next_attempt_at, record.done_at) == (0, 0.0, None)
    assert one(driver, seqs[1]).state is EventState.DEAD

    assert driver.run(ops.retry_dead(None)) == 2
    assert driver.stats().dead == 0
    claimed = claim(driver, "B", now=40.0)
    assert [e.seq for e in claimed] == seqs
    assert [e.attempts for e in claimed] == [0, 0, 0]
    assert driver.run(ops.retry_dead(None)) == 0


# ---- inspection ---------------------------------------------------------------------------


def test_stats_counts_states_counters_and_meta(driver: Driver) -> None:
    seqs = add(
        driver,
        event("a", at=50.0),
        event("b", at=60.0),
        event("c", at=70.0),
        event("d", at=80.0),
        event("e", at=90.0),
    )
    claim(driver, "A", now=100.0, limit=3)  # a, b, c leased
    driver.run(ops.ack([seqs[0]], now=101.0))  # a done
    driver.run(ops.dead_letter({seqs[1]: "422"}, now=101.0))  # b dead
    driver.run(ops.add_counters({"dropped:spool_full": 2, "refused:missing_name": 1}))
    driver.run(ops.add_counters({"dropped:spool_full": 3}))
    driver.run(ops.set_meta({"note": "set by an operator", "gone": "soon"}))
    driver.run(ops.set_meta({"gone": None}))

    stats = driver.stats()
    assert (stats.pending, stats.leased, stats.done, stats.dead) == (2, 1, 1, 1)
    assert stats.superseded == 0
    assert stats.dropped == {"spool_full": 5}
    assert stats.refused == {"missing_name": 1}
    assert (stats.dropped_total, stats.refused_total) == (5, 1)
    assert stats.oldest_pending_at == 70.0  # c (leased) is the oldest not yet delivered
    assert stats.meta["note"] == "set by an operator"
    assert "gone" not in stats.meta
    assert stats.meta[MetaKey.LAST_SUCCESS_AT] == repr(101.0)  # recorded by the ack
    assert stats.file_bytes > 0


def test_stats_of_an_empty_spool(driver: Driver) -> None:
    stats = driver.stats()
    assert (stats.pending, stats.leased, stats.done, stats.dead, stats.superseded) == (0,) * 5
    assert stats.oldest_pending_at is None
    assert (stats.dropped, stats.refused, stats.meta) == ({}, {}, {})


def test_stuck_lists_dead_retried_old_and_expired(driver: Driver) -> None:
    dead, retried, old, expired, fresh, done = add(
        driver,
        event("dead", at=900.0),
        event("retried", at=900.0),
        event("old", at=10.0),
        event("expired", at=900.0),
        event("fresh", at=900.0),
        event("done", at=10.0),
    )
    claim(driver, "A", now=1000.0)
    driver.run(ops.dead_letter({dead: "422"}, now=1000.0))
    driver.run(ops.ack([done], now=1000.0))
    for attempt in range(3):
        driver.run(ops.fail([retried], "A", next_attempt_at=0.0, error=f"503 #{attempt}"))
        assert [e.seq for e in claim(driver, "A", now=1000.0 + attempt)] == [retried]
    assert driver.run(ops.release([retried, old, fresh], "A")) == 3
    # "expired" stays leased; its lease ran out at 1000 + LEASE.

    now = 1000.0 + LEASE + 1
    stuck = driver.run(ops.stuck(3, pending_before=500.0, now=now, limit=100), write=False)
    assert [r.seq for r in stuck] == [dead, retried, old, expired]
    by_seq = {r.seq: r for r in stuck}
    assert by_seq[dead].last_error == "422"
    assert by_seq[retried].attempts == 3
    assert by_seq[retried].last_error == "503 #2"

    # A stricter filter: only dead and leased-past-expiry are left.
    strict = driver.run(ops.stuck(99, pending_before=0.0, now=now, limit=100), write=False)
    assert [r.seq for r in strict] == [dead, expired]
    # Before the lease runs out, the leased event is not stuck.
    early = driver.run(ops.stuck(99, pending_before=0.0, now=1001.0, limit=100), write=False)
    assert [r.seq for r in early] == [dead]
    assert len(driver.run(ops.stuck(3, 500.0, now, limit=2), write=False)) == 2


def test_find_by_seq_and_by_span_id(driver: Driver) -> None:
    start, end, other = add(driver, event("span-1"), event("span-1", END), event("span-2"))
    (by_seq,) = driver.run(ops.find(str(end)), write=False)
    assert (by_seq.seq, by_seq.span_id, by_seq.kind) == (end, "span-1", END)
    assert by_seq.payload == payload("span-1", END)
    assert by_seq.state is EventState.PENDING

    both = driver.run(ops.find("span-1"), write=False)
    assert [(r.seq, r.kind) for r in both] == [(start, START), (end, END)]
    assert [r.seq for r in driver.run(ops.find("span-2"), write=False)] == [other]
    assert driver.run(ops.find("no-such-span"), write=False) == []
    assert driver.run(ops.find("987654"), write=False) == []


@pytest.mark.parametrize("ident", ["99999999999999999999", "\u00b2"])
def test_find_accepts_any_span_id(driver: Driver, ident: str) -> None:
    """Span ids are free text; one that looks like a number must not crash ``find``.

    BUG (spool/ops.py, find): ``ident.isdigit()`` is true for "99999999999999999999" (over
    SQLite's 64-bit INTEGER: OverflowError from sqlite3) and for "²" (``int("²")`` raises
    ValueError). ``spool-ship show <span id>`` crashes on such ids instead of finding the span.
    """
    (seq,) = add(driver, event(ident))
    found = driver.run(ops.find(ident), write=False)
    assert [r.seq for r in found] == [seq]


def test_export_page_pages_through_one_state(driver: Driver) -> None:
    seqs = add(driver, *(event(f"s{i}") for i in range(25)))
    claim(driver, "A", now=1.0, limit=5)
    driver.run(ops.ack(seqs[:5], now=2.0))

    pages: list[list[int]] = []
    after = 0
    while page := driver.run(ops.export_page([EventState.PENDING], after, 7), write=False):
        pages.append([r.seq for r in page])
        after = page[-1].seq
    assert [len(p) for p in pages] == [7, 7, 6]
    assert [s for p in pages for s in p] == seqs[5:]

    done = driver.run(ops.export_page([EventState.DONE], 0, 100), write=False)
    assert [r.seq for r in done] == seqs[:5]
    assert all(r.outcome is Outcome.SHIPPED for r in done)
    both = driver.run(
        ops.export_page([EventState.DONE, EventState.PENDING], seqs[3], 100), write=False
    )
    assert [r.seq for r in both] == seqs[4:]


def test_spool_export_iterates_every_page(spool: Spool) -> None:
    assert spool.append([event(f"s{i}") for i in range(23)])
    exported = list(spool.export([EventState.PENDING], page=5))
    assert [r.span_id for r in exported] == [f"s{i}" for i in range(23)]


# ---- retention ----------------------------------------------------------------------------


def test_prune_done_respects_the_cutoff_and_the_limit(driver: Driver) -> None:
    seqs = add(driver, *(event(f"s{i}") for i in range(6)))
    claim(driver, "A", now=1.0)
    driver.run(ops.ack(seqs[0:2], now=100.0))
    driver.run(ops.ack(seqs[2:4], now=200.0))
    driver.run(ops.dead_letter({seqs[4]: "422"}, now=50.0))
    # seqs[5] stays leased.

    assert driver.run(ops.prune_done(before=100.0, limit=100)) == 0  # strictly before
    assert driver.run(ops.prune_done(before=150.0, limit=1)) == 1
    assert driver.run(ops.prune_done(before=150.0, limit=100)) == 1
    remaining = driver.run(ops.export_page(list(EventState), 0, 100), write=False)
    assert [r.seq for r in remaining] == seqs[2:]
    assert driver.run(ops.prune_done(before=10_000.0, limit=100)) == 2
    remaining = driver.run(ops.export_page(list(EventState), 0, 100), write=False)
    # Dead and leased rows are never pruned.
    assert [(r.seq, r.state) for r in remaining] == [
        (seqs[4], EventState.DEAD),
        (seqs[5], EventState.LEASED),
    ]


def test_purge_deletes_only_done_and_dead_before_the_cutoff(driver: Driver) -> None:
    seqs = add(driver, *(event(f"s{i}", at=10.0) for i in range(6)))
    claim(driver, "A", now=1.0, limit=4)
    driver.run(ops.ack([seqs[0]], now=100.0))
    driver.run(ops.ack([seqs[1]], now=300.0))
    driver.run(ops.dead_letter({seqs[2]: "422"}, now=100.0))
    # seqs[3] leased; seqs[4], seqs[5] pending (enqueued at 10, before every cutoff below).

    with pytest.raises(ValueError, match="only done and dead"):
        driver.run(ops.purge([EventState.PENDING], before=1e9))
    with pytest.raises(ValueError, match="only done and dead"):
        driver.run(ops.purge([EventState.DONE, EventState.LEASED], before=1e9))
    assert len(driver.run(ops.export_page(list(EventState), 0, 100), write=False)) == 6

    assert driver.run(ops.purge([EventState.DEAD], before=200.0)) == 1
    assert driver.run(ops.purge([EventState.DONE], before=200.0)) == 1
    assert driver.run(ops.purge([EventState.DONE, EventState.DEAD], before=1e9)) == 1
    remaining = driver.run(ops.export_page(list(EventState), 0, 100), write=False)
    assert [(r.seq, r.state) for r in remaining] == [
        (seqs[3], EventState.LEASED),
        (seqs[4], EventState.PENDING),
        (seqs[5], EventState.PENDING),
    ]


# ---- span order ---------------------------------------------------------------------------


def test_a_pending_start_is_superseded_by_its_pending_end(driver: Driver) -> None:
    start, other, end = add(driver, event("s1"), event("s2"), event("s1", END))
    claimed = claim(driver, "A", now=10.0)
    assert names(claimed) == [("s2", "start"), ("s1", "end")]
    assert [e.seq for e in claimed] == [other, end]
    record = one(driver, start)
    assert record.state is EventState.DONE
    assert record.outcome is Outcome.SUPERSEDED
    assert record.done_at == 10.0
    assert driver.stats().superseded == 1
    # Superseding is counted once, not on every claim.
    assert claim(driver, "A", now=11.0) == []
    assert driver.stats().superseded == 1


def test_an_end_waits_while_its_start_is_leased(driver: Driver) -> None:
    (start,) = add(driver, event("s1"))
    assert [e.seq for e in claim(driver, "A", now=10.0)] == [start]
    (end,) = add(driver, event("s1", END))

    assert claim(driver, "B", now=11.0) == []
    assert one(driver, end).state is EventState.PENDING

    assert driver.run(ops.ack([start], now=12.0)) == 1
    assert [e.seq for e in claim(driver, "B", now=13.0)] == [end]
    assert one(driver, start).outcome is Outcome.SHIPPED
    assert driver.stats().superseded == 0


def test_an_expired_start_is_superseded_when_its_end_is_waiting(driver: Driver) -> None:
    (start,) = add(driver, event("s1"))
    claim(driver, "A", now=10.0)
    (end,) = add(driver, event("s1", END))
    assert [e.seq for e in claim(driver, "B", now=10.0 + LEASE)] == [end]
    assert one(driver, start).outcome is Outcome.SUPERSEDED


def test_a_failed_start_is_superseded_by_an_end_that_arrived_meanwhile(driver: Driver) -> None:
    (start,) = add(driver, event("s1"))
    claim(driver, "A", now=10.0)
    (end,) = add(driver, event("s1", END))
    driver.run(ops.fail([start], "A", next_attempt_at=20.0, error="503"))
    assert [e.seq for e in claim(driver, "A", now=20.0)] == [end]
    assert one(driver, start).state is EventState.DONE
    assert one(driver, start).outcome is Outcome.SUPERSEDED


def test_a_start_appended_after_its_end_shipped_is_never_claimed(driver: Driver) -> None:
    (end,) = add(driver, event("s1", END))
    claim(driver, "A", now=10.0)
    driver.run(ops.ack([end], now=11.0))
    (late,) = add(driver, event("s1"))

    assert claim(driver, "A", now=12.0) == []
    record = one(driver, late)
    assert (record.state, record.outcome) == (EventState.DONE, Outcome.SUPERSEDED)
    assert driver.stats().superseded == 1


def test_span_identity_includes_the_trace(driver: Driver) -> None:
    add(driver, event("s1", trace_id="t1"), event("s1", END, trace_id="t2"))
    claimed = claim(driver, "A", now=10.0)
    assert [(e.trace_id, e.kind.value) for e in claimed] == [("t1", "start"), ("t2", "end")]
    assert driver.stats().superseded == 0


def test_a_start_is_not_superseded_by_a_dead_end(driver: Driver) -> None:
    (end,) = add(driver, event("s1", END))
    claim(driver, "A", now=10.0)
    driver.run(ops.dead_letter({end: "422"}, now=11.0))
    (start,) = add(driver, event("s1"))
    assert [e.seq for e in claim(driver, "A", now=12.0)] == [start]


def test_a_shipped_end_supersedes_its_dead_start_which_a_retry_then_leaves_alone(
    driver: Driver,
) -> None:
    """The start was refused and dead-lettered, the end delivered the whole span: retrying
    the start, after the end is pruned, must not send it after its end."""
    (start,) = add(driver, event("s1"))
    claim(driver, "A", now=10.0)
    driver.run(ops.dead_letter({start: "409 refused"}, now=11.0))
    (end,) = add(driver, event("s1", END))
    assert [e.seq for e in claim(driver, "A", now=12.0)] == [end]

    assert driver.run(ops.ack([end], now=13.0)) == 1

    record = one(driver, start)
    assert (record.state, record.outcome, record.done_at) == (
        EventState.DONE,
        Outcome.SUPERSEDED,
        13.0,
    )
    assert driver.stats().superseded == 1
    assert driver.run(ops.retry_dead(None)) == 0
    assert driver.run(ops.prune_done(before=100.0, limit=10)) == 2
    assert claim(driver, "A", now=14.0) == []


def test_a_start_spooled_after_its_end_was_claimed_is_superseded_when_the_end_ships(
    driver: Driver,
) -> None:
    (end,) = add(driver, event("s1", END))
    assert [e.seq for e in claim(driver, "A", now=10.0)] == [end]
    (start,) = add(driver, event("s1"))  # another process, late

    driver.run(ops.ack([end], now=11.0))

    assert one(driver, start).outcome is Outcome.SUPERSEDED
    driver.run(ops.prune_done(before=100.0, limit=10))
    assert claim(driver, "A", now=12.0) == []


# ---- what the shipper uses while it holds a batch ---------------------------------------------


def test_retry_later_counts_the_attempt_and_keeps_the_lease(driver: Driver) -> None:
    seqs = add(driver, event("a"), event("b"))
    claim(driver, "A", now=100.0)
    held = driver.run(
        ops.retry_later(
            seqs, "A", next_attempt_at=500.0, error="503 busy", lease_seconds=LEASE, now=101.0
        )
    )
    assert held == 2
    record = one(driver, seqs[0])
    assert (record.state, record.lease_owner) == (EventState.LEASED, "A")
    assert (record.attempts, record.last_error) == (1, "503 busy")
    assert (record.next_attempt_at, record.lease_expires_at) == (500.0, 500.0 + LEASE)
    assert driver.stats().meta[MetaKey.LAST_ERROR] == "503 busy"
    # The lease covers the wait: nobody else takes the batch, even after next_attempt_at.
    assert claim(driver, "B", now=500.0 + LEASE - 1) == []
    # A shipper that died during the wait leaves the events to others after it.
    assert [e.attempts for e in claim(driver, "B", now=500.0 + LEASE)] == [1, 1]
    assert driver.run(ops.retry_later(seqs, "A", next_attempt_at=0, error="x",
                                      lease_seconds=1, now=1)) == 0  # fmt: skip


def test_renew_extends_only_the_owners_lease(driver: Driver) -> None:
    seqs = add(driver, event("a"))
    claim(driver, "A", now=0.0)
    assert driver.run(ops.renew(seqs, "B", lease_expires_at=100.0)) == 0
    assert driver.run(ops.renew(seqs, "A", lease_expires_at=100.0)) == 1
    assert claim(driver, "B", now=99.0) == []
    assert [e.seq for e in claim(driver, "B", now=100.0)] == seqs


def test_outstanding_reports_pending_leased_and_the_next_due_time(driver: Driver) -> None:
    assert driver.run(ops.outstanding(), write=False) == (0, 0, None)
    seqs = add(driver, event("a"), event("b"), event("c"), event("d"))
    claim(driver, "A", now=10.0, limit=3)
    driver.run(ops.fail([seqs[0]], "A", next_attempt_at=70.0, error="503"))
    driver.run(ops.ack([seqs[1]], now=11.0))
    # a: pending, due at 70; b: done; c: leased; d: pending, due now (0).
    assert driver.run(ops.outstanding(), write=False) == (2, 1, 0.0)
    driver.run(ops.ack([seqs[3]], now=12.0))
    assert driver.run(ops.outstanding(), write=False) == (1, 1, 70.0)


def test_data_version_changes_when_another_connection_commits(spool: Spool) -> None:
    before = spool.data_version()
    assert spool.data_version() == before
    with Spool.open(spool.config) as other:
        other.run(ops.set_meta({"k": "v"}))
    assert spool.data_version() != before
