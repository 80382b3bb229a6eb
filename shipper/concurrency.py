"""Adaptive request concurrency: how many uploads may be in flight, learned from the endpoint.

The idea is Vector's adaptive request concurrency (``src/sinks/util/adaptive_concurrency``),
written anew: additive increase, multiplicative decrease (AIMD) driven by two signals.

- Round-trip time. Answers are grouped into windows about one round trip long (and of at
  least ``min_samples`` answers, or one round trip's worth at a low limit), and each window's
  mean RTT is compared with the baseline (an EWMA of earlier windows' means; the first
  window's mean to begin with). A window whose mean is within one standard error of the
  baseline or below it raises the limit by one; one above the baseline by more than a margin
  (``rtt_deviation_scale`` standard deviations of the baseline, and at least
  ``rtt_tolerance`` of it: the RTT doubled) multiplies the limit by ``rtt_decrease_ratio``;
  one in between leaves it. A long-tailed but steady latency (150 ms median, 330 ms p95)
  thus ends at ``maximum``, its noise averaged out; a latency that jumps as requests queue
  brings the limit down. A slow, steady rise is absorbed into the baseline: back-pressure is
  the firm brake.
- Back-pressure (429, 503, timeouts, connection errors): the limit is multiplied by
  ``backpressure_ratio`` at once, at most once per window, so a burst of refusals from one
  volley halves it once rather than collapsing it to 1.

Until the first decrease the limit doubles per window instead of adding one (TCP's slow start):
at 150 ms per round trip, climbing from 1 to 32 takes six windows instead of thirty-two.

The controller is pure: no I/O, no tasks, time only from the injected ``clock``. The caller
reads :attr:`AdaptiveConcurrency.limit` before it starts a request and reports each finished
request with :meth:`AdaptiveConcurrency.record`.

>>> now = 0.0
>>> aimd = AdaptiveConcurrency(8, clock=lambda: now)
>>> for _ in range(6):  # six round trips of 150 ms, every slot in use
...     now += 0.15
...     for _ in range(aimd.limit):
...         aimd.record(0.15, Signal.OK)
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
    rtt_tolerance: float = 1.0
    """...and by at least this fraction of it, so a long tail on a steady link is not a rise."""
    min_samples: int = 4
    """A window closes only with this many answers in it (or a refusal): the mean of one or two
    round trips of a long-tailed latency is noise, not a trend."""

    def __post_init__(self) -> None:
        for name in ("backpressure_ratio", "rtt_decrease_ratio", "ewma_alpha"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"{name} must be between 0 and 1")
        for name in ("rtt_deviation_scale", "rtt_tolerance"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.min_samples < 1:
            raise ValueError("min_samples must be at least 1")


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
        "_window_squares",
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
        self._window_squares = 0.0
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
        if self._window_end is not None and now >= self._window_end and self._window_ripe():
            self._close_window(now)
        if signal is Signal.OK:
            self._window_sum += rtt
            self._window_squares += rtt * rtt
            self._window_count += 1
            if self._baseline is None and self._window_count >= self._enough():
                # The first answers are the baseline, and open the first window.
                self._baseline = _Baseline(self._window_sum / self._window_count)
                self._window_sum, self._window_squares, self._window_count = 0.0, 0.0, 0
                self._window_backpressure = False
                self._window_end = now + self._baseline.mean
                return
        elif signal is Signal.BACKPRESSURE and not self._window_backpressure:
            self._window_backpressure = True
            self._decrease(self._settings.backpressure_ratio)
        elif signal is Signal.OTHER:
            return
        if self._window_end is None:
            # No baseline yet: this answer's round trip is the best guess at a window.
            self._window_end = now + rtt

    def _window_ripe(self) -> bool:
        """Enough answers to judge the RTT by (one or two are mostly noise), or a refusal
        that must not be counted twice."""
        return self._window_count >= self._enough() or self._window_backpressure

    def _enough(self) -> int:
        # At a low limit a round trip brings fewer answers than min_samples: wait for no more
        # than one round trip's worth.
        return min(self._settings.min_samples, self._limit)

    def _close_window(self, now: float) -> None:
        baseline = self._baseline
        if baseline is not None and self._window_count:
            current = self._window_sum / self._window_count
            if not self._window_backpressure:
                if self._rising(current, baseline):
                    self._decrease(self._settings.rtt_decrease_ratio)
                elif current <= baseline.mean + self._standard_error(current) or math.isclose(
                    current, baseline.mean
                ):
                    self._increase()
            baseline.update(current, self._settings.ewma_alpha)
        self._window_backpressure = False
        if baseline is None:
            # A window of refusals before any baseline: the answers so far still make it.
            self._window_end = None
            return
        self._window_end = now + baseline.mean
        self._window_sum = 0.0
        self._window_squares = 0.0
        self._window_count = 0

    def _standard_error(self, mean: float) -> float:
        """How far this window's mean RTT may sit above the baseline by chance alone."""
        n = self._window_count
        variance = max(0.0, self._window_squares / n - mean * mean)
        return math.sqrt(variance / n)

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
