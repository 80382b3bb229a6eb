"""CHAOS: 5,000 spans through an endpoint that fails 30% of requests with 503 + Retry-After,
drops 5% of connections and answers slowly, while the spans' ends are still being spooled.
Real sleeps (short backoff); nothing here is timed. Every span must end up delivered whole."""

from __future__ import annotations

import asyncio
import functools
import random
from pathlib import Path

import pytest
from conftest import append_off_loop, eventually, run_async, span_events

from shipper import DrainResult, Shipper, ShipperConfig, StopReason
from shipper.testing import FakeSpanServer
from spool import EventKind, Spool, SpoolConfig, ops

START, END = EventKind.START, EventKind.END
SPANS = 5_000
WAVES = 20

# A drain that gives up on a batch: no answer, or an error answer, 8 times in a row.
GAVE_UP = (StopReason.UNREACHABLE, StopReason.ENDPOINT_ERROR)


def shipping_on_or_idle(server: FakeSpanServer, requests: int, reader: Spool) -> bool:
    """A few more requests went out, or the shipper has nothing left to send."""
    if server.request_count >= requests:
        return True
    pending, leased, _ = reader.run(ops.outstanding(), write=False)
    return pending + leased == 0


async def spool_ends_in_waves(spool: SpoolConfig, server: FakeSpanServer, ends: list[str]) -> None:
    """Spool the ends a wave at a time while the starts ship; each wave also loses one answer
    after the batch was stored (delivered again: counted as duplicates)."""
    size = -(-len(ends) // WAVES)
    with Spool.open(spool) as reader:
        for first in range(0, len(ends), size):
            await eventually(
                functools.partial(shipping_on_or_idle, server, server.request_count + 5, reader),
                "requests between waves",
                timeout=60,
            )
            server.faults.drop_next(1, after_store=True)
            await append_off_loop(spool, span_events(ends[first : first + size], END))


async def drain_until_done(
    spool: SpoolConfig, config: ShipperConfig, appending: asyncio.Task[None]
) -> list[DrainResult]:
    results: list[DrainResult] = []
    while True:
        async with Shipper(spool, config) as shipper:
            result = await shipper.drain(timeout=120)
        results.append(result)
        # A drain gives up on a batch after 8 failures in a row (0.335^8 per batch here); an
        # operator runs it again, and so does this test.
        assert result.exit_code == 0 or result.reason in GAVE_UP, result
        if appending.done() and result.exit_code == 0:
            appending.result()
            return results
        if result.exit_code == 0:  # caught up with the spooling: let it go on
            await asyncio.wait([appending], timeout=0.5)


@pytest.mark.slow
def test_every_span_is_delivered_through_failures_drops_and_latency(
    tmp_path: Path, span_server: FakeSpanServer, ship_config: ShipperConfig
) -> None:
    spool = SpoolConfig(path=tmp_path / "spool.db")
    ids = [f"c{i:05}" for i in range(SPANS)]
    with Spool.open(spool) as opened:
        opened.append(span_events(ids, START))
    faults = span_server.faults
    faults.set_random(fail_rate=0.3, status=503, retry_after=0.01, drop_rate=0.05, seed=2024)
    faults.set_latency((0.001, 0.005))
    config = ship_config.with_options(
        batch_size=50, concurrency=4, backoff_initial=0.01, backoff_max=0.2
    )
    ends = ids[:]
    random.Random(5).shuffle(ends)  # ends come in any order: some starts are long gone

    async def main() -> list[DrainResult]:
        appending = asyncio.create_task(spool_ends_in_waves(spool, span_server, ends))
        try:
            return await drain_until_done(spool, config, appending)
        finally:
            appending.cancel()
            await asyncio.gather(appending, return_exceptions=True)

    results = run_async(main(), timeout=240)

    with Spool.open(spool) as opened:
        stats = opened.stats()
    assert (stats.pending, stats.leased, stats.dead) == (0, 0, 0)
    assert stats.done == 2 * SPANS
    assert span_server.completed_ids() == set(ids)
    assert span_server.order_violations() == []
    server = span_server.stats()
    assert server.by_status.get(503, 0) > 0
    assert server.dropped > 0
    assert span_server.duplicates() > 0  # the answers lost after storing forced resends
    print(
        f"\nchaos: drains={len(results)} "
        f"gave_up={sum(r.reason in GAVE_UP for r in results)} "
        f"requests={server.requests} by_status={dict(server.by_status)} dropped={server.dropped} "
        f"superseded={stats.superseded} duplicates={span_server.duplicates()}"
    )
