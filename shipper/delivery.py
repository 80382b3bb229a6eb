"""Delivery: one claimed batch from upload to its end in the spool.

=============================  ==============================================================
what the attempts came to      what happens to the batch
=============================  ==============================================================
2xx                            acked (done); its slot is freed first, so the next claim can
                               carry the ack
400, 409, 422 / 413            halved until the refused items stand alone; those are
                               dead-lettered, the rest delivered
the same server error on the   (500, 501, ...: :meth:`RetryPolicy.splits`) after
same batch, again and again    ``SERVER_ERRORS_BEFORE_SPLIT`` attempts, halved; the halves go
                               on side by side, without the slot, so the good events flow and
                               a lone bad one keeps retrying
transient (timeout, 429, 5xx)  retried by the policy; each failure persisted before its wait;
                               when the run of retries ends, the failure and the policy's next
                               wait are persisted and the events given back
401, 403                       shipping paused for everyone, no attempt burned; probed again
=============================  ==============================================================

Every request has a total deadline (``request_timeout``, and at most half the lease), not a
per-read timeout: an answer trickled byte by byte cannot hold a batch past its lease. Each
request's round-trip time and what its answer signals go to the concurrency controller.

An event retried ``max_age`` is dead-lettered, with age counted so that a wall-clock step
cannot fake it (:meth:`RetryPolicy.expired`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from tenacity import RetryCallState

from spool import AsyncSpool, ClaimedEvent, MetaKey, ops
from spool._text import printable

from ._acks import AckWriter
from ._redact import redact_verdict
from ._run import ConcurrencyControl, RunState
from .classify import ACKED, Action, Verdict, classify
from .concurrency import Signal
from .config import ShipperConfig
from .metrics import error_meta
from .results import Progress
from .retry import SERVER_ERRORS_BEFORE_SPLIT, RetryPolicy, Tried
from .upload import Uploader, batch_body

__all__ = ["Delivery", "request_deadline", "signal_of"]

log = logging.getLogger("shipper")

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]

_BACKPRESSURE = frozenset({429, 503})


def request_deadline(config: ShipperConfig) -> float:
    """The most one request may take, start to end: ``request_timeout``, but at most half the
    lease, so an answer always comes (or is given up) while the lease still holds."""
    return min(config.request_timeout, config.lease_seconds / 2)


def signal_of(verdict: Verdict) -> Signal:
    """What an answer tells the concurrency controller about the endpoint's load."""
    if verdict.action is Action.ACK:
        return Signal.OK
    if verdict.status is None or verdict.status in _BACKPRESSURE:
        return Signal.BACKPRESSURE  # a timeout, a connection error, 429, 503
    return Signal.OTHER


@dataclass(slots=True)
class _Batch:
    """Events in flight together; shrinks when events age out during retries."""

    events: list[ClaimedEvent]
    attempts: int = 0
    # Failed attempts already written to the spool (before each backoff wait).
    persisted: int = 0
    # Seconds of backoff this run has waited for the batch (for max_age).
    waited: float = 0.0
    verdicts: list[Verdict] = field(default_factory=list)

    @property
    def prior_attempts(self) -> int:
        """Attempts made before this shipper claimed the events (a restart resumes there)."""
        return min((e.attempts for e in self.events), default=0)

    @property
    def seqs(self) -> list[int]:
        return [e.seq for e in self.events]


class Delivery:
    """Uploads batches and records how each ended: ack, dead-letter, fail, release."""

    def __init__(
        self,
        spool: AsyncSpool,
        config: ShipperConfig,
        *,
        owner: str,
        clock: Clock,
        sleep: Sleep,
        uploader: Uploader,
        policy: RetryPolicy,
        state: RunState,
        acks: AckWriter,
        controller: ConcurrencyControl,
        free_slot: Callable[[], None],
    ) -> None:
        self.spool, self.config, self.owner, self.clock, self.sleep = (
            spool, config, owner, clock, sleep,
        )  # fmt: skip
        self.uploader, self.policy, self.state, self.acks = uploader, policy, state, acks
        self.controller, self.free_slot = controller, free_slot
        self.deadline = request_deadline(config)
        self._recount_at = 0.0

    async def ship(self, events: list[ClaimedEvent]) -> None:
        """Deliver one claimed batch; whatever is left when it is cancelled goes back."""
        try:
            await self._deliver(_Batch(list(events)), whole=True)
        except asyncio.CancelledError:
            await asyncio.shield(self._release(events))
            raise
        except Exception:
            await self._release(events)
            raise

    async def _deliver(self, batch: _Batch, *, whole: bool = False) -> None:
        tried = await self._upload_with_retries(batch)
        verdict = tried.verdict
        if not batch.events:
            return
        if verdict.action is Action.ACK:
            if whole:
                # The whole batch is delivered: its slot's next claim can carry this ack.
                self.free_slot()
            await self._ack(batch.events)
        elif verdict.action in (Action.BISECT, Action.SPLIT):
            if len(batch.events) == 1:
                await self._dead_letter(batch.events, verdict)
            else:
                first, second = _halves(batch)
                await self._deliver(first)
                await self._deliver(second)
        elif self._persistent_server_error(batch, verdict):
            if whole:
                self.free_slot()  # a lone bad event may retry a long time: not in a slot
            log.info("splitting n=%d after %d attempts: %s",
                     len(batch.events), batch.attempts, verdict.describe())  # fmt: skip
            await asyncio.gather(*(self._deliver(half) for half in _halves(batch)))
        elif verdict.action is Action.RETRY and batch.attempts > batch.persisted:
            # The run ended (patience, deadline) right after a failed request: count it, with
            # the wait the policy sets for the next attempt.
            await self.spool.run(
                ops.fail(batch.seqs, self.owner, self.clock() + tried.next_wait, verdict.describe())
            )
        else:  # stopped during a wait, or paused: hand them back as they are
            await self._release(batch.events)

    def _persistent_server_error(self, batch: _Batch, verdict: Verdict) -> bool:
        return (
            len(batch.events) > 1
            and batch.attempts >= SERVER_ERRORS_BEFORE_SPLIT
            and self.policy.splits(verdict)
            and not self.state.stopping.is_set()
        )

    async def _upload_with_retries(self, batch: _Batch) -> Tried:
        first = await self._attempt(batch)
        if not self.policy.retryable(first):
            return Tried(first)
        state = self.state
        tried = await self.policy.run(
            lambda: self._attempt(batch),
            first=first,
            prior=batch.prior_attempts,
            stopping=state.stopping,
            sleep=self.sleep,
            patience=state.patience,
            splittable=len(batch.events) > 1,
            before_sleep=functools.partial(self._after_failure, batch=batch),
        )
        if (
            state.patience is not None
            and batch.attempts >= state.patience
            and self.policy.retryable(tried.verdict)
        ):
            state.give_up(tried.verdict)
        return tried

    async def _attempt(self, batch: _Batch) -> Verdict:
        if not batch.events:
            return ACKED
        state = self.state
        if state.stopping.is_set() and batch.attempts:
            return batch.verdicts[-1]
        batch.attempts += 1
        state.requests += 1
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.deadline) as deadline:
                await self.uploader.upload(batch_body([e.payload for e in batch.events]))
            verdict = ACKED
        except TimeoutError as exc:
            if not deadline.expired():
                verdict = self._redacted(classify(exc, self.clock()))
            else:
                detail = f"timeout: no complete answer within {self.deadline:g}s"
                verdict = Verdict(Action.RETRY, None, detail)
        except Exception as exc:
            verdict = self._redacted(classify(exc, self.clock()))
        rtt = time.perf_counter() - started
        self.controller.record(rtt, signal_of(verdict))
        state.metrics.request(verdict.status)
        batch.verdicts.append(verdict)
        if verdict.action is not Action.ACK:
            log.info(
                "upload failed n=%d attempt=%d action=%s %s in_ms=%.0f",
                len(batch.events), batch.attempts, verdict.action.value, verdict.describe(),
                rtt * 1000,
            )  # fmt: skip
        return verdict

    def _redacted(self, verdict: Verdict) -> Verdict:
        """The endpoint's detail, minus our API key in any spelling it echoes: the detail is
        stored in the spool (last error, blocked reason) and logged."""
        return redact_verdict(verdict, self.config.api_key)

    async def _after_failure(self, retry: RetryCallState, batch: _Batch) -> None:
        """Persist the failure before waiting, so a restart honours the same backoff."""
        assert retry.outcome is not None
        verdict: Verdict = retry.outcome.result().verdict
        wait = retry.upcoming_sleep
        now = self.clock()
        state = self.state
        if verdict.action is Action.PAUSE:
            # Credentials: no attempt burned, nothing dead-lettered; everyone waits for a probe.
            if state.blocked is None:
                log.warning(
                    "blocked: credentials refused (%s); pausing shipping", verdict.describe()
                )
            state.blocked = verdict
            state.unpaused.clear()
            facts = {MetaKey.BLOCKED.value: verdict.describe()}
            await self.spool.run(ops.set_meta(facts | error_meta(verdict.describe(), now)))
            await self.spool.run(
                ops.renew(batch.seqs, self.owner, now + wait + self.config.lease_seconds)
            )
            return
        expired = [
            e
            for e in batch.events
            if self.policy.expired(now - e.enqueued_at, e.attempts, batch.waited)
        ]
        if expired:
            batch.events = [e for e in batch.events if e not in expired]
            await self._dead_letter(expired, verdict, why="max_age exceeded after ")
        batch.waited += wait
        if batch.events:
            state.metrics.retry()
            await self.spool.run(
                ops.retry_later(
                    batch.seqs,
                    self.owner,
                    next_attempt_at=now + wait,
                    error=verdict.describe(),
                    lease_seconds=self.config.lease_seconds,
                    now=now,
                )
            )
            batch.persisted = batch.attempts
            log.info(
                "retry n=%d attempt=%d wait_s=%.2f %s",
                len(batch.events), retry.attempt_number, wait, verdict.describe(),
            )  # fmt: skip

    # ---- how a batch ends ---------------------------------------------------------------
    async def _ack(self, events: Sequence[ClaimedEvent]) -> None:
        state = self.state
        await self.acks.ack([e.seq for e in events])
        state.shipped += len(events)
        state.metrics.delivered(len(events))
        state.remaining = max(0, state.remaining - len(events))
        if state.progress is not None and time.monotonic() >= self._recount_at:
            # Superseded starts leave without being shipped: recount now and then.
            self._recount_at = time.monotonic() + 0.5
            pending, leased, _ = await self.spool.run(ops.outstanding(), write=False)
            state.remaining = pending + leased
        if state.blocked is not None:
            log.info("resumed: credentials accepted again")
            state.blocked = None
            state.unpaused.set()
        log.debug("shipped n=%d", len(events))
        if state.progress is not None:
            elapsed = self.clock() - state.started_at
            state.progress(Progress(state.shipped, state.remaining, elapsed))

    async def _dead_letter(
        self, events: Sequence[ClaimedEvent], verdict: Verdict, why: str = ""
    ) -> None:
        reason = f"{why}{verdict.describe()}"
        reasons = {e.seq: reason for e in events}
        now = self.clock()
        moved = await self.spool.run(ops.dead_letter(reasons, now, owner=self.owner))
        await self.spool.run(ops.set_meta(error_meta(reason, now)))
        self.state.dead_lettered += moved
        self.state.remaining = max(0, self.state.remaining - moved)
        for event in events:
            log.warning(
                "dead-lettered seq=%d span_id=%s trace_id=%s kind=%s %s",
                event.seq, printable(event.span_id), printable(event.trace_id),
                event.kind.value, reason,
            )  # fmt: skip

    async def _release(self, events: Sequence[ClaimedEvent]) -> None:
        with contextlib.suppress(Exception):
            await self.spool.run(ops.release([e.seq for e in events], self.owner))


def _halves(batch: _Batch) -> tuple[_Batch, _Batch]:
    """Each half keeps the backoff its events have waited (for max_age)."""
    middle = len(batch.events) // 2
    return (
        _Batch(batch.events[:middle], waited=batch.waited),
        _Batch(batch.events[middle:], waited=batch.waited),
    )
