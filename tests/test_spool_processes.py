"""Many processes on one spool: four children append and ship at once (they also race to
create it). Every event ends up stored exactly once, no two children ever hold the same
event, and nobody sees "database is locked"."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from spool import EventState, Outcome, Spool, SpoolConfig

CHILD = Path(__file__).parent / "spool_children" / "multi_worker.py"
SPANS = 150  # per child: 300 events


def run_children(path: Path, modes: list[str]) -> list[dict[str, Any]]:
    """Start one child per mode, release them together, and return their reports."""
    children = [
        subprocess.Popen(
            [sys.executable, str(CHILD), str(path), f"p{n}", str(SPANS), mode],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n, mode in enumerate(modes)
    ]
    try:
        for child in children:
            assert child.stdout is not None
            if child.stdout.readline() != "ready\n":
                child.kill()
                _, err = child.communicate()
                raise AssertionError(f"a child failed to start: {err}")
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        # Each child printed only "ready" before "go", so nothing is buffered on our side and
        # communicate() (which reads the raw pipes) sees all the rest.
        outputs = [child.communicate(timeout=120) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()

    reports: list[dict[str, Any]] = []
    for child, (out, err) in zip(children, outputs, strict=True):
        assert child.returncode == 0, err
        reports.append(json.loads(out))
    return reports


def test_four_processes_append_and_ship_one_spool(tmp_path: Path) -> None:
    path = tmp_path / "shared" / "spool.db"
    reports = run_children(path, ["sync", "async", "sync", "async"])

    errors = [e for r in reports for e in r["errors"]]
    assert not [e for e in errors if "locked" in e.lower()], errors
    assert errors == []
    assert all(r["dropped"] == [] for r in reports)

    # Nobody claimed an event that another child claimed.
    claimed = [seq for r in reports for seq in r["claimed"]]
    duplicates = [seq for seq, n in Counter(claimed).items() if n > 1]
    assert duplicates == []
    assert all(r["claimed"] for r in reports), "every child shipped something"

    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT seq, span_id, kind, state, outcome FROM events").fetchall()
    finally:
        conn.close()

    # Every appended event is stored exactly once, and is done or still pending.
    appended = Counter((span_id, kind) for r in reports for span_id, kind in r["appended"])
    stored = Counter((span_id, kind) for _, span_id, kind, _, _ in rows)
    assert len(appended) == 4 * SPANS * 2
    assert max(appended.values()) == 1
    assert stored == appended
    states = Counter(state for *_, state, _ in rows)
    assert set(states) <= {EventState.DONE.value, EventState.PENDING.value}, states

    # Shipped rows are exactly the claimed ones; the rest of the done rows were superseded.
    shipped = {seq for seq, *_, state, outcome in rows if outcome == Outcome.SHIPPED.value}
    assert shipped == set(claimed)
    superseded = [row for row in rows if row[4] == Outcome.SUPERSEDED.value]
    assert all(kind == "start" for _, _, kind, _, _ in superseded)

    with Spool.open(SpoolConfig(path=path)) as spool:
        stats = spool.stats()
        assert spool.integrity_check() == ["ok"]
    assert stats.superseded == len(superseded)
    assert stats.dropped == {}
