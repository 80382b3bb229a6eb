"""Child process: append span end events to a spool, as another agent process would.

    python tests/shipper_children/shipper_append.py SPOOL_PATH PREFIX COUNT

Prints ``appended N`` once every event is committed, then exits 0.
"""

from __future__ import annotations

import sys

from spool import SyncSpoolProcessor

START = "2024-05-01T12:00:00+00:00"
END = "2024-05-01T12:00:01.500000+00:00"


def main(argv: list[str]) -> int:
    path, prefix, count = argv[1], argv[2], int(argv[3])
    processor = SyncSpoolProcessor(path)
    spans = [
        {
            "name": f"op-{prefix}{i}",
            "id": f"{prefix}{i}",
            "trace_id": "trace-child",
            "start_timestamp": START,
            "end_timestamp": END,
        }
        for i in range(count)
    ]
    processor.on_spans_end(spans)
    processor.shutdown()
    print(f"appended {count}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
