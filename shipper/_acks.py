"""Acks ride on the next claim: one transaction marks the delivered batches done and leases
the next events.

With several batches in flight the spool's one connection is the shipper's busiest part
(docs/performance.md), and a transaction's fixed costs (the hand-off to its thread, BEGIN,
COMMIT and the WAL write) are much of what an ack costs. A batch whose upload succeeded
frees its slot and queues its ack; the claim that fills the slot carries it. When no claim
comes within a moment (nothing left to claim, the shipper stopping) the acks are written on
their own. Either way a batch's :meth:`AckWriter.ack` returns only once its events are
committed done.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

__all__ = ["ACK_LINGER", "AckWriter"]

T = TypeVar("T")

# How long queued acks wait for a claim to carry them before they are written alone. A claim
# for the slot a batch just freed comes within a few turns of the loop.
ACK_LINGER = 0.001


class AckWriter:
    """``await writer.ack(seqs)`` returns once ``seqs`` are committed done; ``carry(run)``
    hands every queued ack to a transaction that the caller runs anyway."""

    def __init__(self, write: Callable[[list[int]], Awaitable[object]]) -> None:
        self._write = write
        self._queued: list[int] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._flushing: asyncio.Task[None] | None = None

    async def ack(self, seqs: Sequence[int]) -> None:
        """Queue ``seqs`` and wait for the transaction that commits them. A caller cancelled
        while it waits does not take its seqs back: they were delivered, and get written."""
        waiter = asyncio.get_running_loop().create_future()
        self._queued.extend(seqs)
        self._waiters.append(waiter)
        self._schedule_flush()
        await waiter

    async def carry(self, run: Callable[[list[int]], Awaitable[T]]) -> T:
        """``await run(acked)`` with every queued ack; its waiters learn how it ended. If it is
        cancelled (its transaction rolled back, or not) the acks are queued again."""
        seqs, waiters = self._take()
        try:
            result = await run(seqs)
        except asyncio.CancelledError:
            self._queued[:0] = seqs
            self._waiters[:0] = waiters
            self._schedule_flush()
            raise
        except Exception as exc:
            _settle(waiters, exc)
            raise
        _settle(waiters, None)
        return result

    async def wait_idle(self) -> None:
        """Until everything queued so far is written (or has failed)."""
        while self._flushing is not None:
            await asyncio.shield(self._flushing)

    def _take(self) -> tuple[list[int], list[asyncio.Future[None]]]:
        seqs, self._queued = self._queued, []
        waiters, self._waiters = self._waiters, []
        return seqs, waiters

    def _schedule_flush(self) -> None:
        if self._flushing is None and self._waiters:
            self._flushing = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        try:
            await asyncio.sleep(ACK_LINGER)
            while self._waiters:
                seqs, waiters = self._take()
                try:
                    await self._write(seqs)
                except asyncio.CancelledError:
                    for waiter in waiters:
                        waiter.cancel()
                    raise
                except Exception as exc:
                    _settle(waiters, exc)
                else:
                    _settle(waiters, None)
        finally:
            self._flushing = None


def _settle(waiters: list[asyncio.Future[None]], exc: Exception | None) -> None:
    for waiter in waiters:
        if waiter.done():  # its batch was cancelled while it waited
            continue
        if exc is None:
            waiter.set_result(None)
        else:
            waiter.set_exception(exc)
