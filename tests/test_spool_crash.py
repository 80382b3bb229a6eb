"""Crash safety: SIGKILL a child that spools as fast as it can, again and again, on one spool.

The child prints each event only after the processor returned for it; every printed event
must be in the spool afterwards, and SQLite must find the file sound. The kill moments are
random but drawn up front (after K printed lines), so nothing here waits on a timer.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from spool import EventState, Spool, SpoolConfig

CHILDREN = Path(__file__).parent / "spool_children"
KILLS = 20
MAX_LINES = 2500
LINE = re.compile(r"(?P<kind>start|end) (?P<span>\d+-\d+-\d+)")


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SPOOL_SHIP_")}


def _run_and_kill(script: Path, path: Path, run: int, lines: int) -> tuple[list[str], str]:
    """Start the child, read ``lines`` printed lines, SIGKILL it; return every whole line."""
    child = subprocess.Popen(
        [sys.executable, str(script), str(path), str(run)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
    )
    assert child.stdout is not None
    assert child.stderr is not None
    seen: list[bytes] = []
    try:
        while len(seen) < lines:
            line = child.stdout.readline()
            if not line:
                break
            seen.append(line)
    finally:
        child.send_signal(signal.SIGKILL)
        # Read the rest through the same buffered reader: communicate() reads the raw pipe
        # and would skip what readline() already buffered.
        rest = child.stdout.read()
        err = child.stderr.read()
        child.wait()
        child.stdout.close()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL, err.decode(errors="replace")
    assert len(seen) == lines, f"the child stopped by itself: {err.decode(errors='replace')}"
    # Lines still in the pipe were printed before the kill, so they count too; a line cut
    # off by the kill (no newline) does not.
    seen.extend(line for line in rest.splitlines(keepends=True) if line.endswith(b"\n"))
    return [line.decode().rstrip("\n") for line in seen], err.decode(errors="replace")


@pytest.mark.slow
@pytest.mark.parametrize("script", ["crash_async.py", "crash_sync.py"])
def test_sigkill_never_loses_an_acknowledged_event(tmp_path: Path, script: str) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    # Zero means killing the child before it spooled anything (maybe while it creates the
    # spool); the rest land anywhere in the hot loop, mid-commit included.
    kill_after = [0, *(rng.randint(1, MAX_LINES) for _ in range(KILLS - 1))]
    rng.shuffle(kill_after)
    path = tmp_path / "spool.db"

    printed: list[tuple[str, str]] = []
    for run, lines in enumerate(kill_after):
        output, _ = _run_and_kill(CHILDREN / script, path, run, lines)
        for line in output:
            match = LINE.fullmatch(line)
            assert match, f"the child printed {line!r}"
            printed.append((match["span"], match["kind"]))
    assert len(printed) >= sum(kill_after)

    with Spool.open(SpoolConfig(path=path), create=False) as spool:
        assert spool.integrity_check() == ["ok"], f"seed {seed}"
        stored = Counter((r.span_id, r.kind.value) for r in spool.export(list(EventState)))
        stats = spool.stats()

    missing = [event for event in printed if event not in stored]
    assert missing == [], f"seed {seed}, kills after {kill_after}: lost {missing[:10]}"
    assert max(stored.values()) == 1, f"seed {seed}: an event was stored twice"
    assert stats.pending == len(stored)
    assert stats.dropped == {}
