"""The spool proved against a model (issue 6, part A), the way storage systems are tested.

A hypothesis ``RuleBasedStateMachine`` drives a real spool file (``Spool.open`` on a fresh
temporary directory per example) through every operation of :mod:`spool.ops` with an injected
clock, and keeps a plain in-memory model of every event: state, attempts, owner, lease expiry,
``next_attempt_at``, ``last_error``, ``done_at``, outcome. The model is written from the
operations' contract, in Python, independently of the SQL:

- ``claim`` is three steps in one transaction: expired leases go back to pending; within the
  first ``max(4 * limit, 200)`` pending events by seq, a start whose span's end is spooled
  (pending, leased or done) is superseded; then up to ``limit`` ready events are leased, oldest
  first, skipping a start whose end is spooled and an end whose start is leased; last, every
  pending start of a span whose end was just claimed is superseded, wherever it lies.
- ``ack`` marks pending or leased events done (shipped) whoever holds them, and notes the
  success only when it acked something; ``fail``, ``retry_later``, ``release`` and ``renew``
  touch only events leased to the caller; ``dead_letter`` and the others return the number of
  rows they changed.
- Beyond the table, the promise the endpoint sees: a start the spool held while its span's end
  was shipped is never claimed afterwards.

After every step the whole table, the stats, ``outstanding()`` and the counters must equal the
model; every claim is also checked without the model (nothing leased twice, span order).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import hypothesis
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
)

from spool import (
    ClaimedEvent,
    EventKind,
    EventRecord,
    EventState,
    MetaKey,
    NewEvent,
    Outcome,
    Spool,
    SpoolConfig,
    ops,
)

P, L, D, X = EventState.PENDING, EventState.LEASED, EventState.DONE, EventState.DEAD
START, END = EventKind.START, EventKind.END

OWNERS = ("shipper-a", "shipper-b", "shipper-c")
# (trace_id, span_id): "s1" lives in two traces, so span order must match on both ids.
SPANS = (("t1", "s1"), ("t1", "s2"), ("t2", "s1"), ("t2", "s3"))
LIMITS = (1, 2, 3, 10, 60, 250)
LEASES = (5.0, 30.0, 60.0)
DELAYS = (-1.0, 0.0, 1.0, 30.0, 1000.0)
STEPS = (0.5, 1.0, 5.0, 30.0, 61.0, 1000.0)
NO_SUCH_SEQ = 10**9
START_CLOCK = 1_000.0


@dataclass(slots=True)
class ModelEvent:
    """What the spool must hold for one event."""

    seq: int
    span_id: str
    trace_id: str
    kind: EventKind
    payload: bytes
    enqueued_at: float
    appended_step: int
    state: EventState = P
    attempts: int = 0
    next_attempt_at: float = 0.0
    lease_owner: str | None = None
    lease_expires_at: float | None = None
    last_error: str | None = None
    done_at: float | None = None
    outcome: Outcome | None = None

    @property
    def key(self) -> tuple[str, str]:
        return self.trace_id, self.span_id

    def unlease(self) -> None:
        self.lease_owner = None
        self.lease_expires_at = None


@dataclass(slots=True)
class SpoolModel:
    """The spool's contract as plain Python over a dict of events."""

    events: dict[int, ModelEvent] = field(default_factory=dict)
    last_seq: int = 0
    superseded: int = 0
    meta: dict[str, str] = field(default_factory=dict)
    # Step at which an end of each span was acked as shipped (the endpoint has the whole span).
    shipped_ends: dict[tuple[str, str], list[int]] = field(default_factory=dict)

    def ordered(self, state: EventState | None = None) -> list[ModelEvent]:
        return [e for _, e in sorted(self.events.items()) if state is None or e.state is state]

    def append(self, events: list[NewEvent], step: int) -> None:
        for new in events:
            self.last_seq += 1  # AUTOINCREMENT: never reused, even after deletes
            assert new.enqueued_at is not None
            self.events[self.last_seq] = ModelEvent(
                self.last_seq,
                new.span_id,
                new.trace_id,
                new.kind,
                new.payload,
                new.enqueued_at,
                step,
            )

    def _keys(self, kind: EventKind, states: tuple[EventState, ...]) -> set[tuple[str, str]]:
        return {e.key for e in self.events.values() if e.kind is kind and e.state in states}

    def claim(self, owner: str, limit: int, lease: float, now: float) -> list[int]:
        for e in self.events.values():
            if e.state is L and e.lease_expires_at is not None and e.lease_expires_at <= now:
                e.state = P
                e.unlease()
        ends_spooled = self._keys(END, (P, L, D))
        window = self.ordered(P)[: max(4 * limit, 200)]
        superseded = [e for e in window if e.kind is START and e.key in ends_spooled]
        for e in superseded:
            e.state, e.outcome, e.done_at = D, Outcome.SUPERSEDED, now
            e.unlease()
        self.superseded += len(superseded)
        starts_leased = self._keys(START, (L,))
        ready = [
            e
            for e in self.ordered(P)
            if e.next_attempt_at <= now
            and not (e.kind is START and e.key in ends_spooled)
            and not (e.kind is END and e.key in starts_leased)
        ][:limit]
        for e in ready:
            e.state, e.lease_owner, e.lease_expires_at = L, owner, now + lease
        claimed_ends = {e.key for e in ready if e.kind is END}
        late = [e for e in self.ordered(P) if e.kind is START and e.key in claimed_ends]
        for e in late:
            e.state, e.outcome, e.done_at = D, Outcome.SUPERSEDED, now
            e.unlease()
        self.superseded += len(late)
        return [e.seq for e in ready]

    def ack(self, seqs: list[int], now: float, step: int) -> int:
        acked = 0
        for seq in set(seqs):
            e = self.events.get(seq)
            if e is not None and e.state in (P, L):
                e.state, e.outcome, e.done_at = D, Outcome.SHIPPED, now
                e.unlease()
                acked += 1
                if e.kind is END:
                    self.shipped_ends.setdefault(e.key, []).append(step)
        if acked:  # a success is noted only when something was delivered
            self.meta[MetaKey.LAST_SUCCESS_AT.value] = repr(now)
            self.meta.pop(MetaKey.BLOCKED.value, None)
            # A delivered end supersedes its span's starts still pending or dead.
            shipped = {
                e.key
                for e in (self.events.get(seq) for seq in set(seqs))
                if e is not None and e.kind is END and e.state is D
            }
            late = [
                e
                for e in self.ordered()
                if e.kind is START and e.key in shipped and e.state in (P, X)
            ]
            for e in late:
                e.state, e.outcome, e.done_at = D, Outcome.SUPERSEDED, now
            self.superseded += len(late)
        return acked

    def held(self, seqs: list[int], owner: str) -> list[ModelEvent]:
        found = (self.events.get(seq) for seq in set(seqs))
        return [e for e in found if e is not None and e.state is L and e.lease_owner == owner]

    def stuck(self, min_attempts: int, pending_before: float, now: float, limit: int) -> list[int]:
        return [
            e.seq
            for e in self.ordered()
            if e.state is X
            or (e.state in (P, L) and e.attempts >= min_attempts)
            or (e.state is P and e.enqueued_at < pending_before)
            or (e.state is L and e.lease_expires_at is not None and e.lease_expires_at <= now)
        ][:limit]


def record_of(event: ModelEvent) -> EventRecord:
    """The row the spool must export for ``event``."""
    return EventRecord(
        seq=event.seq,
        span_id=event.span_id,
        trace_id=event.trace_id,
        kind=event.kind,
        state=event.state,
        attempts=event.attempts,
        enqueued_at=event.enqueued_at,
        next_attempt_at=event.next_attempt_at,
        lease_owner=event.lease_owner,
        lease_expires_at=event.lease_expires_at,
        last_error=event.last_error,
        done_at=event.done_at,
        outcome=event.outcome,
        payload=event.payload,
    )


def note(what: str) -> None:
    """Count a situation for ``--hypothesis-show-statistics`` (how often the machine got there)."""
    if hypothesis.currently_in_test_context():
        hypothesis.event(what)


def pick(data: st.DataObject, candidates: list[int], *, stale: bool = True) -> list[int]:
    """All of ``candidates`` (a shipper acts on whole batches) or some of them, and sometimes
    seqs a well-behaved caller would not pass (stale or unknown), as a lagging shipper or an
    operator might."""
    chosen = list(candidates)
    if candidates and not data.draw(st.booleans()):
        chosen = data.draw(st.lists(st.sampled_from(candidates), unique=True))
    if stale and data.draw(st.booleans()):
        chosen.append(data.draw(st.sampled_from([NO_SUCH_SEQ, *range(1, 40)])))
    return chosen


class SpoolMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="spool-model-"))
        self.config = SpoolConfig(path=self.dir / "spool.db")
        self.spool = Spool.open(self.config)
        self.model = SpoolModel()
        self.clock = START_CLOCK
        self.step = 0
        self.payloads = 0
        self.fresh = 0

    def teardown(self) -> None:
        self.spool.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @initialize(backlog=st.sampled_from([0, 260]), wait=st.sampled_from([30.0, 5000.0]))
    def a_backlog_in_backoff(self, backlog: int, wait: float) -> None:
        """Optionally start behind a backlog of events of other spans that failed and wait
        for their next attempt (an outage), so that claims see more pending events than their
        supersede window."""
        if not backlog:
            return
        self.do_append(
            [
                NewEvent(f"b{i}", "t0", START, b'{"backlog":%d}' % i, enqueued_at=self.clock)
                for i in range(backlog)
            ]
        )
        held = self.do_claim(OWNERS[0], limit=1000, lease=60.0)
        assert self.do_fail([e.seq for e in held], OWNERS[0], self.clock + wait) == backlog

    # ---- producers ---------------------------------------------------------------------------
    def _events(self, data: st.DataObject, n: int) -> list[NewEvent]:
        """``n`` span lives, each a start, an end, or a start then its end, of a fresh span or
        of one from a small pool, so pairs, strays and duplicates all happen."""
        events = []
        for _ in range(n):
            trace_id, span_id = data.draw(st.sampled_from(SPANS))
            if data.draw(st.booleans()):  # most spans live once: a fresh one
                self.fresh += 1
                span_id = f"u{self.fresh}"
            for kind in data.draw(st.sampled_from([(START,), (END,), (START, END)])):
                self.payloads += 1
                payload = f'{{"n":{self.payloads},"id":"{span_id}","k":"{kind.value}"}}'.encode()
                events.append(NewEvent(span_id, trace_id, kind, payload, enqueued_at=self.clock))
        return events

    def do_append(self, events: list[NewEvent]) -> None:
        self.step += 1
        assert self.spool.append(events) is True
        self.model.append(events, self.step)

    @rule(data=st.data(), n=st.integers(1, 4))
    def append(self, data: st.DataObject, n: int) -> None:
        self.do_append(self._events(data, n))

    @rule(data=st.data(), n=st.integers(20, 160))
    def append_burst(self, data: st.DataObject, n: int) -> None:
        """Enough events that claims see more than their supersede window of pending rows."""
        self.do_append(self._events(data, n))

    # ---- the shipper's operations -------------------------------------------------------------
    @rule(
        owner=st.sampled_from(OWNERS),
        limit=st.sampled_from(LIMITS),
        lease=st.sampled_from(LEASES),
    )
    def claim(self, owner: str, limit: int, lease: float) -> None:
        self.do_claim(owner, limit, lease)

    @rule(owner=st.sampled_from(OWNERS), limit=st.sampled_from(LIMITS))
    def ship(self, owner: str, limit: int) -> None:
        """A shipper's good day: claim a batch, the endpoint takes it, ack it all."""
        claimed = self.do_claim(owner, limit, 60.0)
        assert self.do_ack([e.seq for e in claimed]) == len(claimed)

    def do_claim(self, owner: str, limit: int, lease: float) -> list[ClaimedEvent]:
        self.step += 1
        now = self.clock
        before = {r.seq: r for r in self.spool.export(list(EventState))}
        claimed = self.spool.run(ops.claim(owner, limit=limit, lease_seconds=lease, now=now))
        after = {r.seq: r for r in self.spool.export(list(EventState))}
        self.check_claim(claimed, before, after, now)

        pending_before = len(self.model.ordered(P))
        superseded_before = self.model.superseded
        expected = self.model.claim(owner, limit, lease, now)
        assert [e.seq for e in claimed] == expected
        note("claim: leased some" if claimed else "claim: leased none")
        if self.model.superseded > superseded_before:
            note("claim: superseded a start")
        if pending_before > max(4 * limit, 200):
            note("claim: more pending than the supersede window")
        if any(e.kind is END for e in claimed):
            note("claim: leased an end")
        for event in claimed:
            m = self.model.events[event.seq]
            got = (event.span_id, event.trace_id, event.kind, event.payload, event.attempts)
            assert got == (m.span_id, m.trace_id, m.kind, m.payload, m.attempts)
            assert event.enqueued_at == m.enqueued_at
        # The span-order promise as the endpoint sees it: a start the spool held while its
        # span's end was shipped must never be claimed afterwards.
        for event in claimed:
            if event.kind is START:
                m = self.model.events[event.seq]
                later = [s for s in self.model.shipped_ends.get(m.key, []) if s > m.appended_step]
                assert not later, (
                    f"start seq={event.seq} of {m.key} claimed after its end was shipped "
                    f"(start appended at step {m.appended_step}, end shipped at {later})"
                )
        return claimed

    @staticmethod
    def check_claim(
        claimed: list[ClaimedEvent],
        before: dict[int, EventRecord],
        after: dict[int, EventRecord],
        now: float,
    ) -> None:
        """What a claim promises, checked against the table alone (no model)."""
        seqs = [e.seq for e in claimed]
        assert seqs == sorted(set(seqs)), "a claim returns each event once, oldest first"
        for seq in seqs:
            was = before[seq]
            expired = was.lease_expires_at is not None and was.lease_expires_at <= now
            assert was.state is P or (was.state is L and expired), (
                f"seq={seq} was {was.state.value}, leased to {was.lease_owner} until "
                f"{was.lease_expires_at} (now {now})"
            )
            assert was.next_attempt_at <= now
        for e in claimed:
            same = [r for r in after.values() if (r.trace_id, r.span_id) == (e.trace_id, e.span_id)]
            if e.kind is END:
                assert not [r for r in same if r.kind is START and r.state is L], (
                    f"end seq={e.seq} claimed while its start is leased"
                )
            else:
                assert not [r for r in same if r.kind is END and r.state in (P, L, D)], (
                    f"start seq={e.seq} claimed while its end is spooled"
                )

    @rule(data=st.data(), owner=st.sampled_from(OWNERS))
    def ack(self, data: st.DataObject, owner: str) -> None:
        self.do_ack(pick(data, [e.seq for e in self.model.ordered(L) if e.lease_owner == owner]))

    def do_ack(self, seqs: list[int]) -> int:
        self.step += 1
        acked = self.spool.run(ops.ack(seqs, now=self.clock))
        assert acked == self.model.ack(seqs, self.clock, self.step)
        return acked

    @rule(data=st.data(), owner=st.sampled_from(OWNERS), delay=st.sampled_from(DELAYS))
    def fail(self, data: st.DataObject, owner: str, delay: float) -> None:
        seqs = pick(data, [e.seq for e in self.model.ordered(L) if e.lease_owner == owner])
        self.do_fail(seqs, owner, self.clock + delay)

    def do_fail(self, seqs: list[int], owner: str, next_attempt_at: float) -> int:
        error = f"503 at {self.clock}"
        got = self.spool.run(ops.fail(seqs, owner, next_attempt_at=next_attempt_at, error=error))
        held = self.model.held(seqs, owner)
        for e in held:
            e.state, e.attempts = P, e.attempts + 1
            e.next_attempt_at, e.last_error = next_attempt_at, error
            e.unlease()
        assert got == len(held)
        return got

    @rule(
        data=st.data(),
        owner=st.sampled_from(OWNERS),
        delay=st.sampled_from(DELAYS),
        lease=st.sampled_from(LEASES),
    )
    def retry_later(self, data: st.DataObject, owner: str, delay: float, lease: float) -> None:
        seqs = pick(data, [e.seq for e in self.model.ordered(L) if e.lease_owner == owner])
        now, error = self.clock, f"timeout at {self.clock}"
        got = self.spool.run(
            ops.retry_later(
                seqs, owner, next_attempt_at=now + delay, error=error, lease_seconds=lease, now=now
            )
        )
        held = self.model.held(seqs, owner)
        for e in held:
            e.attempts += 1
            e.next_attempt_at, e.last_error = now + delay, error
            e.lease_expires_at = now + delay + lease
        assert got == len(held)
        self.model.meta[MetaKey.LAST_ERROR.value] = error
        self.model.meta[MetaKey.LAST_ERROR_AT.value] = repr(now)

    @rule(
        data=st.data(),
        owner=st.sampled_from(OWNERS),
        delay=st.none() | st.sampled_from(DELAYS),
        error=st.none() | st.just("stopping"),
    )
    def release(
        self, data: st.DataObject, owner: str, delay: float | None, error: str | None
    ) -> None:
        seqs = pick(data, [e.seq for e in self.model.ordered(L) if e.lease_owner == owner])
        next_at = None if delay is None else self.clock + delay
        got = self.spool.run(ops.release(seqs, owner, next_attempt_at=next_at, error=error))
        held = self.model.held(seqs, owner)
        for e in held:
            e.state = P
            e.next_attempt_at = e.next_attempt_at if next_at is None else next_at
            e.last_error = e.last_error if error is None else error
            e.unlease()
        assert got == len(held)

    @rule(data=st.data(), owner=st.sampled_from(OWNERS), lease=st.sampled_from(LEASES))
    def renew(self, data: st.DataObject, owner: str, lease: float) -> None:
        seqs = pick(data, [e.seq for e in self.model.ordered(L) if e.lease_owner == owner])
        got = self.spool.run(ops.renew(seqs, owner, self.clock + lease))
        held = self.model.held(seqs, owner)
        for e in held:
            e.lease_expires_at = self.clock + lease
        assert got == len(held)

    @rule(data=st.data())
    def dead_letter(self, data: st.DataObject) -> None:
        live = [e.seq for e in self.model.ordered() if e.state in (P, L)]
        seqs = pick(data, live)
        reasons = {seq: f"422 refused #{seq}" for seq in seqs}
        got = self.spool.run(ops.dead_letter(reasons, now=self.clock))
        moved = 0
        for seq, reason in reasons.items():
            e = self.model.events.get(seq)
            if e is not None and e.state in (P, L):
                e.state, e.last_error, e.done_at = X, reason, self.clock
                e.unlease()
                moved += 1
        assert got == moved

    @rule(data=st.data(), everything=st.booleans())
    def retry_dead(self, data: st.DataObject, everything: bool) -> None:
        dead = [e.seq for e in self.model.ordered(X)]
        seqs = None if everything else pick(data, dead)
        got = self.spool.run(ops.retry_dead(seqs))
        chosen = [e for e in self.model.ordered(X) if seqs is None or e.seq in seqs]
        for e in chosen:
            e.state, e.attempts, e.next_attempt_at, e.done_at = P, 0, 0.0, None
        assert got == len(chosen)

    # ---- housekeeping ----------------------------------------------------------------------
    @rule(
        age=st.sampled_from([-1.0, 0.0, 10.0, 100.0]),
        limit=st.sampled_from([1, 3, 10_000]),
    )
    def prune_done(self, age: float, limit: int) -> None:
        self.do_prune_done(self.clock - age, limit)

    def do_prune_done(self, before: float, limit: int) -> None:
        got = self.spool.run(ops.prune_done(before, limit))
        gone = [
            e.seq for e in self.model.ordered(D) if e.done_at is not None and e.done_at < before
        ][:limit]
        for seq in gone:
            del self.model.events[seq]
        assert got == len(gone)

    @rule(
        states=st.sampled_from([(D,), (X,), (D, X)]),
        age=st.sampled_from([-1.0, 0.0, 100.0]),
    )
    def purge(self, states: tuple[EventState, ...], age: float) -> None:
        before = self.clock - age
        got = self.spool.run(ops.purge(list(states), before))
        gone = [
            e.seq
            for e in self.model.ordered()
            if e.state in states
            and (e.done_at if e.done_at is not None else e.enqueued_at) < before
        ]
        for seq in gone:
            del self.model.events[seq]
        assert got == len(gone)

    @rule(step=st.sampled_from(STEPS))
    def advance_clock(self, step: float) -> None:
        self.clock += step

    @rule()
    def reopen(self) -> None:
        """Close (stopping this process's writer) and open the file again."""
        self.spool.close()
        self.spool = Spool.open(self.config)

    @rule(
        min_attempts=st.integers(1, 3),
        age=st.sampled_from([0.0, 30.0]),
        limit=st.sampled_from([3, 10_000]),
    )
    def stuck(self, min_attempts: int, age: float, limit: int) -> None:
        now = self.clock
        got = self.spool.run(ops.stuck(min_attempts, now - age, now, limit), write=False)
        assert [r.seq for r in got] == self.model.stuck(min_attempts, now - age, now, limit)

    # ---- after every step ------------------------------------------------------------------
    @invariant()
    def every_row_matches_the_model(self) -> None:
        rows = list(self.spool.export(list(EventState)))
        expected = [record_of(e) for e in self.model.ordered()]
        if rows != expected:
            assert [r.seq for r in rows] == [e.seq for e in expected], "events lost or invented"
            for got, want in zip(rows, expected, strict=True):
                assert got == want, f"seq={got.seq}: spool {got} != model {want}"

    @invariant()
    def stats_match_the_model(self) -> None:
        stats = self.spool.stats()
        counts = {state: len(self.model.ordered(state)) for state in EventState}
        assert (stats.pending, stats.leased, stats.done, stats.dead) == (
            counts[P],
            counts[L],
            counts[D],
            counts[X],
        )
        assert stats.superseded == self.model.superseded
        assert stats.dropped == {}
        assert stats.refused == {}
        live = [e for e in self.model.ordered() if e.state in (P, L)][:1000]
        assert stats.oldest_pending_at == min((e.enqueued_at for e in live), default=None)
        assert stats.meta == self.model.meta

    @invariant()
    def outstanding_matches_the_model(self) -> None:
        pending = self.model.ordered(P)
        due = min((e.next_attempt_at for e in pending), default=None)
        expected = (len(pending), len(self.model.ordered(L)), due)
        assert self.spool.run(ops.outstanding(), write=False) == expected

    @invariant()
    def a_span_never_has_start_and_end_leased_at_once(self) -> None:
        leased = self.model.ordered(L)
        starts = {e.key for e in leased if e.kind is START}
        ends = {e.key for e in leased if e.kind is END}
        assert not starts & ends


# About 30 s on two cores. No shrinking: with hundreds of rows behind every step it runs for
# minutes; a failure prints its whole run of steps, and the scenarios below are the minimal
# forms of what the machine has found.
SpoolMachine.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=50,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TestSpoolMatchesItsModel = SpoolMachine.TestCase


# ---- scenarios the machine found, kept as plain tests -------------------------------------


def test_a_start_outside_the_supersede_window_is_not_shipped_after_its_end() -> None:
    """Regression (spool/ops.py, ``claim``/``_SUPERSEDE``; reachable through ``prune_done``,
    ``purge`` and the committer's ``_prune_done``, which deletes done rows regardless of
    retention when the spool is full): a start is only superseded inside the first
    ``max(4 * limit, 200)`` pending events. Behind more than 200 events in backoff (an outage),
    a span's start is neither superseded nor claimable while its end is spooled, but the end
    itself is claimed and shipped. Once the done end is pruned, nothing says the start is
    stale: the next claim leases it and the start reaches the endpoint after the end, which
    DESIGN.md rules out ("a span's start is never delivered after its end").

    The machine's own steps, with fixed arguments: its model and checks flag the claim."""
    machine = SpoolMachine()
    try:
        machine.a_backlog_in_backoff(backlog=201, wait=10_000.0)
        payload = b'{"name":"x"}'
        machine.do_append([NewEvent("s", "t", START, payload, enqueued_at=machine.clock)])
        machine.do_append([NewEvent("s", "t", END, payload, enqueued_at=machine.clock)])
        machine.advance_clock(1.0)
        machine.ship(OWNERS[1], limit=50)  # the end, alone: the start waits behind it
        machine.every_row_matches_the_model()
        machine.advance_clock(1.0)
        machine.do_prune_done(before=machine.clock, limit=100)  # retention, or a full spool
        machine.do_claim(OWNERS[1], limit=50, lease=60.0)
    finally:
        machine.teardown()


def test_a_start_pending_when_its_end_is_acked_is_not_shipped_after_the_end_is_purged() -> None:
    """Regression (spool/ops.py, ``ack``; found on a loaded run, 2026-12-01): the end of a span
    is acked while its start is pending but was never superseded (the end was acked by a
    shipper whose lease had run out, or the start was spooled or retried after the end's
    claim). The done end kept the start from being claimed, but once it was purged the next
    claim leased the start, after its end had been shipped. The ack now supersedes it.

    The machine's own steps, with fixed arguments: its model and checks flag the claim."""
    machine = SpoolMachine()
    try:
        payload = b'{"name":"x"}'
        machine.do_append([NewEvent("s", "t", START, payload, enqueued_at=machine.clock)])
        machine.do_append([NewEvent("s", "t", END, payload, enqueued_at=machine.clock)])
        (start, end) = [e.seq for e in machine.model.ordered()]
        machine.do_ack([end])  # a late ack: the end was claimed, released, never re-claimed
        machine.every_row_matches_the_model()
        assert machine.model.events[start].outcome is Outcome.SUPERSEDED
        machine.purge(states=(EventState.DONE,), age=-1.0)
        assert machine.do_claim(OWNERS[1], limit=50, lease=60.0) == []
    finally:
        machine.teardown()


def test_dead_letter_reports_the_events_it_moved(tmp_path: Path) -> None:
    """``dead_letter`` returns the number of events it moved, like ``ack``, ``fail``,
    ``release`` and ``retry_dead``: an event already done or gone is not counted (it returned
    ``len(reasons)`` before b2c6298)."""
    payload = b'{"name":"x"}'
    with Spool.open(SpoolConfig(path=tmp_path / "spool.db")) as spool:
        assert spool.append(
            [NewEvent("a", "t", START, payload), NewEvent("b", "t", START, payload)]
        )
        (a, b) = spool.run(ops.claim("A", limit=2, lease_seconds=60, now=1.0))
        spool.run(ops.ack([a.seq], now=2.0))
        moved = spool.run(ops.dead_letter({a.seq: "422", b.seq: "422", NO_SUCH_SEQ: "422"}, 3.0))
        assert spool.stats().dead == 1
        assert moved == 1
