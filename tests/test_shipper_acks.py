"""Acks ride on the next claim (shipper._acks.AckWriter): who writes them, and what a waiting
batch learns. The write is a recording coroutine here; the spool side of it, ``ack_then``
in one transaction, is in test_spool_ops.py, and every shipper test runs through both."""

from __future__ import annotations

import asyncio

import pytest
from conftest import run_async

from shipper._acks import AckWriter
from spool import SpoolError


class Writes:
    """The ``write=`` of an AckWriter: records each call's seqs; can be made to fail."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []
        self.error: Exception | None = None

    async def __call__(self, seqs: list[int]) -> None:
        self.calls.append(seqs)
        if self.error is not None:
            raise self.error


async def queued(writer: AckWriter, *acks: list[int]) -> list[asyncio.Task[None]]:
    """Start one ``ack()`` per list and let each queue its seqs."""
    tasks = [asyncio.create_task(writer.ack(seqs)) for seqs in acks]
    await asyncio.sleep(0)  # one turn: each task runs up to its wait
    return tasks


def test_a_claim_carries_every_queued_ack_and_the_flush_writes_nothing() -> None:
    writes = Writes()

    async def main() -> list[int]:
        writer = AckWriter(writes)
        tasks = await queued(writer, [1, 2], [3])
        carried: list[int] = []

        async def claim(acked: list[int]) -> str:
            carried.extend(acked)
            return "claimed"

        assert await writer.carry(claim) == "claimed"
        await asyncio.gather(*tasks)
        await writer.wait_idle()
        return carried

    assert run_async(main()) == [1, 2, 3]
    assert writes.calls == []


def test_without_a_claim_the_queued_acks_are_written_together() -> None:
    writes = Writes()

    async def main() -> None:
        writer = AckWriter(writes)
        tasks = await queued(writer, [1], [2, 3])
        await asyncio.gather(*tasks)

    run_async(main())
    assert writes.calls == [[1, 2, 3]]


def test_a_failed_claim_fails_the_acks_it_carried() -> None:
    async def main() -> list[BaseException | None]:
        writer = AckWriter(Writes())
        tasks = await queued(writer, [1], [2])

        async def claim(acked: list[int]) -> None:
            raise SpoolError("/tmp/s.db", "disk I/O error")

        with pytest.raises(SpoolError):
            await writer.carry(claim)
        await asyncio.wait(tasks)
        return [t.exception() for t in tasks]

    errors = run_async(main())
    assert [type(e) for e in errors] == [SpoolError, SpoolError]


def test_a_cancelled_claim_hands_its_acks_back_to_be_written() -> None:
    writes = Writes()

    async def main() -> None:
        writer = AckWriter(writes)
        tasks = await queued(writer, [1, 2])
        started = asyncio.Event()

        async def claim(acked: list[int]) -> None:
            started.set()
            await asyncio.Event().wait()  # a transaction that never comes back

        claiming = asyncio.create_task(writer.carry(claim))
        await started.wait()
        claiming.cancel()
        with pytest.raises(asyncio.CancelledError):
            await claiming
        await asyncio.gather(*tasks)

    run_async(main())
    assert writes.calls == [[1, 2]]


def test_a_batch_cancelled_while_it_waits_still_has_its_ack_written() -> None:
    writes = Writes()

    async def main() -> None:
        writer = AckWriter(writes)
        (task,) = await queued(writer, [7])
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await writer.wait_idle()

    run_async(main())
    assert writes.calls == [[7]]


def test_a_failed_write_fails_its_waiters_and_the_next_acks_are_written() -> None:
    writes = Writes()
    writes.error = SpoolError("/tmp/s.db", "database or disk is full")

    async def main() -> BaseException | None:
        writer = AckWriter(writes)
        (failed,) = await queued(writer, [1])
        await asyncio.wait([failed])
        writes.error = None
        await writer.ack([2])
        return failed.exception()

    error = run_async(main())
    assert isinstance(error, SpoolError)
    assert writes.calls == [[1], [2]]
