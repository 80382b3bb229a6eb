"""An OpenTelemetry-instrumented agent ships its spans to Scale GP through the spool, tree intact.

Everything real but the far ends: the OpenTelemetry SDK, OpenInference's OpenAI instrumentation
wrapping the real ``openai`` client, which talks to a stand-in of the OpenAI API on 127.0.0.1
(below); ``SpoolSpanProcessor`` ships in-process through the real scale-gp-beta client to
``FakeSpanServer``. OpenTelemetry's own ``InMemorySpanExporter`` on the same provider records
the tree as OpenTelemetry saw it, to compare with what arrived.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import openai
import pytest
from conftest import run_program
from openinference.instrumentation.openai import OpenAIInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shipper import ShipperConfig
from shipper.testing import FakeSpanServer
from spool import EventState, Spool
from spool.otel import SpoolSpanProcessor, scale_ids
from spool.redact import default_redactor

MODEL = "gpt-4o-mini"
ANSWERS = {"What is the capital of France?": "Paris."}
USER_KEY = "sk-live-" + "Q7r9" * 8  # a key a user pasted into a prompt


class OpenAIStandIn(ThreadingHTTPServer):
    """``POST /v1/chat/completions`` as the OpenAI API answers it: the reply is the last user
    message's answer from ``ANSWERS`` (else an echo); a message containing "fail" gets a 500."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[dict[str, Any]] = []
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def __enter__(self) -> OpenAIStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(timeout=10)


class _Handler(BaseHTTPRequestHandler):
    server: OpenAIStandIn

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append({"path": self.path, "body": body})
        question = body["messages"][-1]["content"]
        if self.path != "/v1/chat/completions":
            self._send(404, {"error": {"message": "not found", "type": "invalid_request_error"}})
        elif "fail" in question:
            self._send(500, {"error": {"message": "overloaded", "type": "server_error"}})
        else:
            answer = ANSWERS.get(question, f"echo: {question}")
            self._send(
                200,
                {
                    "id": f"chatcmpl-{len(self.server.requests)}",
                    "object": "chat.completion",
                    "created": 1_735_787_045,
                    "model": body["model"],
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": answer},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
                },
            )

    def _send(self, status: int, payload: object) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def openai_api() -> Iterator[OpenAIStandIn]:
    with OpenAIStandIn() as server:
        yield server


class Agent:
    """An agent's tracing setup: its provider, the spool processor, OpenInference's OpenAI
    instrumentation, and OpenTelemetry's in-memory exporter as a witness."""

    def __init__(self, processor: SpoolSpanProcessor, openai_api: OpenAIStandIn) -> None:
        self.processor = processor
        self.provider = TracerProvider()
        self.provider.add_span_processor(processor)
        self.witness = InMemorySpanExporter()
        self.provider.add_span_processor(SimpleSpanProcessor(self.witness))
        self.tracer = self.provider.get_tracer("my.agent")
        self.client = openai.OpenAI(api_key="sk-test", base_url=openai_api.base_url, max_retries=0)
        self.instrumentor = OpenAIInstrumentor()

    def __enter__(self) -> Agent:
        self.instrumentor.instrument(tracer_provider=self.provider)
        return self

    def __exit__(self, *exc: object) -> None:
        self.instrumentor.uninstrument()
        self.provider.shutdown()  # ships what it can, within the processor's bound
        self.client.close()

    def ask(self, question: str) -> str:
        reply = self.client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": question}]
        )
        return reply.choices[0].message.content or ""

    def finished(self) -> dict[str, ReadableSpan]:
        return {span.name: span for span in self.witness.get_finished_spans()}


def by_obs_span_id(span_server: FakeSpanServer) -> dict[str, dict[str, Any]]:
    return {item["obs_span_id"]: item for item in span_server.spans().values()}


def obs_span_id(span: ReadableSpan) -> str:
    context = span.get_span_context()
    assert context is not None
    return f"{context.span_id:016x}"


def assert_tree(
    stored: dict[str, dict[str, Any]], witnessed: tuple[ReadableSpan, ...], root: ReadableSpan
) -> None:
    """Every span arrived whole (the end carries it), once, in one trace, under ``root``."""
    root_ctx = root.get_span_context()
    assert root_ctx is not None
    assert len(stored) == len(witnessed)
    trace_id, root_id = scale_ids(root_ctx)
    for span in witnessed:
        ctx = span.get_span_context()
        assert ctx is not None
        item = stored[f"{ctx.span_id:016x}"]
        assert item["name"] == span.name
        assert item["trace_id"] == trace_id
        assert item["obs_trace_id"] == f"{root_ctx.trace_id:032x}"
        assert item["id"] == scale_ids(ctx)[1]
        assert "end_timestamp" in item
        if span is not root:
            assert item["parent_id"] == root_id


@pytest.fixture
def agent_on(
    tmp_path: Path, openai_api: OpenAIStandIn, ship_config: ShipperConfig
) -> Callable[..., Agent]:
    """An :class:`Agent` whose processor spools to ``tmp_path / "otel.db"`` and ships to
    ``span_server``; keyword arguments go to :class:`SpoolSpanProcessor`."""

    def make(**options: Any) -> Agent:
        processor = SpoolSpanProcessor(tmp_path / "otel.db", ship=ship_config, **options)
        return Agent(processor, openai_api)

    return make


def test_an_instrumented_openai_agent_ships_its_span_tree_intact(
    agent_on: Callable[..., Agent], openai_api: OpenAIStandIn, span_server: FakeSpanServer
) -> None:
    with agent_on() as agent:
        with agent.tracer.start_as_current_span(
            "agent-turn", attributes={"input.value": "What is the capital of France?"}
        ) as turn:
            answer = agent.ask("What is the capital of France?")
            with agent.tracer.start_as_current_span(
                "lookup", attributes={"openinference.span.kind": "TOOL", "tool.name": "atlas"}
            ):
                pass
            with pytest.raises(openai.InternalServerError):
                agent.ask("please fail")
            turn.set_attribute("output.value", answer)
        finished = agent.finished()

    assert answer == "Paris."
    assert [r["path"] for r in openai_api.requests] == ["/v1/chat/completions"] * 2
    # OpenInference made one LLM span per call, children of the agent's span.
    children = [s for s in agent.witness.get_finished_spans() if s.name != "agent-turn"]
    assert sorted(s.name for s in children) == ["ChatCompletion", "ChatCompletion", "lookup"]
    assert len(finished) == 3  # four spans, two of one name
    root = finished["agent-turn"]

    stored = by_obs_span_id(span_server)
    assert len(stored) == 4
    assert_tree(stored, agent.witness.get_finished_spans(), root)
    top = stored[obs_span_id(root)]
    assert "parent_id" not in top
    assert top["input"] == {"value": "What is the capital of France?"}
    assert top["output"] == {"value": "Paris."}
    failed, ok = sorted(
        (stored[obs_span_id(s)] for s in children if s.name == "ChatCompletion"),
        key=lambda item: str(item["status"]),
    )
    assert (failed["status"], ok["status"]) == ("ERROR", "SUCCESS")
    assert ok["type"] == failed["type"] == "COMPLETION"
    assert ok["input"] == {
        "model": MODEL,
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
    }
    assert ok["output"]["choices"][0]["message"] == {"role": "assistant", "content": "Paris."}
    assert ok["metadata"]["llm.model_name"] == MODEL
    assert ok["metadata"]["llm.token_count.total"] == 11
    assert ok["metadata"]["otel.scope"]["name"].startswith("openinference.instrumentation")
    assert failed["input"]["messages"] == [{"role": "user", "content": "please fail"}]
    exception = failed["metadata"]["otel.events"][0]
    assert exception["name"] == "exception"
    assert "InternalServerError" in exception["attributes"]["exception.type"]
    assert stored[obs_span_id(finished["lookup"])]["type"] == "CUSTOM"

    # The spool holds a start and an end per span, every one delivered.
    with Spool.open(agent.processor.config) as spool:
        records = list(spool.export(list(EventState)))
    assert {r.state for r in records} == {EventState.DONE}
    assert len(records) == 8  # a start and an end per span
    assert span_server.order_violations() == []


def test_concurrent_async_calls_each_stay_under_their_own_turn(
    agent_on: Callable[..., Agent], openai_api: OpenAIStandIn, span_server: FakeSpanServer
) -> None:
    """``AsyncOpenAI`` calls of four turns run at once on one loop: OpenTelemetry's context
    follows each task, and the spool keeps every LLM span under the turn that made it."""
    agent = agent_on()

    async def turn(client: openai.AsyncOpenAI, n: int) -> None:
        with agent.tracer.start_as_current_span(f"turn-{n}"):
            await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": f"question {n}"}]
            )

    async def main() -> None:
        async with openai.AsyncOpenAI(
            api_key="sk-test", base_url=openai_api.base_url, max_retries=0
        ) as client:
            await asyncio.gather(*(turn(client, n) for n in range(4)))

    with agent:
        asyncio.run(main())
    stored = list(span_server.spans().values())
    assert len(stored) == 8
    turns = {item["name"]: item["id"] for item in stored if item["name"].startswith("turn-")}
    calls = [item for item in stored if item["type"] == "COMPLETION"]
    assert (len(turns), len(calls)) == (4, 4)
    for item in calls:
        (message,) = item["input"]["messages"]
        n = message["content"].removeprefix("question ")
        assert item["parent_id"] == turns[f"turn-{n}"]
        assert item["output"]["choices"][0]["message"]["content"] == f"echo: question {n}"


def test_a_key_in_a_prompt_reaches_neither_the_spool_nor_the_endpoint(
    agent_on: Callable[..., Agent], openai_api: OpenAIStandIn, span_server: FakeSpanServer
) -> None:
    agent = agent_on(redact=default_redactor())
    path = agent.processor.config.path
    with agent, agent.tracer.start_as_current_span("turn"):
        reply = agent.ask(f"Is {USER_KEY} a valid key?")
    assert USER_KEY in reply  # the stand-in echoed it: the key was in every LLM attribute
    assert USER_KEY in json.dumps(openai_api.requests)
    stored = json.dumps(list(span_server.spans().values()))
    assert len(span_server.spans()) == 2
    assert USER_KEY not in stored
    assert "[REDACTED:api_key]" in stored
    for suffix in ("", "-wal", "-shm"):
        file = Path(f"{path}{suffix}")
        assert not file.exists() or USER_KEY.encode() not in file.read_bytes()


def test_the_otel_example_ships_its_tree_with_the_address_redacted(
    tmp_path: Path, span_server: FakeSpanServer, ship_env: dict[str, str]
) -> None:
    """examples/otel_tracing.py (docs/integrating.md) as a user runs it; the generic checks are
    in test_integration_examples.py, these are the OpenTelemetry ones."""
    path = tmp_path / "spool.db"
    example = Path(__file__).resolve().parents[1] / "examples" / "otel_tracing.py"
    done = run_program([str(example), str(path)], ship_env)
    assert done.returncode == 0, done.stderr
    stored = list(span_server.spans().values())
    assert len(stored) == 6
    turns = {item["id"]: item for item in stored if item["name"] == "answer-question"}
    chats = [item for item in stored if item["name"] == "chat gpt-4o-mini"]
    assert sorted(item["parent_id"] for item in chats) == sorted(turns)
    assert {item["type"] for item in chats} == {"COMPLETION"}
    assert {item["metadata"]["otel.resource"]["service.name"] for item in stored} == {"support-bot"}
    text = json.dumps(stored)
    assert "ada@example.org" not in text
    assert "mail the answer to [REDACTED:email]" in text
