"""Child process for tests/test_spool_crash.py: spools forever until it is SIGKILLed.

    python crash_async.py PATH RUN

Fifty tasks on one event loop each loop: ``await on_span_start``, print ``start <id>``,
``await on_span_end``, print ``end <id>``. A line is printed (and flushed) only after the call
returned, i.e. after the processor promised the event is committed.
"""

from __future__ import annotations

import asyncio
import sys

from _crash_span import span

from spool import SpoolProcessor

TASKS = 50


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def main(path: str, run: str) -> None:
    processor = SpoolProcessor(path)

    async def worker(task: int) -> None:
        i = 0
        while True:
            span_id = f"{run}-{task}-{i}"
            await processor.on_span_start(span(span_id, run, ended=False))
            say(f"start {span_id}")
            await processor.on_span_end(span(span_id, run, ended=True))
            say(f"end {span_id}")
            i += 1

    await asyncio.gather(*(worker(t) for t in range(TASKS)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
