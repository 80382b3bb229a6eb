"""OpenTelemetry spans, spooled: :class:`SpoolSpanProcessor` is an OpenTelemetry SDK
``SpanProcessor`` that commits each span's start and end to the spool, as the other processors
do, and ships them to Scale GP from there.

>>> from opentelemetry.sdk.trace import TracerProvider
>>> from spool.otel import SpoolSpanProcessor
>>> provider = TracerProvider()
>>> provider.add_span_processor(SpoolSpanProcessor("/var/lib/agent/spool.db", ship=True))

Needs the OpenTelemetry SDK (``pip install 'spool-ship[otel]'``); ``import spool`` does not.

How a span becomes a ``SpanCreateParam`` (:func:`span_params`):

- ids: the W3C ids are kept as ``obs_trace_id`` (32 hex) and ``obs_span_id`` (16 hex). The
  Scale GP ``trace_id`` is the W3C trace id written as a UUID; a span's ``id`` (and its child's
  ``parent_id``) is the UUID made of the trace id's first 16 hex digits and the W3C span id.
  So the same span gets the same ids at start and end, in every process, and links to its
  parent without any state kept here.
- ``start_timestamp``/``end_timestamp`` from the span's nanoseconds (ISO-8601, UTC, to the
  microsecond); ``status`` ERROR when the OpenTelemetry status is ERROR, else SUCCESS.
- ``input``/``output``: OpenInference's ``input.value``/``output.value`` (parsed when their
  mime type is JSON), else GenAI's ``gen_ai.input.messages``/``gen_ai.output.messages`` (with
  ``gen_ai.system_instructions``), else the older ``gen_ai.prompt.N.*``/``gen_ai.completion.N.*``
  attributes, as ``{"messages": [...]}``.
- ``metadata``: every other attribute as it is, plus ``otel.span_kind``, ``otel.scope``,
  ``otel.status_description``, ``otel.events``, ``otel.links`` and ``otel.resource`` (the
  resource's attributes).
- ``type``: from ``openinference.span.kind`` or ``gen_ai.operation.name`` where a Scale GP
  span type matches (:data:`OPENINFERENCE_TYPES`, :data:`GEN_AI_OPERATION_TYPES`), else
  EXTERNAL_ENDPOINT for a CLIENT span, else STANDALONE.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

try:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
    from opentelemetry.trace import SpanContext, SpanKind, StatusCode
except ImportError as exc:  # pragma: no cover - the dev extra installs it
    raise ImportError(
        "spool.otel needs the OpenTelemetry SDK: pip install 'spool-ship[otel]'"
    ) from exc

from ._model import Counter, EventKind
from .config import SpoolConfig
from .processor import SyncSpoolProcessor
from .redact import Redact

__all__ = [
    "GEN_AI_OPERATION_TYPES",
    "OPENINFERENCE_TYPES",
    "SpoolSpanProcessor",
    "scale_ids",
    "span_params",
]

log = logging.getLogger("spool")

OPENINFERENCE_TYPES: dict[str, str] = {
    "LLM": "COMPLETION",
    "RETRIEVER": "KB_RETRIEVAL",
    "RERANKER": "RERANKING",
    "AGENT": "AGENT_WORKFLOW",
    "GUARDRAIL": "GUARDRAIL",
    "EVALUATOR": "EVALUATION",
    "PROMPT": "PROMPT_ENGINEERING",
    "TOOL": "CUSTOM",
    "CHAIN": "CUSTOM",
    "EMBEDDING": "CUSTOM",
    "DECISION": "CUSTOM",
}
"""``openinference.span.kind`` to Scale GP span type."""

GEN_AI_OPERATION_TYPES: dict[str, str] = {
    "chat": "COMPLETION",
    "text_completion": "COMPLETION",
    "generate_content": "COMPLETION",
    "embeddings": "CUSTOM",
    "execute_tool": "CUSTOM",
    "create_agent": "AGENT_WORKFLOW",
    "invoke_agent": "AGENT_WORKFLOW",
    "invoke_workflow": "AGENT_WORKFLOW",
}
"""``gen_ai.operation.name`` to Scale GP span type."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_JSON_MIME = "application/json"
_LEGACY_MESSAGE = re.compile(r"gen_ai\.(prompt|completion)\.(\d+)\.(.+)")


class SpoolSpanProcessor(SpanProcessor):
    """An OpenTelemetry SDK span processor that spools every span's start and end.

    ``on_start``/``on_end`` return once the event is committed to the spool (they run on the
    thread that starts or ends the span, so that thread waits for the commit, as with
    :class:`~spool.SyncSpoolProcessor`, whose machinery this is). They never raise into the
    application: a span that cannot be mapped or spooled is counted with its reason.
    ``ship=``, ``config=`` and ``redact=`` as for the other processors.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        ship: object = False,
        config: SpoolConfig | None = None,
        redact: Redact | None = None,
        shutdown_timeout: float = 10.0,
    ) -> None:
        self._spool = SyncSpoolProcessor(path, config=config, ship=ship, redact=redact)
        self._shutdown_timeout = shutdown_timeout
        self._closed = threading.Event()

    @property
    def config(self) -> SpoolConfig:
        return self._spool.config

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self._write(span, EventKind.START)

    def on_end(self, span: ReadableSpan) -> None:
        self._write(span, EventKind.END)

    def _write(self, span: ReadableSpan, kind: EventKind) -> None:
        if self._closed.is_set():
            return  # the OpenTelemetry contract: nothing is taken after shutdown
        try:
            params = span_params(span)
        except Exception as exc:
            # A span's own data broke the mapping: tracing trouble, counted, not raised.
            self._spool._writer.count(
                Counter.REFUSED_UNSERIALIZABLE, f"spool: cannot map an OpenTelemetry span: {exc!r}"
            )
            return
        try:
            if kind is EventKind.START:
                self._spool.on_span_start(params)
            else:
                self._spool.on_span_end(params)
        except Exception:  # pragma: no cover - the processor counts its own trouble
            log.exception("spool: an OpenTelemetry span was not spooled")

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """``True``: nothing waits here to be written, every ended span was committed to the
        spool when ``on_end`` returned. Shipping goes on from the spool."""
        return True

    def shutdown(self) -> None:
        """Stop taking spans, then release the spool: with ``ship=``, the in-process shipper
        ships what it can within ``shutdown_timeout`` seconds; the rest stays spooled."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._spool.shutdown(self._shutdown_timeout)


def scale_ids(context: SpanContext) -> tuple[str, str]:
    """``(trace_id, id)`` of the Scale GP span for an OpenTelemetry span context."""
    trace_hex = f"{context.trace_id:032x}"
    return str(uuid.UUID(trace_hex)), str(uuid.UUID(f"{trace_hex[:16]}{context.span_id:016x}"))


def span_params(span: ReadableSpan) -> dict[str, Any]:
    """The ``SpanCreateParam`` dict for an OpenTelemetry span (an end event when the span has
    ended, else a start event). Raises ``ValueError`` for a span without a valid context."""
    context = span.get_span_context()
    if context is None or not context.is_valid:
        raise ValueError(f"span {span.name!r} has no valid span context")
    trace_id, span_id = scale_ids(context)
    attributes = dict(span.attributes or {})
    params: dict[str, Any] = {
        "name": span.name,
        "id": span_id,
        "trace_id": trace_id,
        "obs_trace_id": f"{context.trace_id:032x}",
        "obs_span_id": f"{context.span_id:016x}",
        "start_timestamp": _time(span.start_time),
        "type": _span_type(span.kind, attributes),
        "status": "ERROR" if span.status.status_code is StatusCode.ERROR else "SUCCESS",
    }
    parent = span.parent
    if parent is not None and parent.is_valid:
        params["parent_id"] = scale_ids(parent)[1]
    if span.end_time is not None:
        params["end_timestamp"] = _time(span.end_time)
    params["input"] = _content(attributes, "input", "prompt")
    params["output"] = _content(attributes, "output", "completion")
    params["metadata"] = _metadata(span, attributes)
    return params


def _time(nanoseconds: int | None) -> datetime | None:
    if nanoseconds is None:
        return None  # not started: refused by the mapping as missing_start_timestamp
    return _EPOCH + timedelta(microseconds=nanoseconds // 1000)


def _span_type(kind: SpanKind, attributes: Mapping[str, object]) -> str:
    openinference = attributes.get("openinference.span.kind")
    if isinstance(openinference, str) and openinference.upper() in OPENINFERENCE_TYPES:
        return OPENINFERENCE_TYPES[openinference.upper()]
    operation = attributes.get("gen_ai.operation.name")
    if isinstance(operation, str) and operation in GEN_AI_OPERATION_TYPES:
        return GEN_AI_OPERATION_TYPES[operation]
    return "EXTERNAL_ENDPOINT" if kind is SpanKind.CLIENT else "STANDALONE"


def _content(attributes: dict[str, Any], side: str, legacy: str) -> dict[str, Any]:
    """The span's ``input`` or ``output`` from the conventions that carry it; the attributes
    used are taken out of ``attributes`` (so metadata does not repeat them)."""
    value = attributes.pop(f"{side}.value", None)
    mime = attributes.pop(f"{side}.mime_type", None)
    if value is not None:
        return _as_object(_parsed(value) if mime == _JSON_MIME else value)
    content: dict[str, Any] = {}
    messages = attributes.pop(f"gen_ai.{side}.messages", None)
    if messages is not None:
        content["messages"] = _parsed(messages)
    if side == "input" and (system := attributes.pop("gen_ai.system_instructions", None)):
        content["system_instructions"] = _parsed(system)
    if content:
        return content
    indexed: dict[int, dict[str, Any]] = {}
    for key in [k for k in attributes if k.startswith(f"gen_ai.{legacy}.")]:
        match = _LEGACY_MESSAGE.fullmatch(key)
        if match is not None:
            indexed.setdefault(int(match[2]), {})[match[3]] = attributes.pop(key)
    if indexed:
        return {"messages": [indexed[i] for i in sorted(indexed)]}
    plain = attributes.pop(f"gen_ai.{legacy}", None)
    return {} if plain is None else _as_object(plain)


def _parsed(value: object) -> object:
    """A JSON string as its value; anything else (or text that is not JSON) as it is."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _as_object(value: object) -> dict[str, Any]:
    if isinstance(value, Mapping):
        return dict(value)
    return {"value": list(value) if isinstance(value, tuple) else value}


def _metadata(span: ReadableSpan, attributes: dict[str, Any]) -> dict[str, Any]:
    metadata = attributes
    metadata["otel.span_kind"] = span.kind.name
    scope = span.instrumentation_scope
    if scope is not None:
        metadata["otel.scope"] = {"name": scope.name, "version": scope.version}
    if span.status.description:
        metadata["otel.status_description"] = span.status.description
    if span.events:
        metadata["otel.events"] = [
            {
                "name": event.name,
                "timestamp": _time(event.timestamp),
                "attributes": dict(event.attributes or {}),
            }
            for event in span.events
        ]
    if span.links:
        metadata["otel.links"] = [_link(link.context, link.attributes) for link in span.links]
    metadata["otel.resource"] = dict(span.resource.attributes)
    return metadata


def _link(context: SpanContext, attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    return {
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
        "attributes": dict(attributes or {}),
    }
