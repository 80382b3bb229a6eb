"""A plain asyncio program traced into a spool, shipped in-process.

    SGP_API_KEY=... SGP_ACCOUNT_ID=... python examples/plain_asyncio.py /var/lib/agent/spool.db

Spans are dicts in the SDK's ``SpanCreateParam`` shape. Each ``await`` returns once the event is
committed to the spool; shipping runs on its own thread, so a slow endpoint never slows this.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from datetime import UTC, datetime
from typing import Any

from spool import SpoolProcessor

REQUESTS, STEPS = 5, 3


def now() -> str:
    return datetime.now(UTC).isoformat()


async def step(processor: SpoolProcessor, trace_id: str, parent_id: str, n: int) -> None:
    span: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "trace_id": trace_id,
        "parent_id": parent_id,
        "name": f"step-{n}",
        "start_timestamp": now(),
        "input": {"step": n},
    }
    await processor.on_span_start(span)
    await asyncio.sleep(0.01)  # the work
    await processor.on_span_end(span | {"end_timestamp": now(), "output": {"ok": True}})


async def handle(processor: SpoolProcessor, request: int) -> None:
    root: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "trace_id": str(uuid.uuid4()),
        "name": "handle-request",
        "start_timestamp": now(),
        "input": {"request": request},
    }
    await processor.on_span_start(root)
    await asyncio.gather(*(step(processor, root["trace_id"], root["id"], n) for n in range(STEPS)))
    await processor.on_span_end(root | {"end_timestamp": now()})


async def main(path: str) -> None:
    processor = SpoolProcessor(path, ship=True)  # credentials from SGP_* variables
    await asyncio.gather(*(handle(processor, n) for n in range(REQUESTS)))
    # Ships what is spooled within 10 s; anything left stays in the spool for next time.
    await processor.shutdown(timeout=10)
    print(f"traced {REQUESTS * (1 + STEPS)} spans into {path}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
