"""The retry policy: one set of tenacity values for every decision about a failed upload.

>>> policy = RetryPolicy.from_config(ShipperConfig(backoff_initial=0.4, backoff_max=20))
>>> tried = await policy.run(upload_once, prior=0, stopping=stopping, sleep=asyncio.sleep)
>>> tried.verdict.action, tried.next_wait

- **wait**: exponential backoff with jitter (``backoff_initial`` doubling up to
  ``backoff_max``), counted from the first attempt ever made on the events (attempts persisted
  by an earlier run resume the schedule), and never less than the endpoint's ``Retry-After``
  (capped at ``retry_after_cap``). The same value is what a run that gives up persists as the
  events' next attempt, so a restart honours exactly what tenacity would have waited.
- **stop**: the shipper stopping, a drain's patience, or a server error that persists on the
  same content (see :meth:`RetryPolicy.splits`).
- **before sleep**: the caller's hook, which persists the failure before the wait begins.

Waits are bounded by :attr:`RetryPolicy.max_wait`, which the spool also uses to tell a wait
that a wall-clock step made absurd from a real one (``ops.claim(max_wait=...)``).
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from tenacity import AsyncRetrying, RetryCallState, retry_if_result, stop_after_attempt
from tenacity.stop import stop_base
from tenacity.wait import wait_base, wait_exponential_jitter

from .classify import Action, Verdict
from .config import ShipperConfig

__all__ = [
    "SERVER_ERRORS_BEFORE_SPLIT",
    "RetryPolicy",
    "Tried",
    "stop_on_persistent_server_error",
    "stop_when_set",
    "wait_retry_after",
]

# A batch that gets a server error (see RetryPolicy.splits) this many times in a row is split
# like a refused one: a few spans whose content makes the endpoint fail must not hold back the
# rest of their batch.
SERVER_ERRORS_BEFORE_SPLIT = 3
# Server errors that say "overloaded" or "away", not "this content": never split for them.
_OVERLOADED = frozenset({502, 503, 504})

Sleep = Callable[[float], Awaitable[None]]


class _Flag(Protocol):
    def is_set(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class Tried:
    """How a run of attempts ended: the last verdict and, when the run gave up on a retryable
    failure, the wait the policy sets before the next attempt (to persist)."""

    verdict: Verdict
    next_wait: float = 0.0


def _last_verdict(state: RetryCallState) -> Verdict:
    assert state.outcome is not None
    tried: Tried = state.outcome.result()
    return tried.verdict


class wait_retry_after(wait_base):
    """``backoff`` for the attempt number counted from the first attempt ever made (``prior``
    attempts were persisted by earlier runs), never less than the endpoint's Retry-After,
    itself capped at ``cap``."""

    def __init__(self, backoff: wait_base, cap: float, prior: int = 0) -> None:
        self.backoff, self.cap, self.prior = backoff, cap, prior

    def __call__(self, retry_state: RetryCallState) -> float:
        resumed = copy.copy(retry_state)
        resumed.attempt_number = retry_state.attempt_number + self.prior
        wait = float(self.backoff(resumed))
        retry_after = _last_verdict(retry_state).retry_after
        return wait if retry_after is None else max(wait, min(retry_after, self.cap))


class stop_when_set(stop_base):
    """Stop once ``flag`` is set (tenacity's ``stop_when_event_set`` for an asyncio.Event)."""

    def __init__(self, flag: _Flag) -> None:
        self.flag = flag

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.flag.is_set()


class stop_on_persistent_server_error(stop_base):
    """Stop after ``attempts`` attempts when the last answer is a server error that the
    content may cause (:meth:`RetryPolicy.splits`)."""

    def __init__(self, attempts: int) -> None:
        self.attempts = attempts

    def __call__(self, retry_state: RetryCallState) -> bool:
        return retry_state.attempt_number >= self.attempts and RetryPolicy.splits(
            _last_verdict(retry_state)
        )


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Waits, stops and the age limit of retried events, from a :class:`ShipperConfig`."""

    backoff_initial: float
    backoff_max: float
    retry_after_cap: float
    max_age: float

    @classmethod
    def from_config(cls, config: ShipperConfig) -> RetryPolicy:
        return cls(
            config.backoff_initial, config.backoff_max, config.retry_after_cap, config.max_age
        )

    @property
    def max_wait(self) -> float:
        """The longest wait this policy sets between two attempts."""
        return max(self.backoff_max, self.retry_after_cap)

    def wait(self, prior: int = 0) -> wait_base:
        backoff = wait_exponential_jitter(
            multiplier=self.backoff_initial, max=self.backoff_max, jitter=self.backoff_initial
        )
        return wait_retry_after(backoff, self.retry_after_cap, prior)

    async def run(
        self,
        attempt: Callable[[], Awaitable[Verdict]],
        *,
        first: Verdict | None = None,
        prior: int,
        stopping: _Flag,
        sleep: Sleep,
        patience: int | None = None,
        splittable: bool = False,
        before_sleep: Callable[[RetryCallState], Awaitable[None]] | None = None,
    ) -> Tried:
        """Call ``attempt`` until it is not retryable or a stop applies: ``stopping`` set,
        ``patience`` attempts made, or (``splittable``) a persistent server error.

        ``first``: the verdict of an attempt the caller already made, which counts as attempt
        1 (the same numbering, waits and stops as if tenacity had made it). Callers make the
        first attempt themselves because most batches succeed at once, and building
        tenacity's machinery for each costs a sixth of the loop's time per batch."""
        wait = self.wait(prior)
        stop: stop_base = stop_when_set(stopping)
        if patience is not None:
            stop = stop | stop_after_attempt(patience)
        if splittable:
            stop = stop | stop_on_persistent_server_error(SERVER_ERRORS_BEFORE_SPLIT)

        replay = [] if first is None else [first]

        async def tried() -> Tried:
            return Tried(replay.pop() if replay else await attempt())

        retrying = AsyncRetrying(
            sleep=sleep,
            stop=stop,
            wait=wait,
            retry=retry_if_result(lambda t: self.retryable(t.verdict)),
            before_sleep=before_sleep,
            retry_error_callback=lambda state: Tried(_last_verdict(state), wait(state)),
        )
        result: Tried = await retrying(tried)
        return result

    def failing_for(self, attempts: int) -> float:
        """The least time ``attempts`` persisted failures waited in backoff (jitter and
        Retry-After only add to it): how long an event has been failing, by a measure that a
        step of the wall clock cannot fake."""
        total, wait = 0.0, self.backoff_initial
        for done in range(attempts):
            if wait >= self.backoff_max:
                return total + self.backoff_max * (attempts - done)
            total += wait
            wait *= 2
        return total

    def expired(self, age: float, attempts: int, waited: float) -> bool:
        """An event is too old to retry when it was spooled ``max_age`` ago by the wall clock
        *and* has been failing that long: ``failing_for(attempts)`` persisted by earlier runs
        plus ``waited`` in this one. A clock stepped forward cannot age fresh events."""
        return age >= self.max_age and self.failing_for(attempts) + waited >= self.max_age

    @staticmethod
    def retryable(verdict: Verdict) -> bool:
        return verdict.action in (Action.RETRY, Action.PAUSE)

    @staticmethod
    def splits(verdict: Verdict) -> bool:
        """A server error the content may cause (500, 501, 505...): persisting on one batch,
        it is split like a refused one. Not 502/503/504 (an overloaded or absent endpoint,
        where splitting would only multiply requests)."""
        status = verdict.status
        return (
            verdict.action is Action.RETRY
            and status is not None
            and 500 <= status < 600
            and status not in _OVERLOADED
        )
