"""The processors an agent calls: span shapes to stored JSON (DESIGN.md's mapping), snapshots,
refusals counted by reason, JSON conversion, and never raising for tracing trouble.

Every check runs on both processors: :class:`SpoolProcessor` on an event loop and
:class:`SyncSpoolProcessor` called from worker threads.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import json
import math
import typing
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any, Protocol, cast

import pytest
import scale_gp_beta.types
from scale_gp_beta.lib.tracing import create_span
from scale_gp_beta.lib.tracing.span import Span as SGPSpan
from scale_gp_beta.lib.tracing.trace_queue_manager import TraceQueueManager

from spool import (
    EventState,
    Spool,
    SpoolConfig,
    SpoolProcessor,
    SyncSpoolProcessor,
)
from spool._committer import acquire_committer, release_committer
from spool._mapping import SPAN_TYPES

T0 = datetime(2025, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
T1 = T0 + timedelta(seconds=2)


class Producer(Protocol):
    """One processor, driven from plain test code."""

    config: SpoolConfig

    def start(self, span: Any) -> None: ...

    def end(self, span: Any) -> None: ...

    def starts(self, spans: list[Any]) -> None: ...

    def shutdown(self) -> None: ...


class AsyncProducer:
    def __init__(self, config: SpoolConfig) -> None:
        self.config = config
        self._runner = asyncio.Runner()
        self._closed = False
        self._processor = SpoolProcessor(config=config)

    def start(self, span: Any) -> None:
        self._runner.run(self._processor.on_span_start(span))

    def end(self, span: Any) -> None:
        self._runner.run(self._processor.on_span_end(span))

    def starts(self, spans: list[Any]) -> None:
        self._runner.run(self._processor.on_spans_start(spans))

    def shutdown(self) -> None:
        # Shutdown is harmless twice; the runner's loop is closed after the first.
        if self._closed:
            asyncio.run(self._processor.shutdown())
            return
        self._runner.run(self._processor.shutdown())
        self._runner.close()
        self._closed = True


class ThreadedProducer:
    def __init__(self, config: SpoolConfig) -> None:
        self.config = config
        self._pool = ThreadPoolExecutor(4, thread_name_prefix="agent")
        self._processor = SyncSpoolProcessor(config=config)

    def start(self, span: Any) -> None:
        self._pool.submit(self._processor.on_span_start, span).result()

    def end(self, span: Any) -> None:
        self._pool.submit(self._processor.on_span_end, span).result()

    def starts(self, spans: list[Any]) -> None:
        self._pool.submit(self._processor.on_spans_start, spans).result()

    def shutdown(self) -> None:
        self._pool.submit(self._processor.shutdown).result()


@pytest.fixture(params=["async", "threads"])
def producer(request: pytest.FixtureRequest, spool_config: SpoolConfig) -> Iterator[Producer]:
    made: AsyncProducer | ThreadedProducer
    if request.param == "async":
        made = AsyncProducer(spool_config)
        yield made
        made.shutdown()  # a second shutdown is harmless
    else:
        made = ThreadedProducer(spool_config)
        yield made
        made.shutdown()
        made._pool.shutdown()


def spooled(config: SpoolConfig) -> list[tuple[str, dict[str, Any]]]:
    """``(kind, payload)`` of every stored event, in order."""
    with Spool.open(config) as spool:
        return [(r.kind.value, json.loads(r.payload)) for r in spool.export(list(EventState))]


def only_payload(config: SpoolConfig) -> dict[str, Any]:
    (stored,) = spooled(config)
    return stored[1]


def dict_span(**overrides: Any) -> dict[str, Any]:
    span: dict[str, Any] = {
        "id": "span-1",
        "trace_id": "trace-1",
        "name": "llm call",
        "start_timestamp": T0.isoformat(),
    }
    span.update(overrides)
    return span


@dataclasses.dataclass
class AgentexSpan:
    """The attributes of agentex's ``Span`` that the processors read."""

    id: str = "span-1"
    name: str = "agent step"
    trace_id: str = "trace-1"
    parent_id: str | None = "parent-1"
    start_time: datetime | None = T0
    end_time: datetime | None = T1
    input: Any = None
    output: Any = None
    data: Any = None


# ---- the mapping ---------------------------------------------------------------------------


def test_span_types_match_the_sdk() -> None:
    assert set(typing.get_args(scale_gp_beta.types.SpanType)) == SPAN_TYPES


def test_agentex_span_maps_like_agentex(producer: Producer) -> None:
    span = AgentexSpan(
        input={"prompt": "hi"},
        output="hello",
        data={"__span_type__": "COMPLETION", "model": "m"},
    )
    producer.start(span)
    producer.end(span)
    producer.shutdown()
    (start_kind, start), (end_kind, end) = spooled(producer.config)

    assert (start_kind, end_kind) == ("start", "end")
    assert start == {
        "name": "agent step",
        "id": "span-1",
        "trace_id": "trace-1",
        "parent_id": "parent-1",
        "start_timestamp": "2025-01-02T03:04:05.123456+00:00",
        "input": {"prompt": "hi"},
        "output": {"value": "hello"},
        "metadata": {"__span_type__": "COMPLETION", "model": "m"},
        "type": "COMPLETION",
        "status": "SUCCESS",
    }
    assert "end_timestamp" not in start
    assert end == {**start, "end_timestamp": "2025-01-02T03:04:07.123456+00:00"}


def test_agentex_error_marks_the_span_as_error(producer: Producer) -> None:
    """agentex's set_span_error shape becomes the SDK's error fields, as agentex's processor
    sends them (``error_category`` as given)."""
    error = {"type": "ValueError", "message": "boom", "category": "application"}
    producer.end(AgentexSpan(data={"__error__": error}))
    producer.shutdown()
    payload = only_payload(producer.config)
    assert payload["status"] == "ERROR"
    assert payload["type"] == "STANDALONE"
    assert payload["metadata"] == {
        "__error__": error,
        "error": True,
        "error_type": "ValueError",
        "error_message": "boom",
        "error_category": "application",
    }


@pytest.mark.parametrize("error", [None, "ValueError: boom", ["boom"]])
def test_agentex_error_that_is_not_a_dict_is_success(producer: Producer, error: object) -> None:
    """As agentex's processor: only a dict under ``__error__`` is an error."""
    producer.end(AgentexSpan(data={"__error__": error}))
    producer.shutdown()
    payload = only_payload(producer.config)
    assert payload["status"] == "SUCCESS"
    assert payload["metadata"] == {"__error__": error}


def test_agentex_empty_error_dict_is_an_error_with_what_is_known(producer: Producer) -> None:
    """agentex's processor raises KeyError here and the span is lost; the spool sends it."""
    producer.end(AgentexSpan(data={"__error__": {}}))
    producer.shutdown()
    payload = only_payload(producer.config)
    assert payload["status"] == "ERROR"
    assert payload["metadata"] == {
        "__error__": {},
        "error": True,
        "error_type": None,
        "error_message": None,
        "error_category": "unknown",
    }


@pytest.mark.parametrize(
    ("span_type", "sent"),
    [("NOT_A_TYPE", "NOT_A_TYPE"), ("completion", "completion"), (5, "5"), (None, "None")],
)
def test_agentex_span_type_is_sent_as_agentex_sends_it(
    producer: Producer, span_type: object, sent: str
) -> None:
    """agentex's processor sends ``str(data["__span_type__"])``; the endpoint judges it."""
    producer.end(AgentexSpan(data={"__span_type__": span_type}))
    producer.shutdown()
    assert only_payload(producer.config)["type"] == sent


@pytest.mark.parametrize("span_type", [["COMPLETION"], {"kind": "COMPLETION"}])
def test_agentex_unhashable_span_type_does_not_raise(producer: Producer, span_type: object) -> None:
    """BUG (spool/_mapping.py, _from_agentex): ``span_type in SPAN_TYPES`` raised TypeError
    ("unhashable type") when ``data["__span_type__"]`` was a list or dict, and the TypeError
    escaped the processor into the agent (``rows()`` only caught Refused)."""
    producer.end(AgentexSpan(data={"__span_type__": span_type}))
    producer.shutdown()
    assert only_payload(producer.config)["type"] == str(span_type)


def test_agentex_naive_and_offset_datetimes(producer: Producer) -> None:
    """As agentex sends them (``isoformat()``): a naive time stays naive; a list stays a list."""
    naive = datetime(2025, 1, 2, 3, 4, 5)  # noqa: DTZ001 - agents do pass naive datetimes
    plus_two = datetime(2025, 1, 2, 5, 4, 6, tzinfo=timezone(timedelta(hours=2)))
    producer.end(AgentexSpan(start_time=naive, end_time=plus_two, parent_id=None, data=[1, 2]))
    producer.shutdown()
    payload = only_payload(producer.config)
    assert payload["start_timestamp"] == "2025-01-02T03:04:05"
    assert payload["end_timestamp"] == "2025-01-02T05:04:06+02:00"
    assert "parent_id" not in payload
    assert payload["metadata"] == [1, 2]


class SpoolingQueueManager(TraceQueueManager):
    """The SDK integration: a queue manager whose reports go to the spool."""

    def __init__(self, processor: SyncSpoolProcessor) -> None:
        super().__init__(worker_enabled=False)
        self.processor = processor

    def report_span_start(self, span: SGPSpan) -> None:
        self.processor.on_span_start(span)

    def report_span_end(self, span: SGPSpan) -> None:
        self.processor.on_span_end(span)


def test_scale_gp_span_through_a_queue_manager(spool_config: SpoolConfig) -> None:
    processor = SyncSpoolProcessor(config=spool_config)
    manager = SpoolingQueueManager(processor)
    with create_span(
        "retrieve",
        span_type="KB_RETRIEVAL",
        input={"q": "what"},
        metadata={"k": 3},
        trace_id="trace-9",
        parent_id="root",
        queue_manager=manager,
    ) as span:
        span.output = {"docs": 2}
    processor.shutdown()
    expected = span.to_request_params()

    (start_kind, start), (end_kind, end) = spooled(spool_config)
    assert (start_kind, end_kind) == ("start", "end")
    assert end == expected
    assert end["type"] == "KB_RETRIEVAL"
    assert end["parent_id"] == "root"
    assert "end_timestamp" not in start
    assert start["id"] == end["id"] == span.span_id
    assert start["output"] == {}  # the snapshot taken at start, before the output was set


def test_scale_gp_span_objects_are_accepted(producer: Producer) -> None:
    manager = cast(TraceQueueManager, object())  # start()/end() are not called here
    span = SGPSpan("tool", "trace-3", manager, span_id="sgp-1", span_type="CUSTOM")
    producer.start(span)  # not started: no start time, refused
    span.start_time = T0.isoformat()
    span.end_time = T1.isoformat()
    producer.start(span)
    producer.end(span)
    producer.shutdown()
    (_, start), (_, end) = spooled(producer.config)
    assert "end_timestamp" not in start
    assert end == span.to_request_params()
    with Spool.open(producer.config) as spool:
        assert spool.stats().refused == {"missing_start_timestamp": 1}


def test_plain_dict_is_stored_as_given(producer: Producer) -> None:
    span = dict_span(
        end_timestamp=T1.isoformat(),
        type="CUSTOM",
        status="SUCCESS",
        input={"a": 1},
        metadata={"ok": True},
        group_id="g",
    )
    producer.start(span)
    producer.end(span)
    producer.shutdown()
    (_, start), (_, end) = spooled(producer.config)
    assert end == span
    assert start == {k: v for k, v in span.items() if k != "end_timestamp"}


def test_an_end_without_end_time_is_stamped(producer: Producer) -> None:
    before = datetime.now(UTC)
    producer.end(dict_span())
    producer.shutdown()
    stamped = datetime.fromisoformat(only_payload(producer.config)["end_timestamp"])
    assert before <= stamped <= datetime.now(UTC)


def test_batch_calls_spool_every_span(producer: Producer) -> None:
    producer.starts([dict_span(id=f"s{i}") for i in range(10)] + [dict_span(name="")])
    producer.shutdown()
    assert [p["id"] for _, p in spooled(producer.config)] == [f"s{i}" for i in range(10)]
    with Spool.open(producer.config) as spool:
        assert spool.stats().refused == {"missing_name": 1}


# ---- snapshot ------------------------------------------------------------------------------


def test_mutating_a_span_after_the_call_does_not_change_what_was_spooled(
    producer: Producer,
) -> None:
    span = dict_span(metadata={"step": 1, "items": [1]})
    agentex = AgentexSpan(id="span-2", data={"step": 1}, output={"text": "a"})
    producer.start(span)
    producer.start(agentex)
    span["name"] = "renamed"
    span["metadata"]["step"] = 2
    span["metadata"]["items"].append(2)
    assert isinstance(agentex.data, dict)
    agentex.data["step"] = 2
    agentex.output["text"] = "b"
    agentex.name = "renamed"
    producer.shutdown()
    (_, first), (_, second) = spooled(producer.config)
    assert first["name"] == "llm call"
    assert first["metadata"] == {"step": 1, "items": [1]}
    assert second["name"] == "agent step"
    assert second["metadata"] == {"step": 1}
    assert second["output"] == {"text": "a"}


# ---- refusals ------------------------------------------------------------------------------


def test_invalid_spans_are_refused_and_counted_by_reason(spool_config: SpoolConfig) -> None:
    config = SpoolConfig(path=spool_config.path, max_event_bytes=1024)
    producers: list[Producer] = [AsyncProducer(config), ThreadedProducer(config)]
    for producer in producers:
        producer.start(dict_span(id="é" * 129))  # 129 characters, 258 UTF-8 bytes
        producer.start(dict_span(trace_id="tr\x00ace"))
        producer.start(dict_span(parent_id="x" * 257))
        producer.start(dict_span(name=""))
        producer.start({k: v for k, v in dict_span().items() if k != "name"})
        producer.start({k: v for k, v in dict_span().items() if k != "trace_id"})
        producer.start({k: v for k, v in dict_span().items() if k != "start_timestamp"})
        producer.start(dict_span(start_timestamp="yesterday"))
        producer.end(dict_span(end_timestamp=(T0 - timedelta(seconds=1)).isoformat()))
        producer.end(AgentexSpan(end_time=T0 - timedelta(microseconds=1)))
        producer.start(dict_span(input={"blob": "x" * 2000}))
        # Right at the limits: accepted.
        producer.start(dict_span(id="é" * 128))
        producer.end(dict_span(end_timestamp=T0.isoformat()))
        producer.shutdown()

    with Spool.open(config) as spool:
        stats = spool.stats()
    assert stats.refused == {
        "end_before_start": 4,
        "id_too_long": 4,
        "invalid_timestamp": 2,
        "missing_name": 4,
        "missing_start_timestamp": 2,
        "missing_trace_id": 2,
        "nul_in_id": 2,
        "too_large": 2,
    }
    assert stats.dropped == {}
    assert stats.pending == 4  # the two accepted events, once per processor


# ---- JSON conversion -----------------------------------------------------------------------


class Colour(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Opaque:
    def __repr__(self) -> str:
        return "<Opaque thing>"


def test_values_json_cannot_hold_are_converted(producer: Producer) -> None:
    ident = uuid.UUID("12345678-1234-5678-1234-567812345678")
    producer.start(
        dict_span(
            metadata={
                "when": T0,
                "day": date(2025, 1, 2),
                "text": b"caf\xc3\xa9",
                "raw": b"\xff\x00\x01",
                "tags": {"b", "a", "c"},
                "frozen": frozenset({2, 1}),
                "colour": Colour.RED,
                "point": Point(1, 2),
                "id": ident,
                "thing": Opaque(),
                1: "int key",
            }
        )
    )
    producer.shutdown()
    assert only_payload(producer.config)["metadata"] == {
        "when": "2025-01-02T03:04:05.123456+00:00",
        "day": "2025-01-02",
        "text": "café",
        "raw": "base64:/wAB",
        "tags": ["a", "b", "c"],
        "frozen": [1, 2],
        "colour": "red",
        "point": {"x": 1, "y": 2},
        "id": "12345678-1234-5678-1234-567812345678",
        "thing": "<Opaque thing>",
        "1": "int key",
    }


def test_nan_cycles_and_odd_keys_are_converted(producer: Producer) -> None:
    metadata: dict[Any, Any] = {
        "nan": math.nan,
        "inf": -math.inf,
        "when": T0,
        "tags": {"y", "x"},
        ("tuple", "key"): 1,
        "surrogate": "\udc80",
    }
    metadata["self"] = metadata
    items: list[Any] = [1]
    items.append(items)
    metadata["items"] = items
    producer.start(dict_span(metadata=metadata))
    producer.shutdown()
    stored = only_payload(producer.config)["metadata"]
    assert stored["nan"] == "nan"
    assert stored["inf"] == "-inf"
    assert stored["when"] == "2025-01-02T03:04:05.123456+00:00"
    assert stored["tags"] == ["x", "y"]
    assert stored["('tuple', 'key')"] == 1
    assert stored["self"] == "<cycle>"
    assert stored["items"] == [1, "<cycle>"]
    assert isinstance(stored["surrogate"], str)


class ReprRaises:
    def __repr__(self) -> str:
        raise RuntimeError("repr is broken")


def test_a_value_whose_repr_raises_does_not_break_the_agent(producer: Producer) -> None:
    """BUG (spool/_mapping.py, _convert/_dumps): an object whose ``__repr__`` raises (here
    RuntimeError) escapes ``json.dumps`` and the ``_sanitize`` fallback (it calls ``repr``
    again), so ``on_span_start`` raises into the agent. DESIGN.md: a processor call never
    raises because of bad span data."""
    producer.start(dict_span(metadata={"bad": ReprRaises(), "good": 1}))
    producer.shutdown()
    assert only_payload(producer.config)["metadata"]["good"] == 1


# ---- programming errors and broken spools --------------------------------------------------


def test_none_or_a_non_span_is_a_type_error(producer: Producer) -> None:
    with pytest.raises(TypeError, match="None"):
        producer.start(None)
    with pytest.raises(TypeError, match="None"):
        producer.end(None)
    with pytest.raises(TypeError, match="None"):
        producer.starts([dict_span(), None])
    with pytest.raises(TypeError, match="not a span"):
        producer.start(42)
    producer.shutdown()
    assert spooled(producer.config) == []


def _fill(config: SpoolConfig) -> None:
    processor = SyncSpoolProcessor(config=config)
    for i in range(20):
        processor.on_span_start(dict_span(id=f"old-{i}"))
    processor.shutdown()


def _garble(config: SpoolConfig, keep: int) -> None:
    """Overwrite the spool file after its first ``keep`` bytes with garbage."""
    size = config.path.stat().st_size
    with config.path.open("r+b") as f:
        f.seek(keep)
        f.write(b"\xa5" * (size - keep))


@pytest.mark.parametrize(
    ("keep", "reason"), [(0, "not_a_spool"), (4096, "spool_corrupt")], ids=["header", "pages"]
)
def test_a_broken_spool_never_raises_and_counts_drops(
    spool_config: SpoolConfig, producer: Producer, keep: int, reason: str
) -> None:
    _fill(spool_config)
    assert not spool_config.path.with_name("spool.db-wal").exists()
    _garble(spool_config, keep)

    producer.start(dict_span(name=""))  # refused, counted before the drops
    for i in range(5):
        producer.start(dict_span(id=f"new-{i}"))
    producer.starts([dict_span(id="a"), dict_span(id="b")])
    producer.end(dict_span(id="new-0"))

    committer = acquire_committer(spool_config)
    try:
        counts = committer.local_counts()
    finally:
        release_committer(committer)
    assert counts == {"refused:missing_name": 1, f"dropped:{reason}": 8}


class BrokenData:
    """An agentex-like span whose ``data`` raises when read as a mapping."""

    id = "span-broken"
    name = "broken"
    trace_id = "trace-1"
    parent_id = None
    start_time = T0
    end_time = T1

    @property
    def data(self) -> Any:
        raise RuntimeError("data cannot be read")


@pytest.mark.parametrize("flavour", ["async", "sync"])
def test_the_agentex_processors_never_raise_for_a_broken_span(
    spool_config: SpoolConfig, flavour: str
) -> None:
    """spool.agentex's processors work without agentex too (plain classes), and a span whose
    attributes raise is counted, not raised into the agent."""
    from spool.agentex import AsyncSpoolTracingProcessor, SyncSpoolTracingProcessor

    good = AgentexSpan(data={"k": 1})
    if flavour == "sync":
        sync = SyncSpoolTracingProcessor(spool_config)
        sync.on_span_end(BrokenData())
        sync.on_span_end(good)
        sync.shutdown()
    else:

        async def agent() -> None:
            processor = AsyncSpoolTracingProcessor(spool_config)
            await processor.on_span_end(BrokenData())
            await processor.on_span_end(good)
            await processor.shutdown()

        asyncio.run(agent())
    payload = only_payload(spool_config)
    assert payload["id"] == "span-1"
    assert payload["metadata"]["k"] == 1
    assert payload["metadata"]["__source__"] == "agentex"
    with Spool.open(spool_config) as spool:
        assert spool.stats().refused == {"unserializable": 1}
