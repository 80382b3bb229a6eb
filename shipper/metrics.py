"""What the ship loop counts: deliveries, requests by answer, retries, and a heartbeat.

The counts are added to the spool's ``counters`` table now and then (:meth:`ShipMetrics.due`)
and when the shipper stops, so ``spool-ship status`` in any process sees them;
``run --metrics-addr`` adds what is not written yet (:meth:`ShipMetrics.unwritten`).

>>> metrics = ShipMetrics()
>>> metrics.request(200); metrics.delivered(50)
>>> metrics.unwritten()
{'delivered': 50, 'requests:200': 1}
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from spool import AsyncSpool, Counter, MetaKey, ops
from spool._model import REQUESTS_PREFIX

__all__ = [
    "COUNTER_DELIVERED",
    "COUNTER_RETRIES",
    "REQUESTS_PREFIX",
    "ShipMetrics",
    "error_meta",
    "request_code",
]

COUNTER_DELIVERED = Counter.DELIVERED
COUNTER_RETRIES = Counter.RETRIES
# How often counts are written to the spool while shipping.
WRITE_EVERY = 5.0


def request_code(status: int | None) -> str:
    """The ``code`` label of a request: the HTTP status, or ``error`` without a response."""
    return str(status) if status is not None else "error"


def error_meta(description: str, now: float) -> dict[str, str]:
    """The spool's ``last error`` facts for an answer that was not a success."""
    return {MetaKey.LAST_ERROR.value: description, MetaKey.LAST_ERROR_AT.value: repr(now)}


class ShipMetrics:
    """Counts kept by one shipper. Thread-safe: the metrics server reads them from its thread."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, write_every: float = WRITE_EVERY
    ) -> None:
        self._clock = clock
        self._write_every = write_every
        self._lock = threading.Lock()
        self._unwritten: dict[str, int] = {}
        self._next_write = clock() + write_every
        self.totals: dict[str, int] = {}
        """Everything counted since this shipper started (for heartbeat rates)."""
        self.last_progress = clock()
        """When the loop last claimed, looked for work, or made a request (monotonic)."""

    def _add(self, name: str, n: int) -> None:
        with self._lock:
            self._unwritten[name] = self._unwritten.get(name, 0) + n
            self.totals[name] = self.totals.get(name, 0) + n

    def tick(self) -> None:
        """The loop is alive and not wedged: it claimed, looked for work or sent a request."""
        self.last_progress = self._clock()

    def request(self, status: int | None) -> None:
        self.tick()
        self._add(REQUESTS_PREFIX + request_code(status), 1)

    def delivered(self, n: int) -> None:
        self._add(COUNTER_DELIVERED, n)

    def retry(self) -> None:
        self._add(COUNTER_RETRIES, 1)

    def unwritten(self) -> dict[str, int]:
        """Counts not yet in the spool."""
        with self._lock:
            return dict(self._unwritten)

    def take(self) -> dict[str, int]:
        """The unwritten counts, now the caller's to write (give them back if that fails)."""
        with self._lock:
            counts, self._unwritten = self._unwritten, {}
        self._next_write = self._clock() + self._write_every
        return counts

    def give_back(self, counts: dict[str, int]) -> None:
        with self._lock:
            for name, n in counts.items():
                self._unwritten[name] = self._unwritten.get(name, 0) + n

    def due(self) -> dict[str, int]:
        """:meth:`take`, once every ``write_every`` seconds; else nothing."""
        if self._clock() < self._next_write:
            return {}
        return self.take()

    async def write(self, spool: AsyncSpool, counts: dict[str, int]) -> None:
        """Add ``counts`` (from :meth:`take` or :meth:`due`) to the spool's counters; given
        back when that fails, for the next try."""
        if not counts:
            return
        try:
            await spool.run(ops.add_counters(counts))
        except BaseException:
            self.give_back(counts)
            raise
