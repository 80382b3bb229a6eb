"""Spooling agentex's tracing: one ``use_spool`` call at startup, the agent's code unchanged.

    SGP_API_KEY=... SGP_ACCOUNT_ID=... python examples/agentex_processor.py /var/lib/agent/spool.db

With agentex installed (``pip install 'spool-ship[agentex]'``, Python 3.12), ``use_spool``
registers the spool processors with agentex, and each ``async with adk.tracing.span(...)``
block's start and end are committed to the spool when the block is entered and exited. Without
agentex, this example calls the same processor itself with spans shaped like agentex's ``Span``.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from spool.agentex import AsyncSpoolTracingProcessor, use_spool

TURNS = 3


async def agentex_turns(task_id: str) -> None:
    """What an agentex agent does; its spans reach the spool through agentex."""
    from agentex.lib import adk

    for turn in range(TURNS):
        async with adk.tracing.span(
            trace_id=task_id,
            task_id=task_id,
            name=f"Turn {turn}",
            input={"turn": turn},
            data={"__span_type__": "AGENT_WORKFLOW"},
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


async def direct_turns(processor: AsyncSpoolTracingProcessor, task_id: str) -> None:
    """The same turns, with the processor called as agentex calls it."""
    for turn in range(TURNS):
        span = AgentexLikeSpan(f"Turn {turn}", task_id, task_id=task_id, input={"turn": turn})
        span.data = {"__span_type__": "AGENT_WORKFLOW"}
        await processor.on_span_start(span)
        span.output, span.end_time = {"reply": f"reply {turn}"}, datetime.now(UTC)
        await processor.on_span_end(span)


async def main(path: str) -> None:
    task_id = str(uuid.uuid4())
    try:
        processors = use_spool(path, ship=True)  # credentials from SGP_* variables
    except ImportError:  # no agentex here
        processor = AsyncSpoolTracingProcessor(path, ship=True)
        await direct_turns(processor, task_id)
        await processor.shutdown(timeout=10)
        via = "the processor directly"
    else:
        await agentex_turns(task_id)
        # Ships what is spooled within 10 s; anything left stays in the spool for next time.
        await processors.async_processor.shutdown(timeout=10)
        await asyncio.to_thread(processors.sync_processor.shutdown, 10)
        via = "agentex"
    print(f"traced {TURNS} spans into {path} through {via}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
