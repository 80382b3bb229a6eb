"""Adaptive request concurrency: how many uploads may be in flight, learned from the endpoint.

The idea is Vector's adaptive request concurrency (``src/sinks/util/adaptive_concurrency``),
written anew: additive increase, multiplicative decrease (AIMD) driven by two signals.

- Round-trip time. Answers are grouped into windows about one round trip long, and each
  window's mean RTT is compared with the baseline (an EWMA of earlier windows' means). A window
  at or below the baseline raises the limit by one; one above it by more than a margin
  (``rtt_deviation_scale`` standard deviations, and at least ``rtt_tolerance`` of the mean)
  multiplies the limit by ``rtt_decrease_ratio``; one in between leaves it. A latency that does
  not grow with load (a far but idle endpoint) thus ends at ``maximum``, as half of its windows
  are below the mean; one that grows as requests queue up stops the climb, as the baseline lags
  behind a rising RTT.
- Back-pressure (429, 503, timeouts, connection errors): the limit is multiplied by
  ``backpressure_ratio`` at once, at most once per window, so a burst of refusals from one
  volley halves it once rather than collapsing it to 1.

Until the first decrease the limit doubles per window instead of adding one (TCP's slow start):
at 150 ms per round trip, climbing from 1 to 32 takes five windows instead of thirty-one.

The controller is pure: no I/O, no tasks, time only from the injected ``clock``. The caller
reads :attr:`AdaptiveConcurrency.limit` before it starts a request and reports each finished
request with :meth:`AdaptiveConcurrency.record`.

>>> ticks = iter(range(100))
>>> aimd = AdaptiveConcurrency(8, clock=lambda: float(next(ticks)))
>>> for _ in range(6):
...     aimd.record(0.15, Signal.OK)
>>> aimd.limit
8
>>> aimd.record(0.15, Signal.BACKPRESSURE)
>>> aimd.limit
4
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["AdaptiveConcurrency", "AimdSettings", "Signal"]


class Signal(enum.Enum):
    """What one finished request says about the endpoint's load."""

    OK = "ok"
    """Answered 2xx: the RTT is a load measurement."""
    BACKPRESSURE = "backpressure"
    """429, 503, a timeout or a connection error: the endpoint (or the way to it) asks for
    less."""
    OTHER = "other"
    """Anything else (a 500, a 4xx about the content): says nothing about load; ignored."""


@dataclass(frozen=True, slots=True)
class AimdSettings:
    """The controller's constants; the defaults suit an endpoint between 1 ms and 1 s away."""

    backpressure_ratio: float = 0.5
    rtt_decrease_ratio: float = 0.9
    ewma_alpha: float = 0.4
    """Weight of the newest window in the RTT baseline (Vector's default)."""
    rtt_deviation_scale: float = 2.5
    """A window is rising when its mean exceeds the baseline by this many standard deviations."""
    rtt_tolerance: float = 0.5
    """...and by at least this fraction of the baseline, so noise on a steady link is ignored."""

    def __post_init__(self) -> None:
        for name in ("backpressure_ratio", "rtt_decrease_ratio", "ewma_alpha"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"{name} must be between 0 and 1")
        for name in ("rtt_deviation_scale", "rtt_tolerance"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")


@dataclass(slots=True)
class _Baseline:
    """Exponentially weighted mean and variance of the windows' mean RTTs."""

    mean: float
    variance: float = 0.0

    def update(self, value: float, alpha: float) -> None:
        # West's incremental EWMA variance, as Vector's EwmaVar.
        delta = value - self.mean
        self.mean += alpha * delta
        self.variance = (1 - alpha) * (self.variance + alpha * delta * delta)


class AdaptiveConcurrency:
    """The request concurrency limit, between 1 and ``maximum``.

    >>> aimd = AdaptiveConcurrency(16, initial=4, clock=lambda: 0.0)
    >>> aimd.limit
    4
    """

    __slots__ = (
        "_baseline",
        "_clock",
        "_limit",
        "_maximum",
        "_settings",
        "_slow_start",
        "_window_backpressure",
        "_window_count",
        "_window_end",
        "_window_sum",
    )

    def __init__(
        self,
        maximum: int,
        *,
        initial: int = 1,
        clock: Callable[[], float] = time.monotonic,
        settings: AimdSettings | None = None,
    ) -> None:
        if maximum < 1:
            raise ValueError(f"maximum must be at least 1, got {maximum}")
        if not 1 <= initial <= maximum:
            raise ValueError(f"initial must be 1 to {maximum}, got {initial}")
        self._maximum = maximum
        self._limit = initial
        self._clock = clock
        self._settings = settings or AimdSettings()
        self._slow_start = True
        self._baseline: _Baseline | None = None
        self._window_end: float | None = None
        self._window_sum = 0.0
        self._window_count = 0
        self._window_backpressure = False

    @property
    def limit(self) -> int:
        """How many requests may be in flight now (1 to ``maximum``)."""
        return self._limit

    @property
    def maximum(self) -> int:
        return self._maximum

    @property
    def baseline_rtt(self) -> float | None:
        """The RTT the controller compares new windows with; ``None`` before the first answer."""
        return None if self._baseline is None else self._baseline.mean

    def record(self, rtt: float, signal: Signal) -> None:
        """Take in one finished request: its round-trip time in seconds and what it signals."""
        if math.isnan(rtt) or rtt < 0:
            raise ValueError(f"rtt must be a non-negative number of seconds, got {rtt}")
        now = self._clock()
        # The window closes before this answer joins the next one, so the answers of one
        # volley, arriving together, land in one window.
        if self._window_end is not None and now >= self._window_end:
            self._close_window(now)
        if signal is Signal.OK:
            if self._baseline is None:
                # The first answer is the baseline and opens the first window.
                self._baseline = _Baseline(rtt)
            else:
                self._window_sum += rtt
                self._window_count += 1
        elif signal is Signal.BACKPRESSURE and not self._window_backpressure:
            self._window_backpressure = True
            self._decrease(self._settings.backpressure_ratio)
        elif signal is Signal.OTHER:
            return
        if self._window_end is None:
            # No baseline yet: this answer's round trip is the best guess at a window.
            self._window_end = now + rtt

    def _close_window(self, now: float) -> None:
        baseline = self._baseline
        if baseline is not None and self._window_count:
            current = self._window_sum / self._window_count
            if not self._window_backpressure:
                if self._rising(current, baseline):
                    self._decrease(self._settings.rtt_decrease_ratio)
                elif current <= baseline.mean or math.isclose(current, baseline.mean):
                    self._increase()
            baseline.update(current, self._settings.ewma_alpha)
        self._window_end = None if baseline is None else now + baseline.mean
        self._window_sum = 0.0
        self._window_count = 0
        self._window_backpressure = False

    def _rising(self, current: float, baseline: _Baseline) -> bool:
        margin = max(
            self._settings.rtt_deviation_scale * math.sqrt(baseline.variance),
            self._settings.rtt_tolerance * baseline.mean,
        )
        return current > baseline.mean + margin

    def _increase(self) -> None:
        step = self._limit if self._slow_start else 1
        self._limit = min(self._maximum, self._limit + step)

    def _decrease(self, ratio: float) -> None:
        self._slow_start = False
        self._limit = max(1, math.floor(self._limit * ratio))
