"""Commit N events one at a time through SyncSpoolProcessor, then print "done".

python tests/power_children/commit_each.py SPOOL_PATH NORMAL|FULL N
"""

from __future__ import annotations

import sys
from pathlib import Path

from spool import SpoolConfig, Synchronous, SyncSpoolProcessor


def main() -> None:
    path, mode, count = Path(sys.argv[1]), Synchronous(sys.argv[2]), int(sys.argv[3])
    processor = SyncSpoolProcessor(config=SpoolConfig(path=path, synchronous=mode))
    for i in range(count):
        processor.on_span_start(
            {
                "name": "op",
                "id": f"s{i}",
                "trace_id": "t",
                "start_timestamp": "2026-01-01T00:00:00Z",
            }
        )
    processor.shutdown()
    print("done", flush=True)


if __name__ == "__main__":
    main()
