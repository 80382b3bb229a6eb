"""Values the spool hands out: event states, claimed events, stats and stuck rows."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

__all__ = [
    "DROPPED_PREFIX",
    "REFUSED_PREFIX",
    "ClaimedEvent",
    "Counter",
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


DROPPED_PREFIX = "dropped:"
REFUSED_PREFIX = "refused:"
REQUESTS_PREFIX = "requests:"


class Counter(enum.StrEnum):
    """Every counter the spool keeps (its ``counters`` table), by name.

    ``dropped:<reason>``: valid events that were not spooled; ``refused:<reason>``: invalid
    events; ``superseded``: starts not sent because their end carries the span.
    """

    SUPERSEDED = "superseded"
    DELIVERED = "delivered"
    RETRIES = "retries"
    DROPPED_SPOOL_FULL = "dropped:spool_full"
    DROPPED_EVICTED = "dropped:evicted"
    DROPPED_DISK_FULL = "dropped:disk_full"
    DROPPED_SPOOL_CORRUPT = "dropped:spool_corrupt"
    DROPPED_NOT_A_SPOOL = "dropped:not_a_spool"
    DROPPED_NEWER_SCHEMA = "dropped:newer_schema"
    DROPPED_SPOOL_LOCKED = "dropped:spool_locked"
    DROPPED_UNSAFE_FILE = "dropped:unsafe_file"
    DROPPED_SPOOL_ERROR = "dropped:spool_error"
    DROPPED_SALVAGE_LOST = "dropped:salvage_lost"
    REFUSED_MISSING_NAME = "refused:missing_name"
    REFUSED_MISSING_TRACE_ID = "refused:missing_trace_id"
    REFUSED_MISSING_START_TIMESTAMP = "refused:missing_start_timestamp"
    REFUSED_INVALID_TIMESTAMP = "refused:invalid_timestamp"
    REFUSED_END_BEFORE_START = "refused:end_before_start"
    REFUSED_NUL_IN_ID = "refused:nul_in_id"
    REFUSED_INVALID_ID = "refused:invalid_id"
    REFUSED_ID_TOO_LONG = "refused:id_too_long"
    REFUSED_TOO_LARGE = "refused:too_large"
    REFUSED_INVALID_SPAN = "refused:invalid_span"
    REFUSED_UNSERIALIZABLE = "refused:unserializable"
    REFUSED_REDACT_FAILED = "refused:redact_failed"

    @property
    def reason(self) -> str:
        """The reason a drop or refusal is shown under (``spool_full``)."""
        return self.value.partition(":")[2]

    @classmethod
    def refused(cls, reason: str) -> Counter:
        """The counter of a refusal's ``reason`` (:class:`spool.Refused`); an unknown reason
        counts as ``invalid_span`` rather than raise into the agent (a test keeps the list
        complete)."""
        try:
            return cls(REFUSED_PREFIX + reason)
        except ValueError:
            return cls.REFUSED_INVALID_SPAN


class MetaKey(enum.StrEnum):
    """Facts the shipper records in the spool for operators (``spool-ship status``)."""

    BLOCKED = "blocked_reason"
    """Why shipping is paused (credentials refused); absent while shipping works."""
    LAST_ERROR = "last_error"
    LAST_ERROR_AT = "last_error_at"
    LAST_SUCCESS_AT = "last_success_at"
    """Unix time of the last batch the endpoint accepted."""
    SALVAGE = "salvage_progress"
    """Written by ``spool-ship doctor`` into the fresh spool as it salvages a damaged one:
    where it is (so a stopped salvage resumes there) and, once finished, what it found."""
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
