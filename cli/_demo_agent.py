"""A simulated agent for ``spool-ship demo``: traces of nested spans, spooled through
``SpoolProcessor`` from many concurrent tasks, one line printed per acknowledged event.

Run as ``python -m cli._demo_agent SPOOL``; it runs until it is killed.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from spool import SpoolProcessor

__all__ = ["DemoSpan", "main"]

TASKS = 20
STEPS = ("plan", "retrieve", "rerank", "call_llm", "parse", "respond")


@dataclass
class DemoSpan:
    """The fields of agentex's ``Span``."""

    name: str
    trace_id: str
    parent_id: str | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    start_time: datetime = field(default_factory=lambda: datetime.now(UTC))
    end_time: datetime | None = None
    input: dict[str, Any] | None = None
    output: dict[str, Any] | None = None
    data: dict[str, Any] | None = None


async def _agent(processor: SpoolProcessor, worker: int) -> None:
    turn = 0
    while True:
        turn += 1
        trace_id = uuid.uuid4().hex
        root = DemoSpan(f"agent_turn_{worker}", trace_id, input={"user": f"question {turn}"})
        root.data = {"__span_type__": "AGENT_WORKFLOW"}
        await processor.on_span_start(root)
        print(f"start {root.id}", flush=True)
        for step in STEPS:
            child = DemoSpan(step, trace_id, parent_id=root.id, input={"turn": turn})
            child.data = {"__span_type__": "COMPLETION" if step == "call_llm" else "CUSTOM"}
            await processor.on_span_start(child)
            print(f"start {child.id}", flush=True)
            child.output = {"ok": True, "tokens": 42}
            child.end_time = datetime.now(UTC)
            await processor.on_span_end(child)
            print(f"end {child.id}", flush=True)
        root.output = {"answer": f"answer {turn}"}
        root.end_time = datetime.now(UTC)
        await processor.on_span_end(root)
        print(f"end {root.id}", flush=True)


async def _main(path: str) -> None:
    processor = SpoolProcessor(path)
    await asyncio.gather(*(_agent(processor, i) for i in range(TASKS)))


def main() -> None:
    asyncio.run(_main(sys.argv[1]))


if __name__ == "__main__":
    main()
