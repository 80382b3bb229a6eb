"""Spooling agentex's tracing: append the spool processors to agentex's processor lists.

    SGP_API_KEY=... SGP_ACCOUNT_ID=... python examples/agentex_processor.py /var/lib/agent/spool.db

With agentex installed, every span an agent opens (``adk.tracing.span(...)``) is also handed to
the spool processors. Without agentex, this example drives the async processor directly with
spans shaped like ``agentex.types.span.Span``, as agentex would.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from spool import SpoolProcessor, SyncSpoolProcessor

TURNS = 3


def register_with_agentex(path: str) -> tuple[SpoolProcessor, SyncSpoolProcessor] | None:
    """Add spool processors next to agentex's own; None when agentex is not installed."""
    try:
        manager = importlib.import_module("agentex.lib.core.tracing.tracing_processor_manager")
    except ImportError:
        return None
    async_processor = SpoolProcessor(path, ship=True)  # credentials from SGP_* variables
    sync_processor = SyncSpoolProcessor(path, ship=True)  # shares the same shipper
    manager.GLOBAL_TRACING_PROCESSOR_MANAGER.async_processors.append(async_processor)
    manager.GLOBAL_TRACING_PROCESSOR_MANAGER.sync_processors.append(sync_processor)
    return async_processor, sync_processor


async def agentex_turns(task_id: str) -> None:
    """What an agentex agent does; its spans reach the spool through agentex."""
    adk: Any = importlib.import_module("agentex.lib.adk")
    for turn in range(TURNS):
        async with adk.tracing.span(
            trace_id=task_id, task_id=task_id, name=f"Turn {turn}", input={"turn": turn}
        ) as span:
            if span:
                span.output = {"reply": f"reply {turn}"}


@dataclass
class AgentexLikeSpan:
    """The fields of ``agentex.types.span.Span``."""

    name: str
    trace_id: str
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    start_time: datetime = field(default_factory=lambda: datetime.now(UTC))
    end_time: datetime | None = None
    parent_id: str | None = None
    task_id: str | None = None
    input: dict[str, Any] | None = None
    output: dict[str, Any] | None = None
    data: dict[str, Any] | None = None


async def direct_turns(processor: SpoolProcessor, task_id: str) -> None:
    """The same turns, with the processor called as agentex calls it."""
    for turn in range(TURNS):
        span = AgentexLikeSpan(f"Turn {turn}", task_id, task_id=task_id, input={"turn": turn})
        span.data = {"__span_type__": "AGENT_WORKFLOW"}
        await processor.on_span_start(span)
        span.output, span.end_time = {"reply": f"reply {turn}"}, datetime.now(UTC)
        await processor.on_span_end(span)


async def main(path: str) -> None:
    task_id = str(uuid.uuid4())
    registered = register_with_agentex(path)
    if registered is not None:
        async_processor, sync_processor = registered
        await agentex_turns(task_id)
        await asyncio.to_thread(sync_processor.shutdown, 10)
    else:
        async_processor = SpoolProcessor(path, ship=True)
        await direct_turns(async_processor, task_id)
    await async_processor.shutdown(timeout=10)
    via = "agentex" if registered is not None else "the processor directly"
    print(f"traced {TURNS} spans into {path} through {via}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
