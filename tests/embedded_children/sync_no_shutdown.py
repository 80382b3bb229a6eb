"""Child process for tests/test_embedded_asyncio.py: a threaded agent that never calls
``shutdown()``. Whatever its in-process shipper has not shipped yet must go at interpreter
exit.

    python sync_no_shutdown.py SPOOL PREFIX THREADS SPANS

THREADS worker threads each start and end SPANS spans through one module-level
``SyncSpoolProcessor(SPOOL, ship=True)`` (credentials from the environment), then the program
ends. Prints one JSON line: ``{"spans": N}``.
"""

from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from spool import SyncSpoolProcessor

SPOOL, PREFIX = sys.argv[1], sys.argv[2]
THREADS, SPANS = int(sys.argv[3]), int(sys.argv[4])

PROCESSOR = SyncSpoolProcessor(SPOOL, ship=True)


def work(worker: int) -> None:
    for n in range(SPANS):
        span: dict[str, object] = {
            "id": f"{PREFIX}-{worker}-{n}",
            "trace_id": f"{PREFIX}-trace-{worker}",
            "name": "work",
            "start_timestamp": datetime.now(UTC).isoformat(),
        }
        PROCESSOR.on_span_start(span)
        PROCESSOR.on_span_end(span | {"end_timestamp": datetime.now(UTC).isoformat()})


def main() -> None:
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(work, range(THREADS)))
    print(json.dumps({"spans": THREADS * SPANS}), flush=True)
    # No PROCESSOR.shutdown(): the interpreter's exit is the last chance.


if __name__ == "__main__":
    main()
