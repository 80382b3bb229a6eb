"""Child process for tests/test_spool_processes.py: appends and ships on a shared spool.

    python multi_worker.py PATH NAME SPANS (sync|async)

Prints ``ready``, waits for ``go`` on stdin (so the siblings start together), then appends
the start and end of SPANS spans in batches while claiming and acking batches of whatever is
ready, and finally prints one JSON line: what it appended, the seqs it claimed, and every
exception it saw (as text).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from spool import AsyncSpool, ClaimedEvent, EventKind, NewEvent, Spool, SpoolConfig, ops

BATCH = 5
CLAIM = 7
LEASE = 600.0


class Report:
    def __init__(self) -> None:
        self.appended: list[tuple[str, str]] = []
        self.dropped: list[tuple[str, str]] = []
        self.claimed: list[int] = []
        self.errors: list[str] = []

    def error(self, exc: BaseException) -> None:
        self.errors.append(f"{type(exc).__name__}: {exc}")

    def as_json(self) -> str:
        return json.dumps(
            {
                "appended": self.appended,
                "dropped": self.dropped,
                "claimed": self.claimed,
                "errors": self.errors,
            }
        )


def batches(name: str, spans: int) -> list[list[NewEvent]]:
    """Each batch starts BATCH new spans and ends the ones the previous batch started."""
    out: list[list[NewEvent]] = []
    previous: list[str] = []
    for first in range(0, spans + BATCH, BATCH):
        current = [f"{name}-{i}" for i in range(first, min(first + BATCH, spans))]
        events = [
            NewEvent(s, name, kind, json.dumps({"id": s, "kind": kind.value}).encode())
            for s, kind in [(s, EventKind.START) for s in current]
            + [(s, EventKind.END) for s in previous]
        ]
        if events:
            out.append(events)
        previous = current
    return out


def note(report: Report, events: list[NewEvent], ok: bool) -> None:
    keys = [(e.span_id, e.kind.value) for e in events]
    (report.appended if ok else report.dropped).extend(keys)


def run_sync(path: Path, name: str, spans: int, report: Report) -> None:
    with Spool.open(SpoolConfig(path=path)) as spool:
        for events in batches(name, spans):
            try:
                note(report, events, spool.append(events))
            except Exception as exc:
                report.error(exc)
            try:
                claimed: list[ClaimedEvent] = spool.run(
                    ops.claim(name, limit=CLAIM, lease_seconds=LEASE, now=time.time())
                )
                report.claimed.extend(e.seq for e in claimed)
                if claimed:
                    spool.run(ops.ack([e.seq for e in claimed], now=time.time()))
            except Exception as exc:
                report.error(exc)


async def run_async(path: Path, name: str, spans: int, report: Report) -> None:
    async with await AsyncSpool.open(SpoolConfig(path=path)) as spool:
        for events in batches(name, spans):
            try:
                note(report, events, await spool.append(events))
            except Exception as exc:
                report.error(exc)
            try:
                claimed = await spool.run(
                    ops.claim(name, limit=CLAIM, lease_seconds=LEASE, now=time.time())
                )
                report.claimed.extend(e.seq for e in claimed)
                if claimed:
                    await spool.run(ops.ack([e.seq for e in claimed], now=time.time()))
            except Exception as exc:
                report.error(exc)


def main(argv: list[str]) -> None:
    path, name, spans, mode = Path(argv[1]), argv[2], int(argv[3]), argv[4]
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    report = Report()
    try:
        if mode == "sync":
            run_sync(path, name, spans, report)
        else:
            asyncio.run(run_async(path, name, spans, report))
    except Exception as exc:
        report.error(exc)
    print(report.as_json(), flush=True)


if __name__ == "__main__":
    main(sys.argv)
