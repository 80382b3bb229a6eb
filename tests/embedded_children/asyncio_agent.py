"""Child process for tests/test_embedded_asyncio.py: an agent that calls ``asyncio.run()``
once per request, all through ONE module-level processor that ships in-process.

    python asyncio_agent.py SPOOL PREFIX REQUESTS SPANS SHUTDOWN_TIMEOUT

Each request is its own ``asyncio.run()``: a root span and SPANS - 1 children, started and
ended concurrently (``asyncio.gather``), the way an agent's tool calls overlap. Then
``asyncio.run(PROCESSOR.shutdown(timeout=SHUTDOWN_TIMEOUT))``. Credentials come from the
environment. Prints one JSON line: ``{"spans": N, "shutdown_s": seconds}``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agentex_standin import Span, new_span

from shipper import ShipperConfig
from spool import SpoolProcessor

SPOOL, PREFIX = sys.argv[1], sys.argv[2]
REQUESTS, SPANS, SHUTDOWN_TIMEOUT = int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])

PROCESSOR = SpoolProcessor(SPOOL, ship=ShipperConfig.from_env())


async def traced(span: Span) -> None:
    await PROCESSOR.on_span_start(span)
    await asyncio.sleep(0)  # the tool call
    span.end_time = datetime.now(UTC)
    span.output = {"ok": True}
    await PROCESSOR.on_span_end(span)


async def handle_request(request: int) -> None:
    trace_id = f"{PREFIX}-trace-{request}"
    root = new_span(f"{PREFIX}-{request}-root", trace_id, "request", input={"n": request})
    await PROCESSOR.on_span_start(root)
    children = [
        new_span(f"{PREFIX}-{request}-{n}", trace_id, "tool", parent_id=root.id)
        for n in range(1, SPANS)
    ]
    await asyncio.gather(*(traced(child) for child in children))
    root.end_time = datetime.now(UTC)
    await PROCESSOR.on_span_end(root)


def main() -> None:
    for request in range(REQUESTS):
        asyncio.run(handle_request(request))
    started = time.monotonic()
    asyncio.run(PROCESSOR.shutdown(timeout=SHUTDOWN_TIMEOUT))
    elapsed = time.monotonic() - started
    print(json.dumps({"spans": REQUESTS * SPANS, "shutdown_s": elapsed}), flush=True)


if __name__ == "__main__":
    main()
