"""The shipper's public face: open, run or drain, stop, close.

>>> shipper = Shipper("/var/lib/agent/spool.db", ShipperConfig.from_env())
>>> result = await shipper.drain(timeout=60)      # or: await shipper.run() until stop()
>>> result.exit_code
0

A thin shell over the parts that do the work, one module each:

- :mod:`shipper.dispatch`: claims batches into request slots, keeps their leases, housekeeping;
- :mod:`shipper.delivery`: uploads one batch and records how it ended (ack, bisection,
  dead-letter, retry);
- :mod:`shipper.retry`: the retry policy (tenacity's waits and stops, the age limit);
- :mod:`shipper.concurrency`: how many requests may be in flight;
- :mod:`shipper.upload`: the request itself.

Retries are tenacity's alone (the SDK's are off). Every failed attempt is persisted on the
events (attempts, next_attempt_at, last_error) while the shipper keeps their lease, so a
shipper that dies mid-backoff leaves events that nobody takes before their next attempt is due.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable

from spool import AsyncSpool, SpoolConfig, SpoolError, ops

from ._acks import AckWriter
from ._run import ConcurrencyControl, RunState, wait_for_event
from .concurrency import AdaptiveConcurrency
from .config import ShipperConfig
from .delivery import Delivery
from .dispatch import Dispatcher, Slots
from .metrics import ShipMetrics
from .results import DrainResult, Progress, StopReason
from .retry import RetryPolicy
from .upload import SGPUploader, Uploader

__all__ = ["DEADLINE_GRACE", "DRAIN_PATIENCE", "Shipper"]

log = logging.getLogger("shipper")

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]

# In drain, a batch that fails this many attempts in a row ends the drain (about a minute of
# backoff with the defaults): the endpoint is unreachable, or the credentials are refused.
DRAIN_PATIENCE = 8
# What a drain that reached its timeout still gives in-flight requests before releasing them.
DEADLINE_GRACE = 0.5


class Shipper:
    """Ships one spool. ``run()`` ships until ``stop()``; ``drain()`` until nothing is left.

    ``concurrency``: the controller of how many requests are in flight; by default an
    :class:`~shipper.concurrency.AdaptiveConcurrency` up to ``config.concurrency``, starting
    at one request and climbing as answers come back.
    """

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
        concurrency: ConcurrencyControl | None = None,
    ) -> None:
        self.spool_config = spool if isinstance(spool, SpoolConfig) else SpoolConfig.from_env(spool)
        self.config = config if config is not None else ShipperConfig.from_env()
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.concurrency: ConcurrencyControl = concurrency or AdaptiveConcurrency(
            self.config.concurrency
        )
        self.policy = RetryPolicy.from_config(self.config)
        self._uploader = uploader
        self._create = create
        self._clock = clock
        self._sleep: Sleep = sleep if sleep is not None else self._interruptible_sleep
        self._spool: AsyncSpool | None = None
        self._state = RunState()
        self._acks = AckWriter(
            lambda seqs: self.spool.run(ops.ack(seqs, self._clock(), owner=self.owner))
        )
        self._finished = asyncio.Event()
        self._serving = False

    # ---- tallies ------------------------------------------------------------------------
    @property
    def shipped(self) -> int:
        return self._state.shipped

    @property
    def dead_lettered(self) -> int:
        return self._state.dead_lettered

    @property
    def requests(self) -> int:
        return self._state.requests

    @property
    def metrics(self) -> ShipMetrics:
        """What this shipper counted (``run --metrics-addr``, the heartbeat)."""
        return self._state.metrics

    # ---- opening and closing ------------------------------------------------------------
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

    # ---- running ------------------------------------------------------------------------
    async def run(self, progress: Callable[[Progress], None] | None = None) -> None:
        """Ship forever, until :meth:`stop` (or a signal handler that calls it)."""
        self._state.progress = progress
        await self._serve(drain=False)

    async def drain(
        self,
        timeout: float | None = None,
        progress: Callable[[Progress], None] | None = None,
    ) -> DrainResult:
        """Ship until nothing is pending or leased, ``timeout`` passes, or shipping cannot go
        on (credentials refused, the endpoint unreachable or failing for a whole run of
        retries)."""
        state = self._state
        state.progress = progress
        state.patience = DRAIN_PATIENCE
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
        stopped = bool(pending or leased)
        return DrainResult(
            shipped=state.shipped,
            dead_lettered=state.dead_lettered,
            pending=pending,
            leased=leased,
            dead=stats.dead,
            elapsed=self._clock() - state.started_at,
            reason=state.reason if stopped else None,
            detail=state.detail if stopped else None,
            status=state.status if stopped else None,
        )

    async def stop(self, timeout: float = 10.0) -> None:
        """Finish in-flight batches within ``timeout``; release the rest back to the spool."""
        self._state.stop_timeout = timeout
        self._state.request_stop(StopReason.STOPPED)
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
        self._state.drain = True
        self._state.wakeup.set()
        if not await wait_for_event(self._finished, max(0.0, timeout - grace)):
            await self.stop(timeout=max(0.0, deadline - loop.time()) / 2)

    async def _deadline(self, timeout: float) -> None:
        await asyncio.sleep(timeout)
        state = self._state
        # Past the deadline, in-flight requests get only a moment before they are released.
        state.stop_timeout = min(state.stop_timeout, DEADLINE_GRACE)
        if state.blocked is not None:
            state.request_stop(StopReason.AUTH, state.blocked)
        else:
            state.request_stop(StopReason.TIMEOUT, f"after {timeout:g}s")

    async def _serve(self, *, drain: bool) -> None:
        await self.open()
        assert self._uploader is not None
        state = self._state
        state.drain = drain
        state.started_at = self._clock()
        self._serving = True
        self._finished.clear()
        slots = Slots(lambda: self.concurrency.limit, state.wakeup)
        delivery = Delivery(
            self.spool,
            self.config,
            owner=self.owner,
            clock=self._clock,
            sleep=self._sleep,
            uploader=self._uploader,
            policy=self.policy,
            state=state,
            acks=self._acks,
            controller=self.concurrency,
            free_slot=slots.release,
        )
        dispatcher = Dispatcher(
            self.spool,
            self.spool_config,
            self.config,
            owner=self.owner,
            clock=self._clock,
            state=state,
            acks=self._acks,
            slots=slots,
            policy=self.policy,
            ship=delivery.ship,
        )
        try:
            pending, leased, _ = await self.spool.run(ops.outstanding(), write=False)
            state.remaining = pending + leased
            log.info(
                "shipper started owner=%s spool=%s pending=%d leased=%d",
                self.owner, self.spool_config.path, pending, leased,
            )  # fmt: skip
            await dispatcher.serve()
        except SpoolError:
            raise  # the spool's own error names the path and the remedy: the caller reports it
        except Exception:
            log.exception("shipper failed owner=%s", self.owner)
            raise
        finally:
            self._serving = False
            self._finished.set()
            log.info(
                "shipper stopped owner=%s shipped=%d dead_lettered=%d requests=%d",
                self.owner, state.shipped, state.dead_lettered, state.requests,
            )  # fmt: skip

    async def _interruptible_sleep(self, seconds: float) -> None:
        await wait_for_event(self._state.stopping, seconds)
