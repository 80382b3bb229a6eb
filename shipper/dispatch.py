"""Dispatch: claim ready events into batches, one per free request slot, and keep their leases.

The number of slots is the adaptive controller's ``limit`` (:mod:`shipper.concurrency`),
read again whenever a slot is wanted. One claim fills every free slot: the spool's round trip
(a thread hand-off) is paid once for several batches. A partial batch lingers briefly for
company; an idle dispatcher waits for an append (``PRAGMA data_version``, or another
process's notification), a freed slot, the next due backoff, or at most :data:`MAX_IDLE`.

While a batch is held (in flight, in a backoff wait, being bisected) its lease is renewed
before it runs out, so no other shipper takes events whose answer is still to come. Pruning
done rows and checkpointing the WAL run between claims.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from spool import AsyncSpool, ClaimedEvent, SpoolConfig, SpoolError, ops, watch_appends

from ._acks import AckWriter
from ._run import RunState, wait_for_event
from .config import ShipperConfig
from .retry import RetryPolicy
from .upload import batch_body, split_batches

__all__ = ["MAX_IDLE", "PRUNE_CHUNK", "Dispatcher", "Slots"]

log = logging.getLogger("shipper")

Clock = Callable[[], float]

# How long an idle shipper goes without claiming, so expired leases of a dead shipper and
# events whose backoff ended are picked up even when nothing else changes.
MAX_IDLE = 5.0
PRUNE_CHUNK = 10_000


class Slots:
    """Request slots: a batch task holds one from its claim until its upload succeeded (or it
    was handed on to bisection); how many exist is ``limit()``, read at each use."""

    def __init__(self, limit: Callable[[], int], changed: asyncio.Event) -> None:
        self._limit = limit
        self._changed = changed
        self.holding: set[asyncio.Task[None]] = set()

    def free(self) -> int:
        return max(0, self._limit() - len(self.holding))

    def hold(self, task: asyncio.Task[None]) -> None:
        self.holding.add(task)

    def release(self, task: asyncio.Task[None] | None = None) -> None:
        """Give up ``task``'s slot (the current task's by default) and wake the dispatcher:
        the claim that fills it can carry the batch's ack."""
        task = task or asyncio.current_task()
        if task is not None and task in self.holding:
            self.holding.discard(task)
            self._changed.set()


@dataclass(slots=True)
class _Held:
    """A claimed batch's events and when their lease (as this shipper last wrote it) ends."""

    seqs: list[int]
    expires: float


class Dispatcher:
    """Claims and starts batches until the run stops, or (in a drain) nothing is left."""

    def __init__(
        self,
        spool: AsyncSpool,
        spool_config: SpoolConfig,
        config: ShipperConfig,
        *,
        owner: str,
        clock: Clock,
        state: RunState,
        acks: AckWriter,
        slots: Slots,
        policy: RetryPolicy,
        ship: Callable[[list[ClaimedEvent]], Coroutine[Any, Any, None]],
    ) -> None:
        self.spool, self.spool_config, self.config = spool, spool_config, config
        self.owner, self.clock, self.state = owner, clock, state
        self.acks, self.slots, self.policy, self.ship = acks, slots, policy, ship
        self.inflight: dict[asyncio.Task[None], _Held] = {}
        self._next_prune = 0.0
        self._next_checkpoint = 0.0
        self._claimed_at = -math.inf
        """The clock when the last claim looked for ready events."""

    # ---- the loop -----------------------------------------------------------------------
    async def serve(self) -> None:
        """Claim and start batches until the run stops; then finish what is in flight."""
        state = self.state
        loop = asyncio.get_running_loop()
        unwatch = watch_appends(self.spool_config, lambda: _set_threadsafe(loop, state.wakeup))
        renewing = asyncio.create_task(self._renew_leases())
        try:
            while not state.stopping.is_set():
                state.metrics.tick()
                await self._housekeeping()
                await state.unpaused.wait()
                free = await self._free_slots()
                if not free:
                    break
                size, max_bytes = self.config.batch_size, self.config.batch_max_bytes
                events = await self._claim_up_to(size * free, max_bytes * free)
                batches = split_batches(events, size, max_bytes)
                if not batches:
                    if await self._idle():
                        break
                    continue
                # Batches cut by bytes can outnumber the free slots: the rest go back as
                # they were, for the next claim.
                await self._release(batches[free:])
                batches = batches[:free]
                partial = batches.pop() if _room(batches[-1], self.config) else None
                for batch in batches:
                    self._start(batch)
                if partial is not None:
                    self._start(await self._fill(partial))
        finally:
            try:
                await self._finish()
            finally:
                renewing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await renewing
                unwatch()

    async def _free_slots(self) -> int:
        """How many slots are free, once at least one is; 0 as soon as the run is stopping
        (every slot may be held by a request to a hung endpoint)."""
        state = self.state
        while not state.stopping.is_set():
            free = self.slots.free()
            if free:
                return free
            state.wakeup.clear()
            await state.wakeup.wait()
        return 0

    def _start(self, events: list[ClaimedEvent]) -> None:
        task = asyncio.create_task(self.ship(events))
        self.inflight[task] = _Held(
            [e.seq for e in events], self.clock() + self.config.lease_seconds
        )
        self.slots.hold(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self.inflight.pop(task, None)
        self.slots.release(task)
        self.state.wakeup.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("batch failed unexpectedly", exc_info=task.exception())

    async def _fill(self, events: list[ClaimedEvent]) -> list[ClaimedEvent]:
        size = self.config.batch_size
        state = self.state
        if state.drain or self.config.linger <= 0:
            return events
        # A partial batch waits a little for company: fewer, fuller requests.
        until = self.clock() + self.config.linger
        max_bytes = self.config.batch_max_bytes
        while _room(events, self.config) and not (state.stopping.is_set() or state.drain):
            left = until - self.clock()
            if left <= 0:
                break
            await wait_for_event(state.wakeup, min(left, self.config.poll_interval))
            room = max_bytes - _body_length(events)
            events += await self._claim_up_to(size - len(events), room)
        # The oldest event is claimed even when it does not fit: it goes back.
        fits, *over = split_batches(events, size, max_bytes)
        await self._release(over)
        return fits

    async def _release(self, batches: list[list[ClaimedEvent]]) -> None:
        seqs = [e.seq for batch in batches for e in batch]
        if seqs:
            await self.spool.run(ops.release(seqs, self.owner))

    async def _claim_up_to(self, limit: int, max_bytes: int) -> list[ClaimedEvent]:
        self.state.wakeup.clear()
        lease, max_wait, start_delay = (
            self.config.lease_seconds,
            self.policy.max_wait,
            self._start_delay(),
        )

        def run(acked: list[int]) -> Coroutine[Any, Any, list[ClaimedEvent]]:
            now = self._claimed_at = self.clock()
            claim = ops.claim(
                self.owner,
                limit,
                lease,
                now,
                max_wait=max_wait,
                start_delay=start_delay,
                max_bytes=max_bytes,
            )
            return self.spool.run(ops.ack_then(acked, now, self.owner, claim))

        return await self.acks.carry(run)

    def _start_delay(self) -> float:
        """A drain ships every start now: nothing is to be gained by waiting for its end."""
        return 0.0 if self.state.drain else self.config.start_delay

    async def _idle(self) -> bool:
        """Wait for work. True when a drain is complete."""
        state = self.state
        pending, leased, due = await self.spool.run(
            ops.outstanding(self._start_delay()), write=False
        )
        state.remaining = pending + leased
        if state.drain and not self.inflight and not pending and not leased:
            return True
        version = await self.spool.data_version()
        now = self.clock()
        give_up_at = now + MAX_IDLE
        if due is not None and pending and self._claimed_at < due <= now:
            return False  # it came due after the last claim looked (a start's delay ran out)
        # A due time that was past when the last claim looked belongs to events held back for
        # a reason other than time (an end whose start is in flight): a finishing batch wakes
        # us for those, not a timer.
        if due is None or not pending or due <= now:
            due = math.inf
        while not state.stopping.is_set():
            state.metrics.tick()
            now = self.clock()
            housekeeping = min(self._next_prune, self._next_checkpoint)
            timeout = min(
                self.config.poll_interval, give_up_at - now, due - now, housekeeping - now
            )
            if timeout <= 0 or await wait_for_event(state.wakeup, timeout):
                return False
            if await self.spool.data_version() != version:
                return False
        return False

    async def _finish(self) -> None:
        """Give in-flight batches ``stop_timeout`` to finish; cancel (and so release) the rest."""
        if self.inflight:
            _, late = await asyncio.wait(set(self.inflight), timeout=self.state.stop_timeout)
            for task in late:
                task.cancel()
            if late:
                await asyncio.gather(*late, return_exceptions=True)
        # A batch cancelled while its ack was queued leaves the ack to be written.
        await self.acks.wait_idle()
        metrics = self.state.metrics
        with contextlib.suppress(SpoolError):  # a broken spool is reported elsewhere
            await metrics.write(self.spool, metrics.take())

    # ---- leases -------------------------------------------------------------------------
    async def _renew_leases(self) -> None:
        """Renew the lease of every held batch once half of it is gone (or it lies further
        ahead than any lease this shipper writes: the wall clock stepped back)."""
        lease = self.config.lease_seconds
        horizon = lease + self.policy.max_wait
        every = min(max(self.config.poll_interval, 0.01), lease / 4)
        while not await wait_for_event(self.state.stopping, every):
            now = self.clock()
            due = [
                held
                for held in self.inflight.values()
                if not lease / 2 <= held.expires - now <= horizon
            ]
            if not due:
                continue
            seqs = [seq for held in due for seq in held.seqs]
            # Acked and dead events are no longer leased: renewing skips them, as it skips
            # leases that already cover a backoff wait.
            try:
                await self.spool.run(
                    ops.extend_leases(seqs, self.owner, now + lease, now + horizon)
                )
            except Exception:
                # The spool is busy or failing: the next turn tries again, and the batches'
                # own writes report what is wrong.
                log.warning("lease renewal failed n=%d", len(seqs), exc_info=True)
                continue
            for held in due:
                held.expires = now + lease
            log.debug("renewed leases n=%d", len(seqs))

    # ---- housekeeping -------------------------------------------------------------------
    async def _housekeeping(self) -> None:
        now = self.clock()
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
        metrics = self.state.metrics
        await metrics.write(self.spool, metrics.due())


def _body_length(events: list[ClaimedEvent]) -> int:
    return len(batch_body([])) + sum(len(e.payload) for e in events) + max(0, len(events) - 1)


def _room(events: list[ClaimedEvent], config: ShipperConfig) -> bool:
    """Whether a batch has room for one more event, by count and by bytes."""
    return len(events) < config.batch_size and _body_length(events) < config.batch_max_bytes


def _set_threadsafe(loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> None:
    with contextlib.suppress(RuntimeError):  # the loop has closed
        loop.call_soon_threadsafe(event.set)
