"""Values the spool hands out: event states, claimed events, stats and stuck rows."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

__all__ = [
    "ClaimedEvent",
    "EventKind",
    "EventRecord",
    "EventState",
    "MetaKey",
    "Outcome",
    "SpoolStats",
]


class EventState(enum.StrEnum):
    """Where an event is in its life. Mirrored by a CHECK constraint in the schema."""

    PENDING = "pending"
    LEASED = "leased"
    DONE = "done"
    DEAD = "dead"


class EventKind(enum.StrEnum):
    """A span event: the span started, or it ended (the end carries the whole span)."""

    START = "start"
    END = "end"


class MetaKey(enum.StrEnum):
    """Facts the shipper records in the spool for operators (``spool-ship status``)."""

    BLOCKED = "blocked_reason"
    """Why shipping is paused (credentials refused); absent while shipping works."""
    LAST_ERROR = "last_error"
    LAST_ERROR_AT = "last_error_at"
    LAST_SUCCESS_AT = "last_success_at"
    """Unix time of the last batch the endpoint accepted."""
    MAX_BYTES = "max_bytes"
    """The size limit every process enforces (see :mod:`spool._fill`)."""


class Outcome(enum.StrEnum):
    """How a done event ended."""

    SHIPPED = "shipped"
    SUPERSEDED = "superseded"


@dataclass(frozen=True, slots=True)
class ClaimedEvent:
    """An event leased to one shipper. ``payload`` is the exact JSON to send."""

    seq: int
    span_id: str
    trace_id: str
    kind: EventKind
    payload: bytes
    attempts: int
    enqueued_at: float


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One row of the spool in full, for operators (``show``, ``stuck``, ``export``)."""

    seq: int
    span_id: str
    trace_id: str
    kind: EventKind
    state: EventState
    attempts: int
    enqueued_at: float
    next_attempt_at: float
    lease_owner: str | None
    lease_expires_at: float | None
    last_error: str | None
    done_at: float | None
    outcome: Outcome | None
    payload: bytes


@dataclass(frozen=True, slots=True)
class SpoolStats:
    """A consistent snapshot of the spool's counters.

    ``dropped`` counts valid events that were not spooled (size limit, disk full, broken
    spool); ``refused`` counts invalid events. Both are keyed by reason.
    """

    pending: int
    leased: int
    done: int
    dead: int
    superseded: int
    dropped: dict[str, int] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)
    oldest_pending_at: float | None = None
    file_bytes: int = 0
    wal_bytes: int = 0
    meta: dict[str, str] = field(default_factory=dict)

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    @property
    def refused_total(self) -> int:
        return sum(self.refused.values())
