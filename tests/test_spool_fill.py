"""Issue 13: the size limit lives in the spool, so the agent, the sidecar and the CLI agree on
it; the agent warns as the spool fills and logs every drop burst with its count."""

from __future__ import annotations

import logging
import re
import signal
import sqlite3
from pathlib import Path

import pytest
from conftest import span_events, used_bytes
from test_cli_ship import Running

from shipper.testing import FakeSpanServer
from spool import EventKind, MetaKey, Spool, SpoolConfig
from spool._fill import REFRESH_INTERVAL, DropBursts, FillWatch, read_limit

KIB = 1024


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def stored_limit(path: Path) -> str | None:
    conn = sqlite3.connect(path)
    try:
        row = conn.execute(
            "SELECT value FROM meta WHERE key = ?", (MetaKey.MAX_BYTES.value,)
        ).fetchone()
    finally:
        conn.close()
    return None if row is None else str(row[0])


def fill_until_dropped(path: Path, calls: int = 400) -> int:
    """Append one event per call with no limit configured here; the number refused."""
    refused = 0
    with Spool.open(SpoolConfig(path=path)) as spool:
        for i in range(calls):
            if not spool.append(span_events([f"s{i}"], EventKind.END)):
                refused += 1
    return refused


@pytest.mark.slow
def test_a_limit_set_by_the_sidecar_is_enforced_on_the_agent_that_configures_none(
    tmp_path: Path, span_server: FakeSpanServer, ship_env: dict[str, str]
) -> None:
    """deploy/kubernetes/sidecar.yaml sets SPOOL_SHIP_MAX_BYTES on the sidecar only."""
    path = tmp_path / "spool.db"
    span_server.faults.hang()  # nothing leaves: the spool can only fill
    env = ship_env | {"SPOOL_SHIP_MAX_BYTES": "96KiB"}
    command: list[str | Path] = ["run", "--spool", path, "--create", "--stop-timeout", "1"]
    with Running(command, env, tmp_path) as run:
        run.wait_for_line("shipper started")
        assert stored_limit(path) == str(96 * KIB)
        refused = fill_until_dropped(path)
        span_server.faults.unhang()
        run.stop(signal.SIGTERM)
    assert refused > 0  # under the default 1 GiB all 400 would have gone in
    # Appends stop at the limit; the shipper's own updates (leases on claimed rows) are not
    # appends and may take a few pages more.
    assert used_bytes(path) <= 96 * KIB + 8 * 4096
    with Spool.open(SpoolConfig(path=path)) as spool:
        assert spool.stats().dropped == {"spool_full": refused}


def test_the_last_process_to_configure_a_limit_wins_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "spool.db"
    Spool.open(SpoolConfig(path=path, max_bytes=1 << 20)).close()
    Spool.open(SpoolConfig(path=path)).close()  # none configured: the stored one stays
    assert stored_limit(path) == str(1 << 20)
    with caplog.at_level(logging.WARNING, logger="spool"):
        Spool.open(SpoolConfig(path=path, max_bytes=2 << 20)).close()
    assert stored_limit(path) == str(2 << 20)
    assert f"{path} size limit changed from 1048576 to 2097152 bytes" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="spool"):
        Spool.open(SpoolConfig(path=path, max_bytes=2 << 20)).close()
    assert caplog.text == ""  # the same limit again is no news


def test_a_writer_rereads_the_stored_limit_within_the_refresh_interval(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    Spool.open(SpoolConfig(path=path, max_bytes=1 << 20)).close()
    clock = Clock()
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        watch = FillWatch(SpoolConfig(path=path), logging.getLogger("test"), clock=clock)
        assert watch.current(conn) == 1 << 20
        Spool.open(SpoolConfig(path=path, max_bytes=128 * KIB)).close()
        clock.now += REFRESH_INTERVAL - 0.1
        assert watch.current(conn) == 1 << 20
        clock.now += 0.1
        assert watch.current(conn) == read_limit(conn) == 128 * KIB
    finally:
        conn.close()


def test_fill_warnings_at_80_and_95_percent_are_rate_limited(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    watch = FillWatch(
        SpoolConfig(path=tmp_path / "s.db", max_bytes=1000 * KIB),
        logging.getLogger("t"),
        clock=clock,
    )
    caplog.set_level(logging.WARNING, logger="t")
    for used in (700, 790, 800, 850, 949):
        watch.check(used * KIB, clock())
        clock.now += 1
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == [
        f"spool: {tmp_path / 's.db'} is 80% full"
    ]
    watch.check(960 * KIB, clock())
    assert "is 96% full" in caplog.records[-1].getMessage()
    assert "raise SPOOL_SHIP_MAX_BYTES" in caplog.records[-1].getMessage()
    watch.check(990 * KIB, clock())
    assert len(caplog.records) == 2
    clock.now += 300
    watch.check(990 * KIB, clock())
    assert len(caplog.records) == 3


def test_a_drop_burst_logs_its_first_drop_at_once_and_then_its_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    bursts = DropBursts(logging.getLogger("t"), interval=10.0, clock=clock)
    caplog.set_level(logging.WARNING, logger="t")
    bursts.dropped("spool_full", 3, "at its size limit")
    for _ in range(1755):
        clock.now += 0.001
        bursts.dropped("spool_full", 1, "at its size limit")
    assert bursts.due_in() == pytest.approx(10.0 - 1.755)
    clock.now += 10
    bursts.flush()
    clock.now += 10
    bursts.flush()  # nothing new: the burst is over
    assert bursts.due_in() is None
    bursts.dropped("spool_full", 2, "at its size limit")  # a new burst
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == "spool: dropped 3 span event(s) (spool_full): at its size limit"
    assert re.fullmatch(
        r"spool: dropped 1755 more span event\(s\) \(spool_full\) in the last \d+s; 1758 in "
        r"this burst",
        messages[1],
    ), messages[1]
    assert messages[2] == "spool: dropped 2 span event(s) (spool_full): at its size limit"
    assert len(messages) == 3


def test_the_agent_logs_a_whole_drop_burst_with_its_count_by_the_time_it_closes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "spool.db"
    Spool.open(SpoolConfig(path=path, max_bytes=64 * KIB)).close()
    with caplog.at_level(logging.WARNING, logger="spool"):
        refused = fill_until_dropped(path)
    assert refused > 1
    drops = [r.getMessage() for r in caplog.records if r.getMessage().startswith("spool: dropped")]
    assert drops[0].startswith("spool: dropped 1 span event(s) (spool_full): ")
    assert drops[-1].endswith(f"; {refused} in this burst")
    assert any("full (" in r.getMessage() for r in caplog.records)  # the 80/95% warning


def test_evictions_under_drop_oldest_are_logged_as_a_burst_too(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from spool import FullPolicy

    path = tmp_path / "spool.db"
    config = SpoolConfig(path=path, max_bytes=64 * KIB, full_policy=FullPolicy.DROP_OLDEST)
    with caplog.at_level(logging.WARNING, logger="spool"), Spool.open(config) as spool:
        for i in range(400):
            assert spool.append(span_events([f"s{i}"], EventKind.END))
        evicted = spool.stats().dropped["evicted"]
    assert evicted > 0
    drops = [r.getMessage() for r in caplog.records if "(evicted)" in r.getMessage()]
    assert drops[0].startswith("spool: dropped ")
    assert "the oldest pending events made room" in drops[0]
    counted = [re.search(r"dropped (\d+) ", m) for m in drops]
    assert sum(int(m[1]) for m in counted if m is not None) == evicted
