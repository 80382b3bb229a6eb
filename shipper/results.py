"""What the shipper reports: drain results and progress."""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["DrainResult", "Progress", "StopReason"]


class StopReason(enum.StrEnum):
    """Why a drain stopped with events still pending."""

    TIMEOUT = "timeout"
    AUTH = "authentication failed"
    UNREACHABLE = "endpoint unreachable"
    """No answer: connection errors or timeouts."""
    ENDPOINT_ERROR = "error from the endpoint"
    """The endpoint answered, with an error (a 5xx, 429, an unexpected 4xx) each time."""
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class Progress:
    """A drain's progress, for a progress bar or a log line."""

    shipped: int
    remaining: int
    elapsed: float

    @property
    def rate(self) -> float:
        """Events shipped per second so far."""
        return self.shipped / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        rate = self.rate
        return self.remaining / rate if rate > 0 else None


@dataclass(frozen=True, slots=True)
class DrainResult:
    """How a drain ended. ``exit_code`` is the CLI's: 0 all delivered, 2 some dead, 1 stopped
    with events pending (``reason`` says why, ``detail`` gives the endpoint's words and
    ``status`` its HTTP status, if it answered)."""

    shipped: int
    dead_lettered: int
    pending: int
    leased: int
    dead: int
    elapsed: float
    reason: StopReason | None = None
    detail: str | None = None
    status: int | None = None

    @property
    def exit_code(self) -> int:
        if self.pending or self.leased:
            return 1
        return 2 if self.dead else 0

    def describe(self) -> str:
        """One line for an operator."""
        head = (
            f"shipped {self.shipped} in {self.elapsed:.1f}s; pending {self.pending}, "
            f"leased {self.leased}, dead {self.dead}"
        )
        if self.exit_code == 1:
            why = self.reason.value if self.reason else "events still pending"
            if self.reason is StopReason.STOPPED:
                why = "asked to stop"
            elif self.reason is StopReason.ENDPOINT_ERROR and self.status is not None:
                why = f"HTTP {self.status} from the endpoint"
            return f"{head}: stopped, {why}" + (f" ({self.detail})" if self.detail else "")
        if self.exit_code == 2:
            return f"{head}: {self.dead} event(s) dead-lettered; see 'spool-ship stuck'"
        return f"{head}: everything delivered"
