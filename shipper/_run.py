"""What the parts of one running shipper share: the events that steer it, why it stops, and
its tallies. The lifecycle (:mod:`shipper.lifecycle`) owns it; the dispatcher and the
delivery read and set it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from .classify import Action, Verdict
from .concurrency import Signal
from .metrics import ShipMetrics
from .results import Progress, StopReason

__all__ = ["ConcurrencyControl", "RunState", "wait_for_event"]


class ConcurrencyControl(Protocol):
    """How many requests may be in flight (:class:`shipper.AdaptiveConcurrency`): dispatch
    reads ``limit`` whenever it wants a slot; delivery reports each finished request."""

    @property
    def limit(self) -> int: ...

    def record(self, rtt: float, signal: Signal) -> None: ...


def _set() -> asyncio.Event:
    event = asyncio.Event()
    event.set()
    return event


@dataclass(slots=True, eq=False)
class RunState:
    """One shipper's shared state across its runs (``run``, ``drain``)."""

    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the run is to end: in-flight batches finish or are handed back."""
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when there may be something to claim (an append, a freed slot, a stop)."""
    unpaused: asyncio.Event = field(default_factory=_set)
    """Cleared while the credentials are refused: nothing is claimed until a probe succeeds."""
    drain: bool = False
    patience: int | None = None
    """In a drain, a batch that fails this many attempts in a row ends the drain."""
    stop_timeout: float = 10.0
    reason: StopReason | None = None
    detail: str | None = None
    status: int | None = None
    blocked: Verdict | None = None
    progress: Callable[[Progress], None] | None = None
    started_at: float = 0.0
    shipped: int = 0
    dead_lettered: int = 0
    requests: int = 0
    remaining: int = 0
    metrics: ShipMetrics = field(default_factory=ShipMetrics)
    """Deliveries, requests by answer and retries, for the spool's counters and ``/metrics``."""

    def request_stop(self, reason: StopReason, verdict: Verdict | str | None = None) -> None:
        """End the run; the first reason given is the one reported."""
        if self.reason is None:
            self.reason = reason
            if isinstance(verdict, Verdict):
                self.detail, self.status = verdict.describe(), verdict.status
            else:
                self.detail = verdict
        self.stopping.set()
        self.wakeup.set()
        self.unpaused.set()

    def give_up(self, verdict: Verdict) -> None:
        """A drain's patience ran out on ``verdict``: stop, saying what the endpoint did."""
        if verdict.action is Action.PAUSE:
            reason = StopReason.AUTH
        elif verdict.status is None:
            reason = StopReason.UNREACHABLE
        else:
            reason = StopReason.ENDPOINT_ERROR
        self.request_stop(reason, verdict)


async def wait_for_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait for ``event`` up to ``timeout`` seconds; True if it was set."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max(0.0, timeout)):
            await event.wait()
        return True
    return False
