"""The ship loop: claim batches from the spool, upload them, ack, retry, isolate, dead-letter.

>>> shipper = Shipper("/var/lib/agent/spool.db", ShipperConfig.from_env())
>>> result = await shipper.drain(timeout=60)      # or: await shipper.run() until stop()
>>> result.exit_code
0

Retries are tenacity's alone (the SDK's are off). Every failed attempt is persisted on the
events (attempts, next_attempt_at, last_error) while the shipper keeps their lease, so a
shipper that dies mid-backoff leaves events that nobody takes before their next attempt is due.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import functools
import logging
import math
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from tenacity import AsyncRetrying, RetryCallState, retry_if_result, wait_exponential_jitter

from spool import (
    AsyncSpool,
    ClaimedEvent,
    MetaKey,
    SpoolConfig,
    SpoolError,
    ops,
    watch_appends,
)

from ._acks import AckWriter
from .classify import ACKED, Action, Verdict, classify
from .config import ShipperConfig
from .metrics import ShipMetrics, error_meta
from .results import DrainResult, Progress, StopReason
from .upload import SGPUploader, Uploader, batch_body

__all__ = ["Shipper"]

log = logging.getLogger("shipper")

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]

# In drain, a batch that fails this many attempts in a row ends the drain (about a minute of
# backoff with the defaults): the endpoint is unreachable, or the credentials are refused.
DRAIN_PATIENCE = 8
# What a drain that reached its timeout still gives in-flight requests before releasing them.
DEADLINE_GRACE = 0.5
# How long an idle shipper goes without claiming, so expired leases of a dead shipper and
# events whose backoff ended are picked up even when nothing else changes.
MAX_IDLE = 5.0
PRUNE_CHUNK = 10_000


@dataclass(slots=True)
class _Batch:
    """Events in flight together; shrinks when events age out during retries."""

    events: list[ClaimedEvent]
    attempts: int = 0
    # Failed attempts already written to the spool (before each backoff wait).
    persisted: int = 0
    verdicts: list[Verdict] = field(default_factory=list)

    @property
    def prior_attempts(self) -> int:
        """Attempts made before this shipper claimed the events (a restart resumes there)."""
        return min((e.attempts for e in self.events), default=0)

    @property
    def seqs(self) -> list[int]:
        return [e.seq for e in self.events]


class Shipper:
    """Ships one spool. ``run()`` ships until ``stop()``; ``drain()`` until nothing is left."""

    def __init__(
        self,
        spool: SpoolConfig | str | os.PathLike[str],
        config: ShipperConfig | None = None,
        *,
        uploader: Uploader | None = None,
        clock: Clock = time.time,
        sleep: Sleep | None = None,
        owner: str | None = None,
        create: bool = True,
    ) -> None:
        self.spool_config = spool if isinstance(spool, SpoolConfig) else SpoolConfig.from_env(spool)
        self.config = config if config is not None else ShipperConfig.from_env()
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._uploader = uploader
        self._create = create
        self._clock = clock
        self._sleep: Sleep = sleep if sleep is not None else self._interruptible_sleep
        self._backoff = wait_exponential_jitter(
            multiplier=self.config.backoff_initial,
            max=self.config.backoff_max,
            jitter=self.config.backoff_initial,
        )
        self._spool: AsyncSpool | None = None
        self._stopping = asyncio.Event()
        self._wakeup = asyncio.Event()
        self._unpaused = asyncio.Event()
        self._unpaused.set()
        self._inflight: set[asyncio.Task[None]] = set()
        # Batches that still hold a concurrency slot: one whose upload succeeded gives it up
        # before its ack is written, so the claim that fills the slot can carry the ack.
        self._holding: set[asyncio.Task[None]] = set()
        self._slots: asyncio.Semaphore | None = None
        self._acks = AckWriter(lambda seqs: self.spool.run(ops.ack(seqs, self._clock())))
        self._finished = asyncio.Event()
        self._serving = False
        self._drain = False
        self._stop_timeout = 10.0
        self._stop_reason: StopReason | None = None
        self._stop_detail: str | None = None
        self._blocked: Verdict | None = None
        self._patience: int | None = None
        self._unwatch: Callable[[], None] | None = None
        self._progress: Callable[[Progress], None] | None = None
        self._started_at = 0.0
        self._remaining = 0
        self._recount_at = 0.0
        self._next_prune = 0.0
        self._next_checkpoint = 0.0
        self.shipped = 0
        self.dead_lettered = 0
        self.requests = 0
        self.metrics = ShipMetrics()

    # ---- lifecycle -------------------------------------------------------------------------
    async def __aenter__(self) -> Shipper:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def open(self) -> None:
        """Open the spool (and the SDK client); raises ``SpoolError``/``ShipperConfigError``."""
        if self._spool is None:
            self._spool = await AsyncSpool.open(self.spool_config, create=self._create)
        if self._uploader is None:
            try:
                self._uploader = SGPUploader(self.config)
            except BaseException:
                await self.aclose()
                raise

    async def aclose(self) -> None:
        if self._serving:
            await self.stop()
        if self._spool is not None:
            await self._spool.close()
            self._spool = None
        if self._uploader is not None:
            await self._uploader.aclose()

    @property
    def spool(self) -> AsyncSpool:
        if self._spool is None:
            raise RuntimeError("the shipper is not open: use 'async with Shipper(...)'")
        return self._spool

    async def run(self, progress: Callable[[Progress], None] | None = None) -> None:
        """Ship forever, until :meth:`stop` (or a signal handler that calls it)."""
        self._progress = progress
        await self._serve(drain=False)

    async def drain(
        self,
        timeout: float | None = None,
        progress: Callable[[Progress], None] | None = None,
    ) -> DrainResult:
        """Ship until nothing is pending or leased, ``timeout`` passes, or shipping cannot go
        on (credentials refused, endpoint unreachable for a whole run of retries)."""
        self._progress = progress
        self._patience = DRAIN_PATIENCE
        deadline_task = None
        if timeout is not None:
            deadline_task = asyncio.create_task(self._deadline(timeout))
        try:
            await self._serve(drain=True)
        finally:
            if deadline_task is not None:
                deadline_task.cancel()
        pending, leased, _ = await self.spool.run(ops.outstanding(), write=False)
        stats = await self.spool.stats()
        reason = self._stop_reason if (pending or leased) else None
        return DrainResult(
            shipped=self.shipped,
            dead_lettered=self.dead_lettered,
            pending=pending,
            leased=leased,
            dead=stats.dead,
            elapsed=self._clock() - self._started_at,
            reason=reason,
            detail=self._stop_detail if reason else None,
        )

    async def stop(self, timeout: float = 10.0) -> None:
        """Finish in-flight batches within ``timeout``; release the rest back to the spool."""
        self._stop_timeout = timeout
        self._request_stop(StopReason.STOPPED)
        if self._serving:
            await self._finished.wait()

    async def finish(self, timeout: float) -> None:
        """Turn a running :meth:`run` into a drain bounded by ``timeout``: ship what is
        pending, then stop; whatever is left when the time is up stays in the spool."""
        if not self._serving:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        # Keep a slice of the budget for finishing or releasing in-flight batches.
        grace = min(1.0, timeout / 4)
        self._drain = True
        self._wakeup.set()
        if not await self._wait(self._finished, max(0.0, timeout - grace)):
            await self.stop(timeout=max(0.0, deadline - loop.time()) / 2)

    def _request_stop(self, reason: StopReason, detail: str | None = None) -> None:
        if self._stop_reason is None:
            self._stop_reason = reason
            self._stop_detail = detail
        self._stopping.set()
        self._wakeup.set()
        self._unpaused.set()

    async def _deadline(self, timeout: float) -> None:
        await asyncio.sleep(timeout)
        # Past the deadline, in-flight requests get only a moment before they are released.
        self._stop_timeout = min(self._stop_timeout, DEADLINE_GRACE)
        blocked = self._blocked
        if blocked is not None:
            self._request_stop(StopReason.AUTH, blocked.describe())
        else:
            self._request_stop(StopReason.TIMEOUT, f"after {timeout:g}s")

    # ---- the dispatcher ---------------------------------------------------------------------
    async def _serve(self, *, drain: bool) -> None:
        await self.open()
        self._drain = drain
        self._serving = True
        self._finished.clear()
        self._started_at = self._clock()
        loop = asyncio.get_running_loop()
        self._unwatch = watch_appends(
            self.spool_config, lambda: _set_threadsafe(loop, self._wakeup)
        )
        slots = self._slots = asyncio.Semaphore(self.config.concurrency)
        try:
            pending, leased, _ = await self.spool.run(ops.outstanding(), write=False)
            self._remaining = pending + leased
            log.info(
                "shipper started owner=%s spool=%s pending=%d leased=%d",
                self.owner, self.spool_config.path, pending, leased,
            )  # fmt: skip
            while not self._stopping.is_set():
                self.metrics.tick()
                await self._housekeeping()
                await self._unpaused.wait()
                if not await self._acquire(slots):
                    break
                # One claim fills every slot that is free: the spool's round trip (a thread
                # hand-off) is paid once for several batches, not once per request.
                free = 1
                while not slots.locked():
                    await slots.acquire()
                    free += 1
                size = self.config.batch_size
                events = await self._claim_up_to(size * free)
                batches = [events[i : i + size] for i in range(0, len(events), size)]
                for _ in range(free - len(batches)):
                    slots.release()
                if not batches:
                    if await self._idle():
                        break
                    continue
                partial = batches.pop() if len(batches[-1]) < size else None
                for batch in batches:
                    self._start_batch(batch)
                if partial is not None:
                    self._start_batch(await self._fill(partial))
        except SpoolError:
            raise  # the spool's own error names the path and the remedy: the caller reports it
        except Exception:
            log.exception("shipper failed owner=%s", self.owner)
            raise
        finally:
            await self._finish()

    async def _acquire(self, slots: asyncio.Semaphore) -> bool:
        """Take a free slot, or give up as soon as the shipper is stopping (every slot may be
        held by a request to a hung endpoint)."""
        if not slots.locked():
            await slots.acquire()
            return not self._release_if_stopping(slots)
        acquire = asyncio.ensure_future(slots.acquire())
        stopping = asyncio.ensure_future(self._stopping.wait())
        await asyncio.wait({acquire, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not acquire.done():
            acquire.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await acquire
            return False
        return not self._release_if_stopping(slots)

    def _release_if_stopping(self, slots: asyncio.Semaphore) -> bool:
        if self._stopping.is_set():
            slots.release()
            return True
        return False

    def _start_batch(self, events: list[ClaimedEvent]) -> None:
        task = asyncio.create_task(self._ship_batch(events))
        self._inflight.add(task)
        self._holding.add(task)
        task.add_done_callback(self._batch_done)

    def _free_slot(self, task: asyncio.Task[None] | None) -> None:
        if task in self._holding and self._slots is not None:
            self._holding.discard(task)
            self._slots.release()
            self._wakeup.set()

    async def _fill(self, events: list[ClaimedEvent]) -> list[ClaimedEvent]:
        size = self.config.batch_size
        if self._drain or self.config.linger <= 0:
            return events
        # A partial batch waits a little for company: fewer, fuller requests.
        until = self._clock() + self.config.linger
        while len(events) < size and not (self._stopping.is_set() or self._drain):
            left = until - self._clock()
            if left <= 0:
                break
            await self._wait(self._wakeup, min(left, self.config.poll_interval))
            events += await self._claim_up_to(size - len(events))
        return events

    async def _claim_up_to(self, limit: int) -> list[ClaimedEvent]:
        self._wakeup.clear()
        lease = self.config.lease_seconds
        return await self._acks.carry(
            lambda acked: self.spool.run(
                ops.ack_and_claim(acked, self.owner, limit, lease, self._clock())
            )
        )

    async def _idle(self) -> bool:
        """Wait for work. True when a drain is complete."""
        pending, leased, due = await self.spool.run(ops.outstanding(), write=False)
        self._remaining = pending + leased
        if self._drain and not self._inflight and not pending and not leased:
            return True
        version = await self.spool.data_version()
        give_up_at = self._clock() + MAX_IDLE
        # A due time already past belongs to events held back for a reason other than backoff
        # (an end whose start is in flight): a finishing batch wakes us for those, not a timer.
        if due is None or not pending or due <= self._clock():
            due = math.inf
        while not self._stopping.is_set():
            self.metrics.tick()
            now = self._clock()
            housekeeping = min(self._next_prune, self._next_checkpoint)
            timeout = min(
                self.config.poll_interval, give_up_at - now, due - now, housekeeping - now
            )
            if timeout <= 0 or await self._wait(self._wakeup, timeout):
                return False
            if await self.spool.data_version() != version:
                return False
        return False

    def _batch_done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._free_slot(task)
        self._wakeup.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("batch failed unexpectedly", exc_info=task.exception())

    async def _finish(self) -> None:
        try:
            if self._inflight:
                _, late = await asyncio.wait(set(self._inflight), timeout=self._stop_timeout)
                for task in late:
                    task.cancel()
                if late:
                    await asyncio.gather(*late, return_exceptions=True)
            # A batch cancelled while its ack was queued leaves the ack to be written.
            await self._acks.wait_idle()
            with contextlib.suppress(SpoolError):  # a broken spool is reported elsewhere
                await self.metrics.write(self.spool, self.metrics.take())
        finally:
            if self._unwatch is not None:
                self._unwatch()
                self._unwatch = None
            self._serving = False
            self._finished.set()
            log.info(
                "shipper stopped owner=%s shipped=%d dead_lettered=%d requests=%d",
                self.owner, self.shipped, self.dead_lettered, self.requests,
            )  # fmt: skip

    async def _housekeeping(self) -> None:
        now = self._clock()
        if now >= self._next_prune:
            self._next_prune = now + self.config.prune_interval
            cutoff = now - self.spool_config.retention
            pruned = await self.spool.run(ops.prune_done(cutoff, PRUNE_CHUNK))
            log.debug("prune cutoff=%.3f pruned=%d", cutoff, pruned)
            if pruned:
                log.info("pruned done=%d", pruned)
        if now >= self._next_checkpoint:
            self._next_checkpoint = now + self.config.checkpoint_interval
            await self.spool.checkpoint("PASSIVE")
        await self.metrics.write(self.spool, self.metrics.due())

    # ---- one batch ----------------------------------------------------------------------------
    async def _ship_batch(self, events: list[ClaimedEvent]) -> None:
        try:
            await self._deliver(_Batch(list(events)))
        except asyncio.CancelledError:
            await asyncio.shield(self._release(events))
            raise
        except Exception:
            await self._release(events)
            raise

    async def _deliver(self, batch: _Batch, claimed: list[int] | None = None) -> None:
        if claimed is not None:
            # Bisection sends request after request for one claim: keep all of it leased
            # (acked and dead events are no longer leased; renewing skips them).
            expires = self._clock() + self.config.lease_seconds
            await self.spool.run(ops.renew(claimed, self.owner, expires))
        verdict = await self._upload_with_retries(batch)
        if not batch.events:
            return
        if verdict.action is Action.ACK:
            if claimed is None:
                # The whole batch is delivered: its slot's next claim can carry this ack.
                self._free_slot(asyncio.current_task())
            await self._ack(batch.events)
        elif verdict.action in (Action.BISECT, Action.SPLIT):
            if len(batch.events) == 1:
                await self._dead_letter(batch.events, verdict)
            else:
                middle = len(batch.events) // 2
                claimed = claimed or batch.seqs
                await self._deliver(_Batch(batch.events[:middle]), claimed)
                await self._deliver(_Batch(batch.events[middle:]), claimed)
        elif verdict.action is Action.RETRY and batch.attempts > batch.persisted:
            # The run ended (patience, deadline) right after a failed request: count it.
            await self.spool.run(
                ops.fail(
                    batch.seqs,
                    self.owner,
                    self._clock() + self._next_backoff(batch),
                    verdict.describe(),
                )
            )
        else:  # stopped during a wait, or paused: hand them back as they are
            await self._release(batch.events)

    async def _upload_with_retries(self, batch: _Batch) -> Verdict:
        first = await self._attempt(batch)
        if not _is_retryable(first):
            # Delivered, or refused item by item: tenacity would hand this back untouched.
            # Building its machinery for every batch costs a sixth of the loop's time.
            return first
        replay = [first]

        async def attempt(batch: _Batch) -> Verdict:
            # Attempt 1 for tenacity is the one just made: the same numbering, waits,
            # persisted failures and stop checks as if tenacity had made it.
            return replay.pop() if replay else await self._attempt(batch)

        retrying = AsyncRetrying(
            sleep=self._sleep,
            stop=self._should_stop,
            wait=functools.partial(self._wait_time, batch=batch),
            retry=retry_if_result(_is_retryable),
            before_sleep=functools.partial(self._after_failure, batch=batch),
            retry_error_callback=_last_verdict,
        )
        verdict: Verdict = await retrying(attempt, batch)
        return verdict

    async def _attempt(self, batch: _Batch) -> Verdict:
        if not batch.events:
            return ACKED
        if self._stopping.is_set() and batch.attempts:
            return batch.verdicts[-1]
        batch.attempts += 1
        self.requests += 1
        assert self._uploader is not None
        started = time.perf_counter()
        try:
            await self._uploader.upload(batch_body([e.payload for e in batch.events]))
            verdict = ACKED
        except Exception as exc:
            verdict = self._redacted(classify(exc, self._clock()))
        self.metrics.request(verdict.status)
        batch.verdicts.append(verdict)
        if verdict.action is not Action.ACK:
            log.info(
                "upload failed n=%d attempt=%d action=%s %s in_ms=%.0f",
                len(batch.events), batch.attempts, verdict.action.value, verdict.describe(),
                (time.perf_counter() - started) * 1000,
            )  # fmt: skip
        return verdict

    def _redacted(self, verdict: Verdict) -> Verdict:
        """The endpoint's detail, minus our API key should it echo it: the detail is stored in
        the spool (last error, blocked reason) and logged."""
        key = self.config.api_key
        # A key too short to be a real one would mangle ordinary words.
        if key and len(key) >= 8 and key in verdict.detail:
            return dataclasses.replace(verdict, detail=verdict.detail.replace(key, "***"))
        return verdict

    def _should_stop(self, state: RetryCallState) -> bool:
        if self._stopping.is_set():
            return True
        if self._patience is not None and state.attempt_number >= self._patience:
            verdict = _last_verdict(state)
            reason = StopReason.AUTH if verdict.action is Action.PAUSE else StopReason.UNREACHABLE
            self._request_stop(reason, verdict.describe())
            return True
        return False

    def _next_backoff(self, batch: _Batch) -> float:
        attempts = batch.prior_attempts + batch.attempts
        return float(min(self.config.backoff_max, self.config.backoff_initial * 2**attempts))

    def _wait_time(self, state: RetryCallState, batch: _Batch) -> float:
        resumed = copy.copy(state)
        resumed.attempt_number = state.attempt_number + batch.prior_attempts
        backoff = self._backoff(resumed)
        retry_after = _last_verdict(state).retry_after
        if retry_after is None:
            return backoff
        return max(backoff, min(retry_after, self.config.retry_after_cap))

    async def _after_failure(self, state: RetryCallState, batch: _Batch) -> None:
        """Persist the failure before waiting, so a restart honours the same backoff."""
        verdict = _last_verdict(state)
        wait = state.upcoming_sleep
        now = self._clock()
        if verdict.action is Action.PAUSE:
            # Credentials: no attempt burned, nothing dead-lettered; everyone waits for a probe.
            if self._blocked is None:
                log.warning(
                    "blocked: credentials refused (%s); pausing shipping", verdict.describe()
                )
            self._blocked = verdict
            self._unpaused.clear()
            facts = {MetaKey.BLOCKED.value: verdict.describe()}
            await self.spool.run(ops.set_meta(facts | error_meta(verdict.describe(), now)))
            await self.spool.run(
                ops.renew(batch.seqs, self.owner, now + wait + self.config.lease_seconds)
            )
            return
        expired = [e for e in batch.events if now - e.enqueued_at >= self.config.max_age]
        if expired:
            batch.events = [e for e in batch.events if e not in expired]
            await self._dead_letter(expired, verdict, why="max_age exceeded after ")
        if batch.events:
            self.metrics.retry()
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
                len(batch.events), state.attempt_number, wait, verdict.describe(),
            )  # fmt: skip

    async def _ack(self, events: Sequence[ClaimedEvent]) -> None:
        await self._acks.ack([e.seq for e in events])
        self.shipped += len(events)
        self.metrics.delivered(len(events))
        self._remaining = max(0, self._remaining - len(events))
        if self._progress is not None and time.monotonic() >= self._recount_at:
            # Superseded starts leave without being shipped: recount now and then.
            self._recount_at = time.monotonic() + 0.5
            pending, leased, _ = await self.spool.run(ops.outstanding(), write=False)
            self._remaining = pending + leased
        if self._blocked is not None:
            log.info("resumed: credentials accepted again")
            self._blocked = None
            self._unpaused.set()
        log.debug("shipped n=%d", len(events))
        if self._progress is not None:
            self._progress(
                Progress(self.shipped, self._remaining, self._clock() - self._started_at)
            )

    async def _dead_letter(
        self, events: Sequence[ClaimedEvent], verdict: Verdict, why: str = ""
    ) -> None:
        reason = f"{why}{verdict.describe()}"
        await self.spool.run(ops.dead_letter({e.seq: reason for e in events}, self._clock()))
        await self.spool.run(ops.set_meta(error_meta(reason, self._clock())))
        self.dead_lettered += len(events)
        self._remaining = max(0, self._remaining - len(events))
        for event in events:
            log.warning(
                "dead-lettered seq=%d span_id=%s trace_id=%s kind=%s %s",
                event.seq, event.span_id, event.trace_id, event.kind.value, reason,
            )  # fmt: skip

    async def _release(self, events: Sequence[ClaimedEvent]) -> None:
        with contextlib.suppress(Exception):
            await self.spool.run(ops.release([e.seq for e in events], self.owner))

    # ---- waiting ----------------------------------------------------------------------------
    async def _interruptible_sleep(self, seconds: float) -> None:
        await self._wait(self._stopping, seconds)

    @staticmethod
    async def _wait(event: asyncio.Event, timeout: float) -> bool:
        """Wait for ``event`` up to ``timeout`` seconds; True if it was set."""
        try:
            async with asyncio.timeout(max(0.0, timeout)):
                await event.wait()
        except TimeoutError:
            return False
        return True


def _is_retryable(verdict: Verdict) -> bool:
    return verdict.action in (Action.RETRY, Action.PAUSE)


def _last_verdict(state: RetryCallState) -> Verdict:
    assert state.outcome is not None
    verdict: Verdict = state.outcome.result()
    return verdict


def _set_threadsafe(loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> None:
    with contextlib.suppress(RuntimeError):  # the loop has closed
        loop.call_soon_threadsafe(event.set)
