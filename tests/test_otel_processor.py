"""``spool.otel.SpoolSpanProcessor`` on the real OpenTelemetry SDK: spans made by a real
``TracerProvider`` are spooled at start and end with W3C ids kept, stable Scale GP ids, parent
links, status, timestamps, the GenAI and OpenInference conventions mapped, and the OpenTelemetry
processor contract (never raising, nothing taken after shutdown, force_flush)."""

from __future__ import annotations

import importlib
import json
import re
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, get_args

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.trace import Link, SpanKind, Status, StatusCode, Tracer
from scale_gp_beta.types import SpanType

from spool import EventKind, EventState, Spool, SpoolConfig
from spool.otel import (
    GEN_AI_OPERATION_TYPES,
    OPENINFERENCE_TYPES,
    SpoolSpanProcessor,
    scale_ids,
    span_params,
)
from spool.redact import default_redactor

T0_NS = 1_735_787_045_123_456_789  # 2025-01-02T03:04:05.123456789Z
T0_ISO = "2025-01-02T03:04:05.123456+00:00"
T1_ISO = "2025-01-02T03:04:07.123456+00:00"
SECOND = 1_000_000_000


class Traced:
    """A real TracerProvider with a SpoolSpanProcessor on a spool of its own."""

    def __init__(self, config: SpoolConfig, **options: Any) -> None:
        self.config = config
        self.processor = SpoolSpanProcessor(config=config, **options)
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": "agent-svc", "deployment": "test"})
        )
        self.provider.add_span_processor(self.processor)
        self.tracer: Tracer = self.provider.get_tracer("my.agent", "1.2.3")

    def events(self) -> list[tuple[EventKind, dict[str, Any]]]:
        with Spool.open(self.config) as spool:
            return [(r.kind, json.loads(r.payload)) for r in spool.export(list(EventState))]

    def ends(self) -> dict[str, dict[str, Any]]:
        return {p["name"]: p for kind, p in self.events() if kind is EventKind.END}

    def refused(self) -> dict[str, int]:
        with Spool.open(self.config) as spool:
            return dict(spool.stats().refused)


@pytest.fixture
def traced(spool_config: SpoolConfig) -> Iterator[Traced]:
    made = Traced(spool_config)
    yield made
    made.provider.shutdown()


def test_it_is_a_real_span_processor() -> None:
    assert issubclass(SpoolSpanProcessor, SpanProcessor)


def test_a_span_tree_is_spooled_at_start_and_end_with_stable_linked_ids(traced: Traced) -> None:
    with (
        traced.tracer.start_as_current_span("agent") as root,
        traced.tracer.start_as_current_span("plan") as child,
    ):
        traced.tracer.start_span("step").end()
    events = traced.events()
    # Start and end of each, in the order they happened.
    assert [(k.value, p["name"]) for k, p in events] == [
        ("start", "agent"), ("start", "plan"), ("start", "step"),
        ("end", "step"), ("end", "plan"), ("end", "agent"),
    ]  # fmt: skip
    root_ctx, child_ctx = root.get_span_context(), child.get_span_context()
    trace_hex = f"{root_ctx.trace_id:032x}"
    expected_trace = str(uuid.UUID(trace_hex))
    for kind, params in events:
        assert params["trace_id"] == expected_trace
        assert params["obs_trace_id"] == trace_hex
        assert len(params["obs_span_id"]) == 16
        assert params["id"] == str(uuid.UUID(trace_hex[:16] + params["obs_span_id"]))
        assert ("end_timestamp" in params) is (kind is EventKind.END)
    starts = {p["name"]: p for k, p in events if k is EventKind.START}
    ends = traced.ends()
    assert {n: p["id"] for n, p in starts.items()} == {n: p["id"] for n, p in ends.items()}
    assert ends["agent"]["obs_span_id"] == f"{root_ctx.span_id:016x}"
    assert "parent_id" not in ends["agent"]
    assert ends["plan"]["parent_id"] == ends["agent"]["id"] == scale_ids(root_ctx)[1]
    assert ends["step"]["parent_id"] == ends["plan"]["id"] == scale_ids(child_ctx)[1]
    assert starts["step"]["parent_id"] == ends["plan"]["id"]


def test_timestamps_status_and_metadata_come_from_the_span(traced: Traced) -> None:
    span = traced.tracer.start_span(
        "fetch",
        kind=SpanKind.CLIENT,
        attributes={"http.method": "GET", "retries": 2, "tags": ("a", "b")},
        links=[Link(traced.tracer.start_span("other").get_span_context(), {"why": "cause"})],
        start_time=T0_NS,
    )
    span.add_event("retry", {"attempt": 1}, timestamp=T0_NS + SECOND)
    span.set_status(Status(StatusCode.ERROR, "upstream 503"))
    span.end(end_time=T0_NS + 2 * SECOND)
    fetch = traced.ends()["fetch"]
    assert fetch["start_timestamp"] == T0_ISO
    assert fetch["end_timestamp"] == T1_ISO
    assert fetch["status"] == "ERROR"
    assert fetch["type"] == "EXTERNAL_ENDPOINT"  # a CLIENT span with no GenAI convention
    assert fetch["input"] == fetch["output"] == {}
    metadata = fetch["metadata"]
    assert {k: metadata[k] for k in ("http.method", "retries", "tags")} == {
        "http.method": "GET", "retries": 2, "tags": ["a", "b"]
    }  # fmt: skip
    assert metadata["otel.span_kind"] == "CLIENT"
    assert metadata["otel.scope"] == {"name": "my.agent", "version": "1.2.3"}
    assert metadata["otel.status_description"] == "upstream 503"
    assert metadata["otel.events"] == [
        {"name": "retry", "timestamp": "2025-01-02T03:04:06.123456+00:00",
         "attributes": {"attempt": 1}}
    ]  # fmt: skip
    (link,) = metadata["otel.links"]
    assert link["attributes"] == {"why": "cause"}
    assert len(link["trace_id"]) == 32
    assert metadata["otel.resource"]["service.name"] == "agent-svc"
    assert metadata["otel.resource"]["deployment"] == "test"


def test_an_exception_in_a_span_is_an_error_with_its_event(traced: Traced) -> None:
    with (
        pytest.raises(RuntimeError, match="model down"),
        traced.tracer.start_as_current_span("llm"),
    ):
        raise RuntimeError("model down")
    llm = traced.ends()["llm"]
    assert llm["status"] == "ERROR"
    (event,) = llm["metadata"]["otel.events"]
    assert event["name"] == "exception"
    assert event["attributes"]["exception.message"] == "model down"
    assert event["attributes"]["exception.type"] == "RuntimeError"


def test_openinference_input_and_output_values(traced: Traced) -> None:
    request = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    with traced.tracer.start_as_current_span(
        "llm",
        attributes={
            "openinference.span.kind": "LLM",
            "input.value": json.dumps(request),
            "input.mime_type": "application/json",
            "llm.model_name": "m",
        },
    ) as span:
        span.set_attribute("output.value", "hello there")
        span.set_attribute("output.mime_type", "text/plain")
    with traced.tracer.start_as_current_span(
        "lookup", attributes={"openinference.span.kind": "TOOL", "input.value": "[1, 2]"}
    ):
        pass
    ends = traced.ends()
    assert ends["llm"]["input"] == request
    assert ends["llm"]["output"] == {"value": "hello there"}
    assert ends["llm"]["type"] == "COMPLETION"
    assert "input.value" not in ends["llm"]["metadata"]  # not repeated
    assert "output.mime_type" not in ends["llm"]["metadata"]
    assert ends["llm"]["metadata"]["llm.model_name"] == "m"
    assert ends["llm"]["metadata"]["openinference.span.kind"] == "LLM"
    assert ends["lookup"]["input"] == {"value": "[1, 2]"}  # no mime type: text
    assert ends["lookup"]["type"] == "CUSTOM"
    # The start event holds what was known at start: the input, not the output.
    start = next(p for k, p in traced.events() if k is EventKind.START and p["name"] == "llm")
    assert start["input"] == request
    assert start["output"] == {}


def test_gen_ai_messages_new_and_legacy_conventions(traced: Traced) -> None:
    messages_in = [{"role": "user", "parts": [{"type": "text", "content": "2+2?"}]}]
    messages_out = [{"role": "assistant", "parts": [{"type": "text", "content": "4"}]}]
    with traced.tracer.start_as_current_span(
        "chat m",
        kind=SpanKind.CLIENT,
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "m",
            "gen_ai.input.messages": json.dumps(messages_in),
            "gen_ai.output.messages": json.dumps(messages_out),
            "gen_ai.system_instructions": json.dumps([{"type": "text", "content": "be brief"}]),
        },
    ):
        pass
    with traced.tracer.start_as_current_span(
        "legacy",
        attributes={
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.prompt.0.role": "system",
            "gen_ai.prompt.0.content": "be brief",
            "gen_ai.prompt.1.role": "user",
            "gen_ai.prompt.1.content": "2+2?",
            "gen_ai.completion.0.role": "assistant",
            "gen_ai.completion.0.content": "4",
            "gen_ai.prompt.template": "kept in metadata",
        },
    ):
        pass
    with traced.tracer.start_as_current_span(
        "agent", attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.prompt": "go"}
    ):
        pass
    ends = traced.ends()
    chat = ends["chat m"]
    assert chat["input"] == {
        "messages": messages_in,
        "system_instructions": [{"type": "text", "content": "be brief"}],
    }
    assert chat["output"] == {"messages": messages_out}
    assert chat["type"] == "COMPLETION"  # the convention wins over the CLIENT kind
    assert chat["metadata"]["gen_ai.request.model"] == "m"
    assert not {"gen_ai.input.messages", "gen_ai.output.messages"} & set(chat["metadata"])
    legacy = ends["legacy"]
    assert legacy["input"] == {
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "2+2?"},
        ]
    }
    assert legacy["output"] == {"messages": [{"role": "assistant", "content": "4"}]}
    assert legacy["type"] == "CUSTOM"
    assert legacy["metadata"]["gen_ai.prompt.template"] == "kept in metadata"
    assert not [k for k in legacy["metadata"] if k.startswith("gen_ai.prompt.0")]
    assert ends["agent"]["input"] == {"value": "go"}
    assert ends["agent"]["type"] == "AGENT_WORKFLOW"


def test_span_types_are_scale_gp_span_types() -> None:
    sdk_types = set(get_args(SpanType))
    assert set(OPENINFERENCE_TYPES.values()) <= sdk_types
    assert set(GEN_AI_OPERATION_TYPES.values()) <= sdk_types


def test_on_end_returns_once_the_span_is_committed(traced: Traced) -> None:
    span = traced.tracer.start_span("durable")
    assert [p["name"] for _, p in traced.events()] == ["durable"]  # the start, read elsewhere
    span.end()
    # Read through a connection of its own, before any flush or shutdown.
    assert [k.value for k, _ in traced.events()] == ["start", "end"]
    assert traced.processor.force_flush(timeout_millis=1) is True


def test_spans_ended_on_many_threads_are_all_spooled(traced: Traced) -> None:
    threads, spans = 8, 40

    def work(n: int) -> None:
        with traced.tracer.start_as_current_span(f"job-{n}"):
            for i in range(spans):
                traced.tracer.start_span(f"job-{n}-step-{i}").end()

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(work, range(threads)))
    ends = traced.ends()
    assert len(ends) == threads * (1 + spans)
    for n in range(threads):
        parent = ends[f"job-{n}"]
        assert {ends[f"job-{n}-step-{i}"]["parent_id"] for i in range(spans)} == {parent["id"]}
        assert {ends[f"job-{n}-step-{i}"]["trace_id"] for i in range(spans)} == {parent["trace_id"]}
    assert len({p["trace_id"] for p in ends.values()}) == threads


def test_shutdown_is_bounded_idempotent_and_later_spans_are_not_taken(traced: Traced) -> None:
    traced.tracer.start_span("before").end()
    traced.provider.shutdown()
    traced.processor.shutdown()  # twice: harmless
    late = TracerProvider()
    late.add_span_processor(traced.processor)
    late.get_tracer("t").start_span("after").end()
    assert [p["name"] for _, p in traced.events()] == ["before", "before"]


def test_trouble_is_counted_and_never_raised_into_the_application(tmp_path: Path) -> None:
    config = SpoolConfig(path=tmp_path / "small.db", max_event_bytes=4096)

    def fussy(params: dict[str, Any]) -> dict[str, Any]:
        if params["name"] == "secret":
            raise ValueError("nope")
        return params

    traced = Traced(config, redact=fussy)
    try:
        traced.tracer.start_span("huge", attributes={"blob": "x" * 10_000}).end()
        traced.tracer.start_span("secret").end()
        traced.tracer.start_span("fine").end()
    finally:
        traced.provider.shutdown()
    assert traced.refused() == {"too_large": 2, "redact_failed": 2}
    assert [p["name"] for _, p in traced.events()] == ["fine", "fine"]


def test_a_broken_spool_never_breaks_the_application(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool_dir = tmp_path / "a-directory.db"
    spool_dir.mkdir()
    traced = Traced(SpoolConfig(path=spool_dir))
    try:
        with traced.tracer.start_as_current_span("work") as span:
            span.set_attribute("still", "running")
    finally:
        traced.provider.shutdown()
    assert not span.is_recording()  # the application's span ended as usual
    dropped = [r.getMessage() for r in caplog.records if r.name == "spool"]
    assert dropped
    # The burst's first drop says why; a later line counts both events (the burst's summary
    # or shutdown's count of what the spool itself could not record).
    assert "is a directory, not a spool file" in dropped[0]
    assert any("2 in this burst" in m or "2 span event(s) were not spooled" in m for m in dropped)


def test_the_redact_hook_applies_to_otel_spans(spool_config: SpoolConfig) -> None:
    traced = Traced(spool_config, redact=default_redactor())
    key = "sk-" + "a1B2" * 8
    try:
        with traced.tracer.start_as_current_span(
            "llm", attributes={"input.value": f"use {key}", "user.email": "a@b.example.com"}
        ):
            pass
    finally:
        traced.provider.shutdown()
    llm = traced.ends()["llm"]
    assert llm["input"] == {"value": "use [REDACTED:api_key]"}
    assert llm["metadata"]["user.email"] == "[REDACTED:email]"
    data = b"".join(p.read_bytes() for p in spool_config.path.parent.iterdir() if p.is_file())
    assert key.encode() not in data


def test_span_params_of_a_span_still_open_is_a_start_event(traced: Traced) -> None:
    span = traced.tracer.start_span("open")
    assert isinstance(span, ReadableSpan)
    params = span_params(span)
    assert "end_timestamp" not in params
    assert params["start_timestamp"] is not None
    span.end()


def test_spool_otel_without_opentelemetry_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``import spool`` itself never loads OpenTelemetry (test_spool_exports.py checks that);
    ``import spool.otel`` without it names the extra to install."""
    for name in [m for m in sys.modules if m.split(".")[0] == "opentelemetry"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "spool.otel")
    with pytest.raises(ImportError, match=re.escape("pip install 'spool-ship[otel]'")):
        importlib.import_module("spool.otel")
