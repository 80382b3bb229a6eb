"""CRASH: a shipper child process is SIGKILLed again and again in the middle of a drain; each
restart takes over (the dead one's leases expire on the real clock: 2 s), and in the end every
span is delivered. Duplicates (a batch stored but never acked) are counted and reported."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import SHIP_ACCOUNT, SHIP_KEY, span_events

from shipper.testing import FakeSpanServer
from spool import EventKind, EventState, Spool, SpoolConfig

CHILD = Path(__file__).parent / "shipper_children" / "drain_child.py"
START, END = EventKind.START, EventKind.END
KILLS = 3
LEASE_SECONDS = 2


def child_env(server: FakeSpanServer) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SGP_", "SPOOL_SHIP_"))}
    env.update(
        SGP_API_KEY=SHIP_KEY,
        SGP_ACCOUNT_ID=SHIP_ACCOUNT,
        SGP_CLIENT_BASE_URL=server.base_url,
        SPOOL_SHIP_LEASE=str(LEASE_SECONDS),
        SPOOL_SHIP_BATCH_SIZE="50",
        SPOOL_SHIP_CONCURRENCY="4",
        SPOOL_SHIP_BACKOFF_INITIAL="0.05",
        SPOOL_SHIP_BACKOFF_MAX="0.5",
    )
    return env


def sent(server: FakeSpanServer, requests: int) -> bool:
    return server.request_count >= requests


def start_child(spool: SpoolConfig, env: dict[str, str]) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, str(CHILD), str(spool.path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    line = child.stdout.readline()  # blocks until the child has the spool open (or died)
    if not line.startswith("started "):
        child.kill()
        _, err = child.communicate(timeout=30)
        raise AssertionError(f"the shipper child did not start: {line!r}\n{err}")
    return child


@pytest.mark.slow
def test_sigkilled_shippers_lose_nothing(tmp_path: Path, span_server: FakeSpanServer) -> None:
    spool = SpoolConfig(path=tmp_path / "spool.db")
    # 20,000 events: 6,000 spans with start and end, 8,000 spans still open (start only).
    whole = [f"w{i:05}" for i in range(6_000)]
    open_only = [f"o{i:05}" for i in range(8_000)]
    with Spool.open(spool) as opened:
        opened.append(span_events(whole + open_only, START))
        opened.append(span_events(whole, END))
        assert opened.stats().pending == 20_000
    span_server.faults.set_latency((0.001, 0.003))
    env = child_env(span_server)

    kills: list[dict[str, Any]] = []
    orphaned: dict[int, float] = {}  # seq -> when the killed child's lease on it ran out
    for _ in range(KILLS):
        child = start_child(spool, env)
        target = span_server.request_count + 40
        reached = span_server.wait_for(functools.partial(sent, span_server, target), 60)
        assert reached, "the child sent no requests"
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
        if child.stdout is not None:
            child.stdout.close()
        if child.stderr is not None:
            child.stderr.close()
        with Spool.open(spool) as opened:
            left = opened.stats()
            for record in opened.export([EventState.LEASED]):
                assert record.lease_expires_at is not None
                orphaned[record.seq] = record.lease_expires_at
        kills.append({"at_request": span_server.request_count, "leased": left.leased})
        assert left.pending + left.leased > 0, "the drain finished before the kill"

    final = start_child(spool, env)
    began = time.monotonic()
    out, err = final.communicate(timeout=180)
    assert final.returncode == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["exit_code"] == 0

    with Spool.open(spool) as opened:
        stats = opened.stats()
        finished = {r.seq: r.done_at for r in opened.export([EventState.DONE])}
    assert (stats.pending, stats.leased, stats.dead) == (0, 0, 0)
    # The next child waited for each dead child's leases to run out (real clock) before it
    # took those events: none of them was finished before its lease expired.
    early = {
        seq: (finished[seq], expiry)
        for seq, expiry in orphaned.items()
        if (finished[seq] or 0.0) < expiry
    }
    assert early == {}
    assert stats.done == 20_000
    assert span_server.completed_ids() == set(whole)
    assert {span_id for _, span_id in span_server.spans()} == set(whole + open_only)
    assert span_server.order_violations() == []
    # At least one kill caught batches in flight: their leases had to expire for the next child.
    assert any(k["leased"] > 0 for k in kills), kills
    print(
        f"\ncrash: kills={kills} final_run={time.monotonic() - began:.1f}s "
        f"requests={span_server.request_count} duplicates={span_server.duplicates()}"
    )
