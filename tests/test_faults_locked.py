"""Drops while another process holds the spool locked (issue 12, "uncounted drops").

Events an agent could not spool before ``shutdown()`` are counted: in the spool's counters
once it can be written (shutdown tries again, whatever error the last open met), otherwise in
the processor's :meth:`unrecorded` and one final log line with the exact count (the per-drop
lines are rate-limited, so they do not name every drop).
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest
from conftest import span_item

from spool import Spool, SpoolConfig, SyncSpoolProcessor

CALLS = 6


def locked_config(path: Path) -> SpoolConfig:
    return SpoolConfig(path=path, busy_timeout=0.05)


def call_many(processor: SyncSpoolProcessor) -> None:
    for n in range(CALLS):
        processor.on_span_start(span_item(f"s{n}", end=False))


def test_drops_under_a_lock_held_past_shutdown_are_reported_with_the_exact_count(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "spool.db"
    Spool.open(path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        processor = SyncSpoolProcessor(config=locked_config(path))
        with caplog.at_level(logging.WARNING, logger="spool"):
            call_many(processor)
            processor.shutdown()
    finally:
        holder.execute("ROLLBACK")
        holder.close()

    assert processor.unrecorded() == {"dropped:spool_locked": CALLS}
    finals = [r for r in caplog.records if "could not record" in r.getMessage()]
    assert len(finals) == 1
    assert f"{CALLS} span event(s) were not spooled" in finals[0].getMessage()
    # The rate-limited per-drop lines did not name every drop: the final line is the record.
    assert len([r for r in caplog.records if "dropped" in r.getMessage()]) < CALLS
    with Spool.open(path) as opened:
        assert opened.stats().pending == 0


def test_shutdown_tries_the_spool_again_instead_of_reusing_the_last_open_error(
    tmp_path: Path,
) -> None:
    """The spool could not even be opened while the calls were made; it can be at shutdown,
    well within the writer's 5 s between reopen attempts: the counts go into the spool."""
    path = tmp_path / "spool.db"
    path.touch(mode=0o600)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # not even reading: the spool cannot be opened
    processor = SyncSpoolProcessor(config=locked_config(path))
    try:
        call_many(processor)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    processor.shutdown()

    assert processor.unrecorded() == {}
    with Spool.open(path) as opened:
        stats = opened.stats()
    assert stats.dropped == {"spool_locked": CALLS}
    assert stats.pending == 0
