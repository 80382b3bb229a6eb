"""Child process for tests/test_agentex_durable.py: an agentex agent that SIGKILLs itself
right after its last span's ``async with adk.tracing.span(...)`` block exits.

    python durable_agent.py PATH MODE SPANS

MODE ``use_spool``: ``spool.agentex.use_spool(PATH)``. MODE ``queue``: the spool processors
registered only through agentex's registry (``add_tracing_processor_config``), so agentex's
``AsyncSpanQueue`` calls them when it gets to it. Prints ``span <id>`` once each block exited.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from typing import Any, cast

from agentex.lib import adk
from agentex.lib.core.tracing import tracing_processor_manager as manager

from spool.agentex import (
    AsyncSpoolTracingProcessor,
    SpoolTracingConfig,
    SyncSpoolTracingProcessor,
    use_spool,
)


def register(path: str, mode: str) -> None:
    if mode == "use_spool":
        use_spool(path)
        return
    registry = manager.GLOBAL_TRACING_PROCESSOR_MANAGER
    registry.sync_config_registry["spool"] = SyncSpoolTracingProcessor
    registry.async_config_registry["spool"] = AsyncSpoolTracingProcessor
    manager.add_tracing_processor_config(cast(Any, SpoolTracingConfig(path=path)))


async def agent(spans: int) -> None:
    task_id = str(uuid.uuid4())
    for n in range(spans):
        async with adk.tracing.span(
            trace_id=task_id, task_id=task_id, name=f"step {n}", input={"n": n}
        ) as span:
            assert span is not None
            span.output = {"done": n}
        sys.stdout.write(f"span {span.id}\n")
        sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    register(sys.argv[1], sys.argv[2])
    asyncio.run(agent(int(sys.argv[3])))
