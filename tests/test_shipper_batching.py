"""Cutting claimed events into batches by count and by body bytes (the 413 guard)."""

from __future__ import annotations

import doctest
import itertools
from pathlib import Path

import httpx

from shipper import split_batches, upload
from shipper.testing import FakeSpanServer
from shipper.upload import batch_body
from spool import ClaimedEvent, EventKind, NewEvent, Spool, SpoolConfig, encode_span, ops


def claimed(sizes: list[int]) -> list[ClaimedEvent]:
    return [
        ClaimedEvent(i, f"s{i}", "t", EventKind.END, b"x" * n, 0, 0.0) for i, n in enumerate(sizes)
    ]


def test_the_docstring_example_holds() -> None:
    assert doctest.testmod(upload).failed == 0


def test_every_body_is_within_the_cap_and_order_is_kept() -> None:
    events = claimed([100 + (i * 37) % 900 for i in range(500)])
    batches = split_batches(events, 50, 4096)
    assert [e for batch in batches for e in batch] == events
    for batch in batches:
        assert len(batch) <= 50
        assert len(batch_body([e.payload for e in batch])) <= 4096
    # Greedy: each batch but the last would have gone over with the next event.
    for batch, following in itertools.pairwise(batches):
        grown = batch_body([e.payload for e in [*batch, following[0]]])
        assert len(batch) == 50 or len(grown) > 4096


def test_the_count_still_caps_small_events() -> None:
    batches = split_batches(claimed([10] * 120), 50, 1 << 20)
    assert [len(b) for b in batches] == [50, 50, 20]


def test_a_body_exactly_at_the_cap_fits() -> None:
    events = claimed([10, 10])
    exact = len(batch_body([e.payload for e in events]))
    assert [len(b) for b in split_batches(events, 50, exact)] == [2]
    assert [len(b) for b in split_batches(events, 50, exact - 1)] == [1, 1]


def test_an_event_larger_than_the_cap_goes_alone() -> None:
    batches = split_batches(claimed([10, 5000, 10]), 50, 1024)
    assert [[len(e.payload) for e in b] for b in batches] == [[10], [5000], [10]]


def test_nothing_in_nothing_out() -> None:
    assert split_batches([], 50, 1024) == []


def test_batches_of_large_spans_pass_an_endpoint_that_refuses_large_bodies(
    tmp_path: Path,
) -> None:
    """Real spooled spans, cut to the cap, all fit the fake's 413 limit."""
    config = SpoolConfig(path=tmp_path / "spool.db")
    with Spool.open(config) as spool:
        rows = []
        for i in range(40):
            span = {
                "id": f"s{i}",
                "trace_id": "t",
                "name": "llm",
                "start_timestamp": "2025-01-01T00:00:00Z",
                "input": {"text": "y" * (3000 + 50 * i)},
            }
            span_id, trace_id, payload = encode_span(span, EventKind.START, 1 << 20)
            rows.append(NewEvent(span_id, trace_id, EventKind.START, payload, enqueued_at=1.0))
        assert spool.append(rows)
        events = spool.run(ops.claim("A", 100, 30.0, 2.0))
    cap = 16 * 1024
    with FakeSpanServer() as server:
        server.faults.set_max_body_bytes(cap)
        with httpx.Client(base_url=server.base_url) as http:
            for batch in split_batches(events, 50, cap):
                body = batch_body([e.payload for e in batch])
                assert http.put(upload.BATCH_PATH, content=body).status_code == 200
        assert server.stats().items_accepted == 40
        assert server.stats().by_status == {200: server.stats().requests}
