"""Refused batches: 400/409/422 are bisected until the bad items stand alone, and only those are
dead-lettered; 413 halves the batch until it fits. The cost in requests is bounded."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
from conftest import RecordedSleeps, run_async, span_payload

from shipper import DrainResult, Shipper, ShipperConfig
from shipper.testing import FakeSpanServer
from spool import EventKind, EventRecord, EventState, NewEvent, Outcome, Spool, SpoolConfig

START, END = EventKind.START, EventKind.END
TRACE = "trace-1"


def spool_spans(spool: SpoolConfig, payloads: dict[str, tuple[bytes, bytes]]) -> None:
    """Each span's start then its end, in the order given: (start payload, end payload)."""
    events: list[NewEvent] = []
    for span_id, (start, end) in payloads.items():
        events += [NewEvent(span_id, TRACE, START, start), NewEvent(span_id, TRACE, END, end)]
    with Spool.open(spool) as opened:
        opened.append(events)


def plain_spans(ids: list[str]) -> dict[str, tuple[bytes, bytes]]:
    return {i: (span_payload(i, TRACE, end=False), span_payload(i, TRACE, end=True)) for i in ids}


def drain(spool: SpoolConfig, config: ShipperConfig) -> DrainResult:
    async def main() -> DrainResult:
        async with Shipper(spool, config, sleep=RecordedSleeps()) as shipper:
            return await shipper.drain(timeout=60)

    return run_async(main())


def all_records(spool: SpoolConfig) -> list[EventRecord]:
    with Spool.open(spool) as opened:
        return list(opened.export(list(EventState)))


def bisect_bound(events: int, batch_size: int, refused: int) -> int:
    """Requests a bisecting shipper may use: one per batch, and for each refused item two
    requests (both halves) at each level of the halving tree above its leaf."""
    return math.ceil(events / batch_size) + refused * 2 * math.ceil(math.log2(batch_size))


@pytest.mark.parametrize("status", [409, 422, 400])
def test_refused_items_are_isolated_and_only_they_are_dead(
    tmp_path: Path, span_server: FakeSpanServer, ship_config: ShipperConfig, status: int
) -> None:
    spool = SpoolConfig(path=tmp_path / "spool.db")
    ids = [f"span-{i:03}" for i in range(500)]
    bad = sorted(random.Random(status).sample(ids, 5))
    spool_spans(spool, plain_spans(ids))
    span_server.faults.refuse(bad, status=status, detail="refused by the test")
    batch_size = 50

    result = drain(spool, ship_config.with_options(batch_size=batch_size, concurrency=4))

    assert result.exit_code == 2
    assert (result.pending, result.leased, result.dead, result.dead_lettered) == (0, 0, 5, 5)
    assert span_server.completed_ids() == set(ids) - set(bad)
    assert span_server.duplicates() == 0
    records = all_records(spool)
    dead = {r.span_id: r for r in records if r.state is EventState.DEAD}
    assert sorted(dead) == bad
    for span_id, record in dead.items():
        assert record.kind is END
        assert record.last_error == f"HTTP {status}: refused by the test: {span_id}"
        assert record.attempts == 0  # refusals are not retries
    # Their starts were never sent: the end carried the whole span.
    assert all(r.outcome is Outcome.SUPERSEDED for r in records if r.kind is START)
    # Only the ends were sent: 500 events in batches of 50, plus the bisection.
    requests = span_server.request_count
    assert ceil_div(500, batch_size) + 5 < requests <= bisect_bound(500, batch_size, 5)
    batches = [ids[k : k + batch_size] for k in range(0, len(ids), batch_size)]
    assert requests == sum(halving_requests(batch, set(bad)) for batch in batches)
    assert span_server.stats().by_status[status] == requests - sum(
        1 for r in span_server.requests() if r.status == 200
    )
    assert max(r.item_count for r in span_server.requests()) == batch_size


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def halving_requests(items: list[str], bad: set[str]) -> int:
    """Requests to deliver ``items`` as one batch, halving every refused batch of two or more."""
    if len(items) == 1 or not bad.intersection(items):
        return 1
    middle = len(items) // 2
    return 1 + halving_requests(items[:middle], bad) + halving_requests(items[middle:], bad)


def test_items_the_endpoint_itself_rejects_are_dead_lettered_with_its_words(
    tmp_path: Path, span_server: FakeSpanServer, ship_config: ShipperConfig
) -> None:
    """No injected rule: the fake validates like the real endpoint (422 for an end before its
    start, 400 for an id over 256 UTF-8 bytes)."""
    spool = SpoolConfig(path=tmp_path / "spool.db")
    ids = [f"span-{i:03}" for i in range(200)]
    spans = plain_spans(ids)
    backwards = "span-042"
    spans[backwards] = (
        span_payload(backwards, TRACE, end=False),
        span_payload(backwards, TRACE, end=True, end_timestamp="2024-05-01T11:59:00+00:00"),
    )
    wide = "é" * 150  # 150 characters, 300 bytes in UTF-8
    spans[wide] = (span_payload(wide, TRACE, end=False), span_payload(wide, TRACE, end=True))

    spool_spans(spool, spans)
    result = drain(spool, ship_config.with_options(batch_size=50))

    assert result.exit_code == 2
    assert span_server.completed_ids() == set(ids) - {backwards}
    dead = {r.span_id: r.last_error for r in all_records(spool) if r.state is EventState.DEAD}
    assert dead == {
        backwards: f"HTTP 422: items[0] (id '{backwards}'): end_timestamp precedes start_timestamp",
        wide: f"HTTP 400: items[0] (id '{wide}'): id is 300 bytes in UTF-8, more than 256",
    }
    assert span_server.request_count <= bisect_bound(len(spans), 50, 2)


def test_413_halves_the_batch_until_it_fits_and_a_lone_oversized_item_is_dead(
    tmp_path: Path, span_server: FakeSpanServer, ship_config: ShipperConfig
) -> None:
    spool = SpoolConfig(path=tmp_path / "spool.db")
    ids = [f"span-{i:03}" for i in range(100)]
    padding = {"input": {"text": "x" * 1000}}
    spans = {
        i: (span_payload(i, TRACE, end=False), span_payload(i, TRACE, end=True, **padding))
        for i in ids
    }
    giant = "span-giant"
    spans[giant] = (
        span_payload(giant, TRACE, end=False),
        span_payload(giant, TRACE, end=True, input={"text": "y" * 20_000}),
    )
    spool_spans(spool, spans)
    item_bytes = len(spans[ids[0]][1])
    limit = 12_000
    span_server.faults.set_max_body_bytes(limit)

    result = drain(spool, ship_config.with_options(batch_size=50, concurrency=2))

    assert result.exit_code == 2
    assert span_server.completed_ids() == set(ids)
    assert span_server.duplicates() == 0
    (dead,) = [r for r in all_records(spool) if r.state is EventState.DEAD]
    assert dead.span_id == giant
    assert dead.last_error is not None
    assert dead.last_error.startswith("HTTP 413: request body of ")
    assert dead.last_error.endswith(f"exceeds the limit of {limit}")
    fits = (limit - len(b'{"items":[]}')) // (item_bytes + 1)
    accepted = [r.item_count for r in span_server.requests() if r.status == 200]
    assert sum(accepted) == len(ids)
    assert max(accepted) <= fits
    assert span_server.stats().by_status[413] > 0
    # Halving a batch of 50 until each piece fits is a tree of at most 2 * 50 - 1 requests.
    assert span_server.request_count <= ceil_div(len(spans), 50) * (2 * 50 - 1)
