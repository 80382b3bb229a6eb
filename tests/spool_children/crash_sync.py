"""Child process for tests/test_spool_crash.py: spools from threads until it is SIGKILLed.

    python crash_sync.py PATH RUN

Eight threads each loop: ``on_span_start``, print ``start <id>``, ``on_span_end``, print
``end <id>``. A line is printed (whole, under a lock, flushed) only after the call returned.
"""

from __future__ import annotations

import sys
import threading

from _crash_span import span

from spool import SyncSpoolProcessor

THREADS = 8
_out = threading.Lock()


def say(line: str) -> None:
    with _out:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def worker(processor: SyncSpoolProcessor, run: str, thread: int) -> None:
    i = 0
    while True:
        span_id = f"{run}-{thread}-{i}"
        processor.on_span_start(span(span_id, run, ended=False))
        say(f"start {span_id}")
        processor.on_span_end(span(span_id, run, ended=True))
        say(f"end {span_id}")
        i += 1


def main(path: str, run: str) -> None:
    processor = SyncSpoolProcessor(path)
    threads = [
        threading.Thread(target=worker, args=(processor, run, t), daemon=True)
        for t in range(THREADS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
