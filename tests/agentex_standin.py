"""A local stand-in for the parts of agentex that a tracing processor meets, so the embedded
tests run without agentex installed.

- :class:`Span` has the fields of ``agentex.types.span.Span`` (a pydantic model there too).
- :class:`SyncTracingProcessor` and :class:`AsyncTracingProcessor` copy the abstract interface
  of ``agentex.lib.core.tracing.processors.tracing_processor_interface``: the method names,
  parameters and async-ness a processor registered with agentex must provide. Like agentex's,
  the async one fans ``on_spans_start``/``on_spans_end`` out to the single-span methods unless
  a processor overrides them.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

__all__ = [
    "INTERFACE_METHODS",
    "AsyncTracingProcessor",
    "Span",
    "SyncTracingProcessor",
    "new_span",
]


class Span(BaseModel):
    """The fields of ``agentex.types.span.Span``."""

    id: str
    name: str
    start_time: datetime
    trace_id: str
    data: dict[str, Any] | list[dict[str, Any]] | None = None
    end_time: datetime | None = None
    input: dict[str, Any] | list[dict[str, Any]] | None = None
    output: dict[str, Any] | list[dict[str, Any]] | None = None
    parent_id: str | None = None
    task_id: str | None = None


def new_span(span_id: str, trace_id: str, name: str = "step", **fields: Any) -> Span:
    """A started span (``start_time`` now, unless given), as agentex builds one."""
    fields.setdefault("start_time", datetime.now(UTC))
    return Span(id=span_id, trace_id=trace_id, name=name, **fields)


class SyncTracingProcessor(ABC):
    """agentex's ``SyncTracingProcessor``: called from threads."""

    @abstractmethod
    def __init__(self, config: Any) -> None: ...

    @abstractmethod
    def on_span_start(self, span: Span) -> None: ...

    @abstractmethod
    def on_span_end(self, span: Span) -> None: ...

    @abstractmethod
    def shutdown(self) -> None: ...


class AsyncTracingProcessor(ABC):
    """agentex's ``AsyncTracingProcessor``: awaited on the agent's event loop."""

    @abstractmethod
    def __init__(self, config: Any) -> None: ...

    @abstractmethod
    async def on_span_start(self, span: Span) -> None: ...

    @abstractmethod
    async def on_span_end(self, span: Span) -> None: ...

    async def on_spans_start(self, spans: list[Span]) -> None:
        """Batched variant of ``on_span_start``; the default fans out, one call per span."""
        await asyncio.gather(*(self.on_span_start(s) for s in spans))

    async def on_spans_end(self, spans: list[Span]) -> None:
        await asyncio.gather(*(self.on_span_end(s) for s in spans))

    @abstractmethod
    async def shutdown(self) -> None: ...


INTERFACE_METHODS: dict[type[ABC], tuple[str, ...]] = {
    SyncTracingProcessor: ("on_span_start", "on_span_end", "shutdown"),
    AsyncTracingProcessor: (
        "on_span_start",
        "on_span_end",
        "on_spans_start",
        "on_spans_end",
        "shutdown",
    ),
}
"""What agentex calls on a registered processor (its constructor is agentex's business)."""
