"""The spool's operations, each one transaction, written once.

An operation is a generator that yields :class:`Query` values and receives their rows; a thin
driver runs it on ``sqlite3`` (:class:`spool.Spool`) or on ``aiosqlite``
(:class:`spool.AsyncSpool`) inside one ``BEGIN IMMEDIATE`` ... ``COMMIT``. The logic (span
order, leases, counters) lives here and nowhere else.
"""

from __future__ import annotations

import json
import math
from collections.abc import Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from ._errors import SpoolFullError
from ._fill import USED_BYTES, limit_from_meta
from ._model import (
    DROPPED_PREFIX,
    REFUSED_PREFIX,
    ClaimedEvent,
    Counter,
    EventKind,
    EventRecord,
    EventState,
    MetaKey,
    Outcome,
    SpoolStats,
)

__all__ = [
    "Query",
    "Rows",
    "Tx",
    "ack",
    "ack_then",
    "add_counters",
    "claim",
    "dead_letter",
    "export_page",
    "extend_leases",
    "fail",
    "find",
    "import_events",
    "outstanding",
    "prune_done",
    "purge",
    "release",
    "renew",
    "retry_dead",
    "retry_later",
    "set_meta",
    "stats",
    "status_report",
    "stuck",
    "waiting",
]

T = TypeVar("T")
Rows = list[tuple[Any, ...]]


@dataclass(frozen=True, slots=True)
class Query:
    """One statement for the driver to run; ``many`` runs it once per parameter row."""

    sql: str
    params: Sequence[Any] = ()
    many: bool = False


Tx = Generator[Query, Rows, T]

_P, _L, _D, _X = (s.value for s in EventState)  # pending, leased, done, dead
_START, _END = EventKind.START.value, EventKind.END.value
# A dict lookup, not EventKind(value): claims build an event per row on the spool's thread.
_KINDS = {kind.value: kind for kind in EventKind}

_RECORD_COLUMNS = (
    "seq, span_id, trace_id, kind, state, attempts, enqueued_at, next_attempt_at, "
    "lease_owner, lease_expires_at, last_error, done_at, outcome, payload"
)
_SEQS = "seq IN (SELECT value FROM json_each(?))"
# Pending, or leased by the owner given (any owner when it is NULL): a late answer to one
# shipper never decides events that another has claimed since. A CASE, not an OR of state
# tests: SQLite would answer that OR from events_by_state, scanning every pending row, where
# the seqs given are a few primary-key lookups.
_HELD_BY = (
    f"CASE state WHEN '{_P}' THEN 1 "
    f"WHEN '{_L}' THEN lease_owner = COALESCE(?, lease_owner) ELSE 0 END"
)

# A lease further ahead than ``?`` (the longest lease a shipper writes: a backoff wait plus
# a lease) was written before the wall clock stepped back: it counts as expired, or its
# events would wait out the step.
_RELEASE_EXPIRED = f"""
UPDATE events SET state = '{_P}', lease_owner = NULL, lease_expires_at = NULL
WHERE state = '{_L}' AND (lease_expires_at <= ? OR lease_expires_at > ?)
"""

# A start is superseded when its span's end is spooled (and not dead): the end carries the
# whole span, and sending the start after it would regress the stored span.
_END_SPOOLED = f"""
EXISTS (SELECT 1 FROM events AS o
        WHERE o.trace_id = c.trace_id AND o.span_id = c.span_id AND o.kind = '{_END}'
          AND o.state IN ('{_P}', '{_L}', '{_D}'))
"""

# Supersede the starts, among a window of the oldest pending events, whose end is spooled. The
# window ends at the pending event the second ``?`` (an OFFSET) names, or takes them all; its
# starts are found through events_pending_starts, so only their rows are read.
_SUPERSEDE = f"""
UPDATE events SET state = '{_D}', outcome = '{Outcome.SUPERSEDED.value}', done_at = ?,
    lease_owner = NULL, lease_expires_at = NULL
WHERE seq IN (
    SELECT c.seq FROM events AS c
    WHERE c.kind = '{_START}' AND c.state = '{_P}'
      AND c.seq <= COALESCE(
          (SELECT seq FROM events WHERE state = '{_P}' ORDER BY seq LIMIT 1 OFFSET ?),
          {2**63 - 1})
      AND {_END_SPOOLED}
)
RETURNING seq
"""

# One statement for all the claimed ends (a JSON array of [trace_id, span_id] pairs); CROSS
# JOIN keeps the pairs as the outer loop, each a lookup in events_by_span.
_SUPERSEDE_SPANS = f"""
UPDATE events SET state = '{_D}', outcome = '{Outcome.SUPERSEDED.value}', done_at = ?
WHERE seq IN (
    SELECT e.seq FROM json_each(?) AS j
    CROSS JOIN events AS e
        ON e.trace_id = json_extract(j.value, '$[0]') AND e.span_id = json_extract(j.value, '$[1]')
        AND e.kind = '{_START}'
    WHERE e.state = '{_P}'
)
"""

# Once a span's end is delivered, its start is moot, and must never follow: starts still
# pending or dead (spooled, or retried, after the end was claimed) are superseded when the end
# is acked. Otherwise pruning the done end would leave them claimable.
_SUPERSEDE_BY_SHIPPED_ENDS = f"""
UPDATE events SET state = '{_D}', outcome = '{Outcome.SUPERSEDED.value}', done_at = ?
WHERE seq IN (
    SELECT s.seq FROM json_each(?) AS j
    CROSS JOIN events AS e ON e.seq = j.value
    CROSS JOIN events AS s
        ON s.trace_id = e.trace_id AND s.span_id = e.span_id AND s.kind = '{_START}'
    WHERE e.kind = '{_END}' AND e.state = '{_D}' AND s.state IN ('{_P}', '{_X}')
)
"""

# An end waits while its start is in flight, so the start can never arrive after it. An event
# due further ahead than the longest wait (the second ``?``) was held back before the wall
# clock stepped back: it is due now. A start waits until it is start_delay old (enqueued
# after the third ``?``, ``now - start_delay``, and not after the fourth, ``now +
# start_delay``): a span that ends sooner ships once, its end superseding the start. A start
# stamped a little after ``now`` was committed between the shipper's clock reading and its
# transaction, and waits too; one stamped more than a delay after it was written before the
# wall clock stepped back, and is old.
_READY_FROM = f"""
FROM events AS c
WHERE c.state = '{_P}' AND (c.next_attempt_at <= ? OR c.next_attempt_at > ?)
  AND NOT (c.kind = '{_START}' AND ((c.enqueued_at > ? AND c.enqueued_at <= ?) OR {_END_SPOOLED}))
  AND NOT (c.kind = '{_END}' AND EXISTS (
      SELECT 1 FROM events AS o
      WHERE o.trace_id = c.trace_id AND o.span_id = c.span_id
        AND o.kind = '{_START}' AND o.state = '{_L}'))
ORDER BY c.seq LIMIT ?
"""

_CLAIM = f"""
UPDATE events SET state = '{_L}', lease_owner = ?, lease_expires_at = ?
WHERE seq IN (SELECT c.seq {_READY_FROM})
RETURNING seq, span_id, trace_id, kind, payload, attempts, enqueued_at
"""

_ADD_COUNTER = """
INSERT INTO counters (name, value) VALUES (?, ?)
ON CONFLICT (name) DO UPDATE SET value = value + excluded.value
"""

_SET_META = (
    "INSERT INTO meta (key, value) VALUES (?, ?) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)

_CHANGES = Query("SELECT changes()")
_TOTAL_CHANGES = Query("SELECT total_changes()")


def _seqs(seqs: Iterable[int]) -> str:
    return json.dumps(list(seqs))


def claim(
    owner: str,
    limit: int,
    lease_seconds: float,
    now: float,
    *,
    max_wait: float = math.inf,
    start_delay: float = 0.0,
    max_bytes: int | None = None,
) -> Tx[list[ClaimedEvent]]:
    """Lease up to ``limit`` ready events to ``owner``, oldest first, in span order.

    ``max_wait``: the longest backoff a shipper sets. Times further ahead than it allows (a
    next attempt beyond ``now + max_wait``, a lease beyond ``now + max_wait + lease_seconds``)
    were written before the wall clock stepped back, and count as past. A start is ready once
    it is ``start_delay`` seconds old. With ``max_bytes`` the claimed payloads add up to at
    most that many bytes, except that the oldest ready event is always claimed, however large.
    """
    horizon = now + max_wait
    yield Query(_RELEASE_EXPIRED, (now, horizon + lease_seconds))
    superseded = yield Query(_SUPERSEDE, (now, max(4 * limit, 200) - 1))
    if superseded:
        yield Query(_ADD_COUNTER, (Counter.SUPERSEDED, len(superseded)))
    # Without a delay no start waits (the range is empty), whatever clock its writer had.
    delay = max(start_delay, 0.0)
    young = (now - delay, now + delay)
    rows = yield Query(_CLAIM, (owner, now + lease_seconds, now, horizon, *young, limit))
    rows.sort(key=lambda row: int(row[0]))
    if max_bytes is not None:
        # The byte cap cuts the claimed rows here rather than in the statement: a window sum
        # over the ready rows cost more than the claim's own lookups (docs/performance.md),
        # and the cap rarely binds. Same transaction, so no one sees the rows given back.
        fits = _fitting(rows, max_bytes)
        if fits < len(rows):
            yield from release([row[0] for row in rows[fits:]], owner)  # pending, no lease
            del rows[fits:]
    ends = [(row[2], row[1]) for row in rows if row[3] == _END]
    if ends:
        # Starts of these spans that lie beyond the window above (behind a backlog in
        # backoff) must not outlive their end: once the end is pruned they would be claimed.
        yield Query(_SUPERSEDE_SPANS, (now, json.dumps(ends)))
        late = int((yield _CHANGES)[0][0])
        if late:
            yield Query(_ADD_COUNTER, (Counter.SUPERSEDED, late))
    return [
        ClaimedEvent(row[0], row[1], row[2], _KINDS[row[3]], bytes(row[4]), row[5], row[6])
        for row in rows
    ]


def _fitting(rows: Rows, max_bytes: int) -> int:
    """How many of ``rows`` (claimed, in seq order) fit under ``max_bytes`` of payload: the
    first always, then as many as fit."""
    total = 0
    for n, row in enumerate(rows):
        total += len(row[4])
        if n and total > max_bytes:
            return n
    return len(rows)


def ack(seqs: Sequence[int], now: float, *, owner: str | None = None) -> Tx[int]:
    """Mark delivered events done and note the success (clearing any blocked reason).

    With ``owner``, events another shipper has leased since are left to it (its answer
    decides them); pending ones still count, as the upsert is idempotent."""
    yield Query(
        f"UPDATE events SET state = '{_D}', outcome = '{Outcome.SHIPPED.value}', done_at = ?, "
        f"lease_owner = NULL, lease_expires_at = NULL "
        f"WHERE {_SEQS} AND {_HELD_BY}",
        (now, _seqs(seqs), owner),
    )
    acked = int((yield _CHANGES)[0][0])
    if acked:
        yield Query(_SET_META, [(MetaKey.LAST_SUCCESS_AT.value, repr(now))], many=True)
        yield Query("DELETE FROM meta WHERE key = ?", (MetaKey.BLOCKED.value,))
        yield Query(_SUPERSEDE_BY_SHIPPED_ENDS, (now, _seqs(seqs)))
        late = int((yield _CHANGES)[0][0])
        if late:
            yield Query(_ADD_COUNTER, (Counter.SUPERSEDED, late))
    return acked


def ack_then(acked: Sequence[int], now: float, owner: str, then: Tx[T]) -> Tx[T]:
    """:func:`ack` (held by ``owner``), then ``then``, in one transaction. The shipper's acks
    ride on its next claim (one commit instead of two), and the ends of the starts just acked
    are claimable at once."""
    if acked:
        yield from ack(acked, now, owner=owner)
    return (yield from then)


def fail(seqs: Sequence[int], owner: str, next_attempt_at: float, error: str) -> Tx[int]:
    """A retryable failure: count the attempt and hold the events until ``next_attempt_at``."""
    yield Query(
        f"UPDATE events SET state = '{_P}', attempts = attempts + 1, next_attempt_at = ?, "
        f"last_error = ?, lease_owner = NULL, lease_expires_at = NULL "
        f"WHERE {_SEQS} AND state = '{_L}' AND lease_owner = ?",
        (next_attempt_at, error, _seqs(seqs), owner),
    )
    return int((yield _CHANGES)[0][0])


def release(
    seqs: Sequence[int],
    owner: str,
    next_attempt_at: float | None = None,
    error: str | None = None,
) -> Tx[int]:
    """Give leased events back without counting an attempt (stop, or paused credentials).

    Without ``next_attempt_at`` the events keep the backoff already persisted for them."""
    yield Query(
        f"UPDATE events SET state = '{_P}', next_attempt_at = COALESCE(?, next_attempt_at), "
        f"last_error = COALESCE(?, last_error), lease_owner = NULL, lease_expires_at = NULL "
        f"WHERE {_SEQS} AND state = '{_L}' AND lease_owner = ?",
        (next_attempt_at, error, _seqs(seqs), owner),
    )
    return int((yield _CHANGES)[0][0])


def retry_later(
    seqs: Sequence[int],
    owner: str,
    *,
    next_attempt_at: float,
    error: str,
    lease_seconds: float,
    now: float,
) -> Tx[int]:
    """A retryable failure while the shipper keeps the batch: count the attempt, persist when
    to try next and why, and hold the lease through the wait. A shipper that dies during the
    wait leaves events that others take only after ``next_attempt_at``."""
    yield Query(
        f"UPDATE events SET attempts = attempts + 1, next_attempt_at = ?, last_error = ?, "
        f"lease_expires_at = ? WHERE {_SEQS} AND state = '{_L}' AND lease_owner = ?",
        (next_attempt_at, error, next_attempt_at + lease_seconds, _seqs(seqs), owner),
    )
    held = int((yield _CHANGES)[0][0])
    yield Query(
        _SET_META,
        [(MetaKey.LAST_ERROR.value, error), (MetaKey.LAST_ERROR_AT.value, repr(now))],
        many=True,
    )
    return held


def renew(seqs: Sequence[int], owner: str, lease_expires_at: float) -> Tx[int]:
    """Extend ``owner``'s lease on events it is still working on."""
    yield Query(
        f"UPDATE events SET lease_expires_at = ? "
        f"WHERE {_SEQS} AND state = '{_L}' AND lease_owner = ?",
        (lease_expires_at, _seqs(seqs), owner),
    )
    return int((yield _CHANGES)[0][0])


def extend_leases(seqs: Sequence[int], owner: str, until: float, latest: float) -> Tx[int]:
    """Extend ``owner``'s leases to ``until`` where they end sooner, never shortening one
    (a lease that covers a backoff wait keeps it), except a lease ending after ``latest``:
    written before the wall clock stepped back, it is brought back to ``until``."""
    yield Query(
        f"UPDATE events SET lease_expires_at = ? WHERE {_SEQS} AND state = '{_L}' "
        f"AND lease_owner = ? AND (lease_expires_at < ? OR lease_expires_at > ?)",
        (until, _seqs(seqs), owner, until, latest),
    )
    return int((yield _CHANGES)[0][0])


def outstanding(start_delay: float = 0.0) -> Tx[tuple[int, int, float | None]]:
    """``(pending, leased, earliest time a pending event is due)``: is there work left, and
    when. A start is due no sooner than ``start_delay`` after it was spooled."""
    rows = yield Query(
        f"SELECT SUM(state = '{_P}'), SUM(state = '{_L}'), "
        f"MIN(CASE WHEN state = '{_P}' THEN MAX(next_attempt_at, "
        f"CASE WHEN kind = '{_START}' THEN enqueued_at + ? ELSE 0 END) END) "
        f"FROM events WHERE state IN ('{_P}', '{_L}')",
        # Without a delay a start is due at its next_attempt_at, whatever its enqueued_at.
        (start_delay if start_delay > 0 else -math.inf,),
    )
    pending, leased, due = rows[0]
    return int(pending or 0), int(leased or 0), due


def dead_letter(reasons: Mapping[int, str], now: float, *, owner: str | None = None) -> Tx[int]:
    """Move events that the endpoint refused for good to ``dead``, each with its reason.
    With ``owner``, events another shipper has leased since are left to it."""
    before = int((yield _TOTAL_CHANGES)[0][0])
    yield Query(
        f"UPDATE events SET state = '{_X}', last_error = ?, done_at = ?, "
        f"lease_owner = NULL, lease_expires_at = NULL "
        f"WHERE seq = ? AND {_HELD_BY}",
        [(reason, now, seq, owner) for seq, reason in reasons.items()],
        many=True,
    )
    return int((yield _TOTAL_CHANGES)[0][0]) - before


def retry_dead(seqs: Sequence[int] | None) -> Tx[int]:
    """Dead events back to pending with their attempts reset: all of them, or ``seqs``."""
    where = f"state = '{_X}'" + ("" if seqs is None else f" AND {_SEQS}")
    params: tuple[Any, ...] = () if seqs is None else (_seqs(seqs),)
    yield Query(
        "UPDATE events SET state = 'pending', attempts = 0, next_attempt_at = 0, "
        f"done_at = NULL WHERE {where}",
        params,
    )
    return int((yield _CHANGES)[0][0])


def prune_done(before: float, limit: int) -> Tx[int]:
    """Delete up to ``limit`` done rows that finished before ``before``."""
    yield Query(
        f"DELETE FROM events WHERE seq IN (SELECT seq FROM events "
        f"WHERE state = '{_D}' AND done_at < ? ORDER BY seq LIMIT ?)",
        (before, limit),
    )
    return int((yield _CHANGES)[0][0])


def purge(states: Sequence[EventState], before: float) -> Tx[int]:
    """Delete done or dead rows that ended before ``before`` (operator's retention)."""
    allowed = [s for s in states if s in (EventState.DONE, EventState.DEAD)]
    if len(allowed) != len(states):
        raise ValueError("only done and dead events can be purged")
    yield Query(
        "DELETE FROM events WHERE state IN (SELECT value FROM json_each(?)) "
        "AND COALESCE(done_at, enqueued_at) < ?",
        (json.dumps([s.value for s in allowed]), before),
    )
    return int((yield _CHANGES)[0][0])


def add_counters(counts: Mapping[str, int]) -> Tx[None]:
    if counts:
        yield Query(_ADD_COUNTER, list(counts.items()), many=True)


def set_meta(values: Mapping[str, str | None]) -> Tx[None]:
    """Set (or, with ``None``, delete) operator-visible facts: blocked reason, last error."""
    keep = [(k, v) for k, v in values.items() if v is not None]
    gone = [(k,) for k, v in values.items() if v is None]
    if keep:
        yield Query(_SET_META, keep, many=True)
    if gone:
        yield Query("DELETE FROM meta WHERE key = ?", gone, many=True)


def stats() -> Tx[SpoolStats]:
    by_state: dict[str, int] = dict(
        (yield Query("SELECT state, COUNT(*) FROM events GROUP BY state"))
    )
    counters: dict[str, int] = dict((yield Query("SELECT name, value FROM counters")))
    oldest = yield Query(
        f"SELECT MIN(enqueued_at) FROM (SELECT enqueued_at FROM events "
        f"WHERE state IN ('{_P}', '{_L}') ORDER BY seq LIMIT 1000)"
    )
    meta: dict[str, str] = dict((yield Query("SELECT key, value FROM meta")))
    return SpoolStats(
        pending=by_state.get(_P, 0),
        leased=by_state.get(_L, 0),
        done=by_state.get(_D, 0),
        dead=by_state.get(_X, 0),
        superseded=counters.get(Counter.SUPERSEDED, 0),
        dropped=_prefixed(counters, DROPPED_PREFIX),
        refused=_prefixed(counters, REFUSED_PREFIX),
        oldest_pending_at=oldest[0][0] if oldest else None,
        meta=meta,
    )


def _prefixed(counters: Mapping[str, int], prefix: str) -> dict[str, int]:
    return {k.removeprefix(prefix): v for k, v in sorted(counters.items()) if k.startswith(prefix)}


def stuck(
    min_attempts: int,
    pending_before: float,
    now: float,
    limit: int,
    *,
    max_wait: float = math.inf,
    lease_seconds: float = 0.0,
) -> Tx[list[EventRecord]]:
    """Events an operator should look at: dead, retried ``min_attempts`` times or more,
    pending since before ``pending_before``, leased past their expiry, or (``max_wait`` and
    ``lease_seconds`` as :func:`claim` takes them) due or leased further ahead than any wait
    or lease a shipper sets: written before the wall clock stepped back."""
    horizon = now + max_wait
    rows = yield Query(
        f"SELECT {_RECORD_COLUMNS} FROM events WHERE state = '{_X}' "
        f"OR (state IN ('{_P}', '{_L}') AND attempts >= ?) "
        f"OR (state = '{_P}' AND (enqueued_at < ? OR next_attempt_at > ?)) "
        f"OR (state = '{_L}' AND (lease_expires_at <= ? OR lease_expires_at > ?)) "
        f"ORDER BY seq LIMIT ?",
        (min_attempts, pending_before, horizon, now, horizon + lease_seconds, limit),
    )
    return [_record(row) for row in rows]


def waiting(
    now: float, max_wait: float = math.inf, lease_seconds: float = 0.0
) -> Tx[tuple[int, float | None, int, int]]:
    """``(due, next_at, pending_beyond, leased_beyond)``: pending events a shipper would
    take now, when the next of the others is due (``None`` when none waits), and how many
    pending and leased events lie beyond the horizon :func:`claim` draws with ``max_wait``
    and ``lease_seconds`` (written before the wall clock stepped back; due now, or expired)."""
    horizon = now + max_wait
    rows = yield Query(
        f"SELECT SUM(state = '{_P}' AND (next_attempt_at <= ?1 OR next_attempt_at > ?2)), "
        f"MIN(CASE WHEN state = '{_P}' AND next_attempt_at > ?1 AND next_attempt_at <= ?2 "
        f"THEN next_attempt_at END), "
        f"SUM(state = '{_P}' AND next_attempt_at > ?2), "
        f"SUM(state = '{_L}' AND lease_expires_at > ?3) "
        f"FROM events WHERE state IN ('{_P}', '{_L}')",
        (now, horizon, horizon + lease_seconds),
    )
    due, next_at, pending_beyond, leased_beyond = rows[0]
    return int(due or 0), next_at, int(pending_beyond or 0), int(leased_beyond or 0)


def find(ident: str) -> Tx[list[EventRecord]]:
    """Events by seq (a number) or by span id."""
    # Only ASCII digits that fit SQLite's 64-bit integer can be a seq; anything else is a
    # span id ("²" is a digit to str.isdigit, and 20 digits overflow).
    seq = int(ident) if ident.isascii() and ident.isdigit() and len(ident) < 19 else -1
    rows = yield Query(
        f"SELECT {_RECORD_COLUMNS} FROM events WHERE seq = ? OR span_id = ? ORDER BY seq",
        (seq, ident),
    )
    return [_record(row) for row in rows]


def export_page(states: Sequence[EventState], after_seq: int, limit: int) -> Tx[list[EventRecord]]:
    rows = yield Query(
        f"SELECT {_RECORD_COLUMNS} FROM events WHERE seq > ? "
        "AND state IN (SELECT value FROM json_each(?)) ORDER BY seq LIMIT ?",
        (after_seq, json.dumps([s.value for s in states]), limit),
    )
    return [_record(row) for row in rows]


def _record(row: tuple[Any, ...]) -> EventRecord:
    return EventRecord(
        seq=row[0],
        span_id=row[1],
        trace_id=row[2],
        kind=EventKind(row[3]),
        state=EventState(row[4]),
        attempts=row[5],
        enqueued_at=row[6],
        next_attempt_at=row[7],
        lease_owner=row[8],
        lease_expires_at=row[9],
        last_error=row[10],
        done_at=row[11],
        outcome=Outcome(row[12]) if row[12] is not None else None,
        payload=bytes(row[13]),
    )


# ---- operators: status and import (spool-ship status, spool-ship import) --------------------


def status_report() -> Tx[tuple[SpoolStats, dict[str, int], int]]:
    """:func:`stats`, every counter (the shipper's too), and the bytes in use, read together."""
    snapshot = yield from stats()
    counters: dict[str, int] = dict((yield Query("SELECT name, value FROM counters")))
    used = yield Query(USED_BYTES)
    return snapshot, counters, int(used[0][0])


_IMPORT = """
INSERT INTO events (span_id, trace_id, kind, payload, enqueued_at, state, last_error, done_at)
SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8
WHERE NOT EXISTS (SELECT 1 FROM events
                  WHERE trace_id = ?2 AND span_id = ?1 AND kind = ?3 AND payload = ?4)
"""


def import_events(
    events: Sequence[tuple[str, str, EventKind, bytes, float, EventState, str | None]],
    now: float,
    path: str,
) -> Tx[int]:
    """Add exported events ``(span_id, trace_id, kind, payload, enqueued_at, state,
    last_error)`` that the spool does not hold yet (same span, kind and payload bytes): the
    number added. ``state`` is pending or dead; pending ones are ready at once. Raises
    :class:`SpoolFullError` (the whole call is rolled back) if they would pass the limit."""
    rows = []
    for span_id, trace_id, kind, payload, enqueued_at, state, last_error in events:
        if state not in (EventState.PENDING, EventState.DEAD):
            raise ValueError(f"only pending and dead events are imported, not {state.value}")
        dead = state is EventState.DEAD
        rows.append(
            (
                span_id, trace_id, kind.value, payload, enqueued_at, state.value,
                last_error if dead else None, now if dead else None,
            )
        )  # fmt: skip
    before = int((yield _TOTAL_CHANGES)[0][0])
    yield Query(_IMPORT, rows, many=True)
    added = int((yield _TOTAL_CHANGES)[0][0]) - before
    used = int((yield Query(USED_BYTES))[0][0])
    key = MetaKey.MAX_BYTES.value
    meta: dict[str, str] = dict((yield Query("SELECT key, value FROM meta WHERE key = ?", (key,))))
    limit = limit_from_meta(meta)
    if used > limit:
        raise SpoolFullError(path, f"importing would take the spool past its limit ({limit} bytes)")
    return added
