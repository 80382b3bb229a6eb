"""Child process for tests/test_faults_corruption.py: spools one event per commit until killed.

    python wal_writer.py PATH COUNT

One thread calls ``SyncSpoolProcessor.on_span_end`` for spans ``w-0`` .. ``w-(COUNT-1)`` in
order and prints ``ack N`` (flushed) after each call returned, i.e. after the event was
committed. One caller means one event per group commit, so the WAL holds one transaction per
event, in order. After COUNT events it prints ``idle`` and waits for stdin to close; the test
SIGKILLs it before or after that, so its WAL is never checkpointed by a clean close.
"""

from __future__ import annotations

import sys

from spool import SyncSpoolProcessor


def span(n: int) -> dict[str, object]:
    return {
        "id": f"w-{n}",
        "trace_id": "trace-wal",
        "name": f"op-{n}",
        "start_timestamp": "2025-01-01T00:00:00+00:00",
        "end_timestamp": "2025-01-01T00:00:01+00:00",
        "input": {"n": n, "padding": "p" * 300},
    }


def main(path: str, count: int) -> None:
    processor = SyncSpoolProcessor(path)
    for n in range(count):
        processor.on_span_end(span(n))
        sys.stdout.write(f"ack {n}\n")
        sys.stdout.flush()
    sys.stdout.write("idle\n")
    sys.stdout.flush()
    sys.stdin.read()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
