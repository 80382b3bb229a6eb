"""The size limit every process agrees on, early warnings as the spool fills, and drop bursts.

The limit lives in the spool's ``meta`` table (``MetaKey.MAX_BYTES``). A process configured
with a limit (``SPOOL_SHIP_MAX_BYTES``, ``SpoolConfig(max_bytes=...)``) stores it when it
opens the spool for writing; the last one to do so wins, and says so in a warning when it
replaces a different value. A process without one enforces what is stored (else 1 GiB). A
writer re-reads the stored limit at most every :data:`REFRESH_INTERVAL` seconds, so a limit set
by the sidecar applies to the agent's appends within that time.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ._model import MetaKey
from .config import DEFAULT_MAX_BYTES, SpoolConfig

__all__ = [
    "FILL_WARNINGS",
    "REFRESH_INTERVAL",
    "DropBursts",
    "FillWatch",
    "limit_from_meta",
    "read_limit",
    "store_limit",
]

REFRESH_INTERVAL = 5.0
# Fill ratios that log a warning, highest first; each at most once per WARN_INTERVAL.
FILL_WARNINGS = (0.95, 0.80)
WARN_INTERVAL = 300.0
# A drop burst logs its first drop at once, then its count at most this often.
BURST_INTERVAL = 10.0

USED_BYTES = (
    "SELECT (p.page_count - f.freelist_count) * s.page_size "
    "FROM pragma_page_count() AS p, pragma_freelist_count() AS f, pragma_page_size() AS s"
)
_READ = "SELECT value FROM meta WHERE key = ?"
_WRITE = (
    "INSERT INTO meta (key, value) VALUES (?, ?) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)


def limit_from_meta(meta: Mapping[str, str]) -> int:
    """The limit a spool's ``meta`` rows describe (1 GiB when none is stored)."""
    raw = meta.get(MetaKey.MAX_BYTES.value)
    try:
        return int(raw) if raw is not None else DEFAULT_MAX_BYTES
    except ValueError:
        return DEFAULT_MAX_BYTES


def read_limit(conn: sqlite3.Connection) -> int:
    row = conn.execute(_READ, (MetaKey.MAX_BYTES.value,)).fetchone()
    return limit_from_meta({MetaKey.MAX_BYTES.value: row[0]} if row else {})


def store_limit(conn: sqlite3.Connection, config: SpoolConfig, log: logging.Logger) -> None:
    """Store ``config.max_bytes`` in the spool when it is set and differs from what is there."""
    if config.max_bytes is None:
        return
    row = conn.execute(_READ, (MetaKey.MAX_BYTES.value,)).fetchone()
    if row is not None and row[0] == str(config.max_bytes):
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        row = conn.execute(_READ, (MetaKey.MAX_BYTES.value,)).fetchone()
        conn.execute(_WRITE, (MetaKey.MAX_BYTES.value, str(config.max_bytes)))
        conn.execute("COMMIT")
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    if row is not None and row[0] != str(config.max_bytes):
        log.warning(
            "spool: %s size limit changed from %s to %d bytes by this process's configuration; "
            "every process sharing the spool now enforces the new one",
            config.path, row[0], config.max_bytes,
        )  # fmt: skip


class FillWatch:
    """The limit a writer enforces, refreshed from the spool now and then, and a warning when
    the spool passes 80% or 95% of it."""

    def __init__(
        self,
        config: SpoolConfig,
        log: logging.Logger,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._log = log
        self._clock = clock
        self.limit = config.max_bytes or DEFAULT_MAX_BYTES
        self._next_at = 0.0
        self._warned_at: dict[float, float] = {}

    def current(self, conn: sqlite3.Connection) -> int:
        """The limit to enforce now; reads the spool at most every REFRESH_INTERVAL."""
        now = self._clock()
        if now >= self._next_at:
            self._next_at = now + REFRESH_INTERVAL
            self.limit = read_limit(conn)
            self.check(int(conn.execute(USED_BYTES).fetchone()[0]), now)
        return self.limit

    def check(self, used: int, now: float | None = None) -> None:
        """Warn when ``used`` is past a threshold not warned about within WARN_INTERVAL."""
        now = self._clock() if now is None else now
        fill = used / self.limit
        for level in FILL_WARNINGS:
            if fill < level:
                continue
            last = self._warned_at.get(level)
            if last is None or now - last >= WARN_INTERVAL:
                self._warned_at[level] = now
                self._log.warning(
                    "spool: %s is %.0f%% full (%d of %d bytes); at the limit new span events "
                    "are dropped: ship faster, or raise SPOOL_SHIP_MAX_BYTES",
                    self._config.path, 100 * fill, used, self.limit,
                )  # fmt: skip
            return


@dataclass(slots=True)
class _Burst:
    started: float
    total: int
    unlogged: int = 0


class DropBursts:
    """Log drops by burst: the first drop of a burst at once, then the count at most every
    BURST_INTERVAL, and the burst's last count once it is over (see :meth:`flush`)."""

    def __init__(
        self,
        log: logging.Logger,
        interval: float = BURST_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = log
        self._interval = interval
        self._clock = clock
        self._open: dict[str, _Burst] = {}

    def dropped(self, reason: str, count: int, detail: str) -> None:
        burst = self._open.get(reason)
        if burst is not None:
            burst.total += count
            burst.unlogged += count
            self.flush()
            return
        self._open[reason] = _Burst(self._clock(), count)
        self._log.warning("spool: dropped %d span event(s) (%s): %s", count, reason, detail)

    def due_in(self) -> float | None:
        """Seconds until :meth:`flush` has something to log; None when no burst is open."""
        if not self._open:
            return None
        now = self._clock()
        return max(0.0, min(b.started + self._interval for b in self._open.values()) - now)

    def flush(self, *, final: bool = False) -> None:
        """Log the counts of bursts whose interval is over (all, when ``final``); a burst with
        nothing new in its last interval is over."""
        now = self._clock()
        for reason, burst in list(self._open.items()):
            if not final and now - burst.started < self._interval:
                continue
            if burst.unlogged:
                self._log.warning(
                    "spool: dropped %d more span event(s) (%s) in the last %.0fs; %d in this "
                    "burst",
                    burst.unlogged, reason, now - burst.started, burst.total,
                )  # fmt: skip
                burst.unlogged = 0
                burst.started = now
            if final or (not burst.unlogged and now - burst.started >= self._interval):
                del self._open[reason]
