"""scale-gp-beta's own tracing API, unchanged, spooled: ``SpoolingTraceQueueManager`` passed as
``queue_manager=`` to ``create_trace``/``create_span``, and ``use_spool()`` making it the SDK's
default. Every span event lands in the spool and is shipped (real SDK, FakeSpanServer)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from scale_gp_beta.lib.tracing import create_span, create_trace, trace_queue_manager
from scale_gp_beta.lib.tracing.span import Span as SGPSpan

from shipper import ShipperConfig
from shipper.sgp_tracing import SpoolingTraceQueueManager, use_spool
from shipper.testing import FakeSpanServer
from spool import EventKind, EventRecord, EventState, Spool, ops


@pytest.fixture
def sdk_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK's global queue manager as found, restored after the test (no default first,
    so nothing of another test's is shut down by ``use_spool``)."""
    monkeypatch.setattr(trace_queue_manager, "_global_tracing_queue_manager", None)


def spooled(path: Path) -> list[EventRecord]:
    with Spool.open(path, create=False) as spool:
        return list(spool.export(list(EventState)))


def payload(record: EventRecord) -> dict[str, Any]:
    item: dict[str, Any] = json.loads(record.payload)
    return item


def find(path: Path, span_id: str) -> list[EventRecord]:
    with Spool.open(path, create=False) as spool:
        return spool.run(ops.find(span_id), write=False)


def test_create_trace_and_create_span_with_a_spooling_queue_manager(
    tmp_path: Path, span_server: FakeSpanServer, ship_config: ShipperConfig
) -> None:
    path = tmp_path / "sgp.db"
    manager = SpoolingTraceQueueManager(path, ship=ship_config)
    try:
        with create_trace("agent-run", queue_manager=manager, input={"q": "why"}) as trace:
            with create_span("retrieve", queue_manager=manager, input={"k": 3}) as retrieve:
                retrieve.output = {"docs": ["a", "b", "c"]}
                with create_span("rerank", span_type="RERANKING", queue_manager=manager) as rr:
                    rr.metadata = {"model": "rr-1"}
            with (
                pytest.raises(ValueError, match="model timed out"),
                create_span("llm", span_type="COMPLETION", queue_manager=manager) as llm,
            ):
                raise ValueError("model timed out")
            explicit = create_span("explicit", queue_manager=manager)
            explicit.start()
            explicit.output = {"done": True}
            explicit.end()
    finally:
        manager.shutdown(timeout=10)

    root_id, trace_id = trace.root_span.span_id, trace.root_span.trace_id
    assert isinstance(retrieve, SGPSpan)  # not a NoOpSpan
    assert isinstance(explicit, SGPSpan)
    ids = {root_id, retrieve.span_id, rr.span_id, llm.span_id, explicit.span_id}

    # In the spool: a start and an end event per span, every one delivered.
    records = spooled(path)
    assert sorted((r.span_id, r.kind) for r in records) == sorted(
        (span_id, kind) for span_id in ids for kind in (EventKind.START, EventKind.END)
    )
    assert {r.state for r in records} == {EventState.DONE}
    llm_end = next(r for r in find(path, llm.span_id) if r.kind is EventKind.END)
    assert payload(llm_end)["status"] == "ERROR"
    assert payload(llm_end)["metadata"]["error_type"] == "ValueError"

    # At the endpoint: complete spans, their tree, what the SDK recorded.
    stored = {span_id: item for (tid, span_id), item in span_server.spans().items()}
    assert set(stored) == ids
    assert {item["trace_id"] for item in stored.values()} == {trace_id}
    assert all("end_timestamp" in item for item in stored.values())
    assert "parent_id" not in stored[root_id]
    assert stored[retrieve.span_id]["parent_id"] == root_id
    assert stored[rr.span_id]["parent_id"] == retrieve.span_id
    assert stored[llm.span_id]["parent_id"] == root_id
    assert stored[explicit.span_id]["parent_id"] == root_id
    assert stored[root_id]["input"] == {"q": "why"}
    assert stored[retrieve.span_id]["output"] == {"docs": ["a", "b", "c"]}
    assert stored[rr.span_id]["type"] == "RERANKING"
    assert stored[rr.span_id]["metadata"] == {"model": "rr-1"}
    assert stored[explicit.span_id]["output"] == {"done": True}
    error = stored[llm.span_id]
    assert error["status"] == "ERROR"
    assert error["type"] == "COMPLETION"
    assert error["metadata"]["error"] is True
    assert error["metadata"]["error_type"] == "ValueError"
    assert error["metadata"]["error_message"] == "model timed out"
    assert {stored[i]["status"] for i in ids - {llm.span_id}} == {"SUCCESS"}
    assert span_server.order_violations() == []


def test_a_start_event_is_a_snapshot_and_flush_spools_the_span_as_it_stands(
    tmp_path: Path, span_server: FakeSpanServer, ship_config: ShipperConfig
) -> None:
    path = tmp_path / "sgp.db"
    manager = SpoolingTraceQueueManager(path, ship=ship_config)
    try:
        with create_trace("flushing", queue_manager=manager) as trace:
            trace.root_span.output = {"partial": 1}
            trace.flush(blocking=True)  # in progress: spooled as a start, with the output
            trace.root_span.output = {"final": 2}
    finally:
        manager.shutdown(timeout=10)

    root = trace.root_span
    starts = [r for r in find(path, root.span_id) if r.kind is EventKind.START]
    assert [payload(r)["output"] for r in starts] == [{}, {"partial": 1}]
    assert all("end_timestamp" not in payload(r) for r in starts)
    stored = span_server.spans()[(root.trace_id, root.span_id)]
    assert stored["output"] == {"final": 2}
    assert "end_timestamp" in stored


@pytest.mark.usefixtures("sdk_default")
def test_use_spool_spools_spans_made_without_a_queue_manager(
    tmp_path: Path, span_server: FakeSpanServer, ship_config: ShipperConfig
) -> None:
    path = tmp_path / "default.db"
    manager = use_spool(path, ship=ship_config)
    try:
        assert trace_queue_manager.tracing_queue_manager() is manager
        with create_trace("default-run") as trace:
            with create_span("step-1") as first, create_span("step-1a") as inner:
                inner.output = {"x": 1}
            with create_span("step-2") as second:
                second.metadata = {"attempt": 2}
    finally:
        manager.shutdown(timeout=10)

    root_id = trace.root_span.span_id
    ids = {root_id, first.span_id, inner.span_id, second.span_id}
    assert {r.span_id for r in spooled(path)} == ids
    assert {r.state for r in spooled(path)} == {EventState.DONE}
    stored = {span_id: item for (_, span_id), item in span_server.spans().items()}
    assert set(stored) == ids
    assert all("end_timestamp" in item for item in stored.values())
    assert stored[first.span_id]["parent_id"] == root_id
    assert stored[inner.span_id]["parent_id"] == first.span_id
    assert stored[second.span_id]["parent_id"] == root_id
    assert stored[inner.span_id]["output"] == {"x": 1}
    assert stored[second.span_id]["metadata"] == {"attempt": 2}


@pytest.mark.usefixtures("sdk_default")
def test_use_spool_replaces_the_previous_default(
    tmp_path: Path, ship_config: ShipperConfig
) -> None:
    first = use_spool(tmp_path / "first.db", ship=False)
    second = use_spool(tmp_path / "second.db", ship=ship_config)
    try:
        assert trace_queue_manager.tracing_queue_manager() is second
        with create_trace("after-switch") as trace:
            pass
    finally:
        second.shutdown(timeout=10)
        first.shutdown(timeout=1)

    assert [r.span_id for r in spooled(tmp_path / "second.db")] == [trace.root_span.span_id] * 2
