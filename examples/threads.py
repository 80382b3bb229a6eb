"""Worker threads traced into a spool with the synchronous processor, shipped in-process.

    SGP_API_KEY=... SGP_ACCOUNT_ID=... python examples/threads.py /var/lib/agent/spool.db

``on_span_start``/``on_span_end`` block the calling thread until the event is committed (calls
from many threads share one group commit). One processor serves every thread.
"""

from __future__ import annotations

import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from spool import SyncSpoolProcessor

JOBS, CALLS = 8, 2


def now() -> str:
    return datetime.now(UTC).isoformat()


def job(processor: SyncSpoolProcessor, n: int) -> None:
    trace_id = str(uuid.uuid4())
    root: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "trace_id": trace_id,
        "name": "job",
        "start_timestamp": now(),
        "input": {"job": n},
    }
    processor.on_span_start(root)
    for call in range(CALLS):
        span: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "trace_id": trace_id,
            "parent_id": root["id"],
            "name": f"call-{call}",
            "start_timestamp": now(),
        }
        processor.on_span_start(span)
        processor.on_span_end(span | {"end_timestamp": now(), "output": {"call": call}})
    processor.on_span_end(root | {"end_timestamp": now()})


def main(path: str) -> None:
    processor = SyncSpoolProcessor(path, ship=True)  # credentials from SGP_* variables
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda n: job(processor, n), range(JOBS)))
    processor.shutdown(timeout=10)
    print(f"traced {JOBS * (1 + CALLS)} spans into {path}")


if __name__ == "__main__":
    main(sys.argv[1])
