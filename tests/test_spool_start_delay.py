"""The claim's start delay and byte cap, on real spool files with injected times.

A start is claimable only once it is ``start_delay`` old: a span that ends sooner ships once
(its end supersedes the start), a longer one still shows up in progress, and a crashed agent's
starts (no end ever) still arrive. ``max_bytes`` caps the payload bytes of one claim.
"""

from __future__ import annotations

import json

from spool import EventKind, EventState, NewEvent, Outcome, Spool, ops

START, END = EventKind.START, EventKind.END
LEASE = 30.0
DELAY = 5.0


def event(span_id: str, kind: EventKind, at: float, size: int = 0) -> NewEvent:
    body = {"id": span_id, "trace_id": "t", "kind": kind.value, "pad": "x" * size}
    return NewEvent(span_id, "t", kind, json.dumps(body).encode(), enqueued_at=at)


def claim(spool: Spool, now: float, *, delay: float = DELAY, limit: int = 50) -> list[str]:
    claimed = spool.run(ops.claim("A", limit, LEASE, now, start_delay=delay))
    return [f"{e.span_id}:{e.kind.value}" for e in claimed]


def test_a_young_start_waits_and_ships_once_old_enough(spool: Spool) -> None:
    assert spool.append([event("long", START, at=100.0)])
    assert claim(spool, now=104.9) == []
    assert claim(spool, now=105.0) == ["long:start"]


def test_a_span_that_ends_within_the_delay_ships_only_its_end(spool: Spool) -> None:
    assert spool.append([event("quick", START, at=100.0), event("quick", END, at=101.5)])
    assert claim(spool, now=102.0) == ["quick:end"]
    assert claim(spool, now=120.0) == []  # the end still leased, the start long since due
    (start,) = [r for r in spool.run(ops.find("quick"), write=False) if r.kind is START]
    assert start.state is EventState.DONE
    assert start.outcome is Outcome.SUPERSEDED
    assert spool.stats().superseded == 1


def test_a_young_start_does_not_hold_back_later_events(spool: Spool) -> None:
    assert spool.append(
        [event("a", START, at=100.0), event("b", END, at=100.5), event("c", START, at=90.0)]
    )
    # c is older than the delay though spooled later; a is not.
    assert claim(spool, now=101.0) == ["b:end", "c:start"]
    assert claim(spool, now=105.0) == ["a:start"]


def test_a_crashed_agents_starts_still_arrive(spool: Spool) -> None:
    """No end will ever come: every start ships once it is old enough."""
    assert spool.append([event(f"s{i}", START, at=100.0 + i) for i in range(3)])
    assert claim(spool, now=106.0) == ["s0:start", "s1:start"]
    assert claim(spool, now=107.0) == ["s2:start"]


def test_without_a_delay_starts_ship_at_once_whatever_their_clock(spool: Spool) -> None:
    assert spool.append([event("future", START, at=1_000.0)])
    assert claim(spool, now=100.0, delay=0.0) == ["future:start"]


def test_outstanding_is_due_when_the_youngest_start_matures(spool: Spool) -> None:
    assert spool.append([event("a", START, at=100.0)])
    assert spool.run(ops.outstanding(start_delay=DELAY), write=False) == (1, 0, 105.0)
    assert spool.run(ops.outstanding(), write=False) == (1, 0, 0.0)


def test_outstanding_due_keeps_a_later_backoff(spool: Spool) -> None:
    assert spool.append([event("a", START, at=100.0)])
    (seq,) = [e.seq for e in spool.run(ops.claim("A", 1, LEASE, 200.0, start_delay=DELAY))]
    spool.run(ops.fail([seq], "A", next_attempt_at=300.0, error="503"))
    assert spool.run(ops.outstanding(start_delay=DELAY), write=False) == (1, 0, 300.0)


# ---- the byte cap ------------------------------------------------------------------------------


def sizes(spool: Spool, now: float, max_bytes: int, limit: int = 50) -> list[int]:
    claimed = spool.run(ops.claim("A", limit, LEASE, now, max_bytes=max_bytes))
    return [len(e.payload) for e in claimed]


def test_a_claim_stops_before_the_byte_cap(spool: Spool) -> None:
    assert spool.append([event(f"s{i}", END, at=1.0, size=1000) for i in range(10)])
    one = len(event("s0", END, at=1.0, size=1000).payload)
    assert sizes(spool, 2.0, max_bytes=3 * one + one // 2) == [one] * 3
    assert sizes(spool, 2.0, max_bytes=3 * one) == [one] * 3  # exactly at the cap fits
    assert sizes(spool, 2.0, max_bytes=100 * one, limit=2) == [one] * 2  # the count still caps
    assert len(sizes(spool, 2.0, max_bytes=100 * one)) == 2  # the rest


def test_the_oldest_event_is_claimed_even_when_larger_than_the_cap(spool: Spool) -> None:
    assert spool.append([event("big", END, at=1.0, size=5000), event("small", END, at=1.0)])
    (alone,) = sizes(spool, 2.0, max_bytes=1024)
    assert alone > 5000
    assert sizes(spool, 2.0, max_bytes=1024) == [len(event("small", END, at=1.0).payload)]


def test_the_byte_cap_keeps_span_order_and_the_start_delay(spool: Spool) -> None:
    assert spool.append(
        [event("a", START, at=100.0, size=100), event("b", END, at=100.0, size=100)]
    )
    claimed = spool.run(ops.claim("A", 50, LEASE, 101.0, start_delay=DELAY, max_bytes=10_000))
    assert [e.span_id for e in claimed] == ["b"]


def test_a_start_from_after_now_counts_as_old(spool: Spool) -> None:
    """Written before the wall clock stepped back by more than the delay: held, it would wait
    out the step too."""
    assert spool.append([event("stepped", START, at=500.0)])
    assert claim(spool, now=100.0) == ["stepped:start"]


def test_a_start_spooled_just_after_the_claims_clock_reading_still_waits(spool: Spool) -> None:
    """Regression (bench/ship.py --latency, steady agent: 1.11 to 1.14 items per span, the
    starts of 0.1 s spans shipped): the shipper reads its clock, then its transaction begins;
    a start the agent's writer committed in between is stamped a little after that ``now``,
    and counted as from before a clock step, it shipped at once."""
    assert spool.append([event("quick", START, at=100.002)])
    assert claim(spool, now=100.0) == []
    assert claim(spool, now=105.001) == []
    assert claim(spool, now=105.002) == ["quick:start"]
    # A step back of less than the delay costs at most one more delay.
    assert spool.append([event("stepped", START, at=104.0)])
    assert claim(spool, now=101.0) == []
    assert claim(spool, now=109.0) == ["stepped:start"]
