"""Child process for tests/test_soak.py: an agent that spools spans at a steady rate.

    python soak_producer.py PATH NAME (async|sync) SPANS_PER_SECOND SECONDS

``async``: eight tasks on one event loop share a ``SpoolProcessor``; ``sync``: four threads
share a ``SyncSpoolProcessor``. Each worker starts a span, ends it, and paces itself to its
share of the rate. After each call returned (the event is committed) it prints ``s ID`` or
``e ID``, flushed. It prints ``ready`` once its first span is spooled and ``finished N`` when
the time is up (every started span also ended); then it waits for stdin to close, shuts the
processor down and prints ``bye``.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from typing import Any

from spool import SpoolProcessor, SyncSpoolProcessor

TASKS = 8
THREADS = 4

_out = threading.Lock()
_ready = threading.Event()


def say(line: str) -> None:
    with _out:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def started(span_id: str) -> dict[str, Any]:
    return {
        "id": span_id,
        "trace_id": f"trace-{span_id.rsplit('-', 1)[0]}",
        "name": "llm call",
        "start_timestamp": "2025-01-01T00:00:00+00:00",
        "input": {"prompt": "p" * 240, "model": "soak"},
        "metadata": {"producer": span_id.split("-", 1)[0]},
    }


def ended(span: dict[str, Any]) -> dict[str, Any]:
    return span | {"end_timestamp": "2025-01-01T00:00:01+00:00", "output": {"text": "o" * 120}}


def acked(kind: str, span_id: str) -> None:
    say(f"{kind} {span_id}")
    if not _ready.is_set():
        _ready.set()
        say("ready")


async def run_async(path: str, name: str, rate: float, seconds: float) -> int:
    processor = SpoolProcessor(path)
    loop = asyncio.get_running_loop()
    end_at = loop.time() + seconds
    interval = TASKS / rate

    async def worker(task: int) -> int:
        n, due = 0, loop.time()
        while loop.time() < end_at:
            span = started(f"{name}-{task}-{n}")
            await processor.on_span_start(span)
            acked("s", span["id"])
            await processor.on_span_end(ended(span))
            acked("e", span["id"])
            n += 1
            due += interval
            await asyncio.sleep(max(0.0, due - loop.time()))
        return n

    counts = await asyncio.gather(*(worker(t) for t in range(TASKS)))
    say(f"finished {sum(counts)}")
    await asyncio.to_thread(sys.stdin.read)
    await processor.shutdown()
    return sum(counts)


def run_sync(path: str, name: str, rate: float, seconds: float) -> int:
    processor = SyncSpoolProcessor(path)
    end_at = time.monotonic() + seconds
    interval = THREADS / rate
    counts = [0] * THREADS

    def worker(thread: int) -> None:
        n, due = 0, time.monotonic()
        while time.monotonic() < end_at:
            span = started(f"{name}-{thread}-{n}")
            processor.on_span_start(span)
            acked("s", span["id"])
            processor.on_span_end(ended(span))
            acked("e", span["id"])
            n += 1
            due += interval
            time.sleep(max(0.0, due - time.monotonic()))
        counts[thread] = n

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    say(f"finished {sum(counts)}")
    sys.stdin.read()
    processor.shutdown()
    return sum(counts)


def main(argv: list[str]) -> None:
    path, name, mode, rate, seconds = argv[1], argv[2], argv[3], float(argv[4]), float(argv[5])
    if mode == "async":
        asyncio.run(run_async(path, name, rate, seconds))
    else:
        run_sync(path, name, rate, seconds)
    say("bye")


if __name__ == "__main__":
    main(sys.argv)
