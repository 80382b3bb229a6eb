"""Power-loss mode (issue 6, part A): ``SpoolConfig.synchronous`` reaches every connection the
spool opens, as the pragma SQLite actually runs with.

What each setting promises, with the spool in WAL mode (SQLite's "How To Corrupt" and WAL
documentation):

- ``Synchronous.NORMAL`` (``PRAGMA synchronous`` = 1, the default): a commit writes its pages
  to the WAL file before ``COMMIT`` returns, but the WAL is fsynced only when it is
  checkpointed. A crash of the process (SIGKILL, OOM kill, segfault) loses nothing that was
  committed: the bytes are in the operating system's page cache and reach the disk anyway. A
  power cut or kernel crash may lose the most recent commits (the database stays consistent:
  those transactions are rolled back as a whole, never torn).
- ``Synchronous.FULL`` (``PRAGMA synchronous`` = 2): the WAL is also fsynced at every commit,
  so a commit that returned survives a power cut as well, at the cost of one fsync per group
  commit.

Proved by counting system calls (strace): with FULL every commit is fsynced before it returns,
with NORMAL commits are not. Not proved here: that the storage really honours fsync. An
operating-system crash or power cut cannot be produced in this test environment (no VM to
reset, no fault-injecting filesystem such as dm-flakey or LazyFS), so these tests stop at the
pragma that carries the promise and the fsyncs it causes. Process crashes are proved with
SIGKILLed children elsewhere (tests/test_spool_crash.py).
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import spool._committer
from spool import AsyncSpool, EventKind, NewEvent, Spool, SpoolConfig, Synchronous
from spool._schema import connect

LEVEL = {Synchronous.NORMAL: 1, Synchronous.FULL: 2}


def pragma(conn: sqlite3.Connection, name: str) -> object:
    return conn.execute(f"PRAGMA {name}").fetchone()[0]


@pytest.mark.parametrize("mode", list(Synchronous))
def test_the_spools_connection_runs_with_the_configured_synchronous(
    tmp_path: Path, mode: Synchronous
) -> None:
    with Spool.open(SpoolConfig(path=tmp_path / "spool.db", synchronous=mode)) as spool:
        assert pragma(spool.conn, "synchronous") == LEVEL[mode]
        assert pragma(spool.conn, "journal_mode") == "wal"


@pytest.mark.parametrize("mode", list(Synchronous))
def test_the_writers_and_the_shippers_connections_run_with_it_too(
    tmp_path: Path, mode: Synchronous, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The group committer (every processor append) and ``AsyncSpool`` (the shipper) open
    their own connections; both must carry the setting, since both commit."""
    config = SpoolConfig(path=tmp_path / "spool.db", synchronous=mode)
    opened: list[sqlite3.Connection] = []

    def recording_connect(config: SpoolConfig, *, create: bool = True) -> sqlite3.Connection:
        conn = connect(config, create=create)
        opened.append(conn)
        return conn

    monkeypatch.setattr(spool._committer, "connect", recording_connect)
    with Spool.open(config) as opened_spool:
        assert opened_spool.append([NewEvent("s", "t", EventKind.START, b"{}")])
        (writer,) = opened
        # Asked on the writer's own connection, after it committed (the writer is idle).
        assert pragma(writer, "synchronous") == LEVEL[mode]
        assert pragma(writer, "journal_mode") == "wal"

    async def shipper_side() -> list[object]:
        async with await AsyncSpool.open(config) as async_spool:
            rows = await async_spool.db.execute_fetchall("PRAGMA synchronous")
            return [row[0] for row in rows]

    assert asyncio.run(shipper_side()) == [LEVEL[mode]]


def test_the_environment_selects_full(tmp_path: Path) -> None:
    config = SpoolConfig.from_env(tmp_path / "spool.db", env={"SPOOL_SHIP_SYNCHRONOUS": "full"})
    assert config.synchronous is Synchronous.FULL
    with Spool.open(config) as opened_spool:
        assert pragma(opened_spool.conn, "synchronous") == 2


STRACE = shutil.which("strace")


def _fsyncs(tmp_path: Path, mode: Synchronous, commits: int) -> int:
    """fsync/fdatasync calls made by a child that commits ``commits`` events one by one."""
    path = tmp_path / f"{mode.value}.db"
    # The spool exists first, so creating it (schema, WAL switch) is not counted.
    Spool.open(SpoolConfig(path=path, synchronous=mode)).close()
    trace = tmp_path / f"{mode.value}.strace"
    child = Path(__file__).parent / "power_children" / "commit_each.py"
    assert STRACE is not None
    done = subprocess.run(
        [STRACE, "-f", "-qq", "-e", "trace=fsync,fdatasync", "-o", str(trace),
         sys.executable, str(child), str(path), mode.value, str(commits)],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert done.stdout.strip() == "done"
    return sum(1 for line in trace.read_text().splitlines() if "sync(" in line)


@pytest.mark.skipif(STRACE is None, reason="strace is not installed: fsyncs cannot be counted")
def test_full_fsyncs_every_commit_and_normal_does_not(tmp_path: Path) -> None:
    """What carries FULL's promise, observed in the system calls: with FULL every commit that
    returned was fsynced (at least one fsync per commit), so it is on the disk before the
    agent's call returns and survives a power cut; with NORMAL commits are not fsynced (only
    checkpoints are), which is why a power cut may lose the last ones."""
    commits = 30
    full = _fsyncs(tmp_path, Synchronous.FULL, commits)
    normal = _fsyncs(tmp_path, Synchronous.NORMAL, commits)
    assert full >= commits
    assert normal < commits // 3
