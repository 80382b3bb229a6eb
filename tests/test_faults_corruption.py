"""Corruption (issue 6, point 4): a spool file cut short, a WAL torn after a SIGKILLed writer,
random bytes over pages in the middle.

What must hold:

- Every way in (``Spool``, ``AsyncSpool``, the shipper, the CLI) fails with a
  :class:`spool.SpoolCorruptError` that names the path and says what to do, never a traceback,
  and never changes the damaged file.
- A torn WAL is not corruption: SQLite ignores the torn frame (and, with it, the transaction
  it belonged to and every later one); every transaction committed before the tear is kept.
- The agent's processors, meeting a damaged spool at start, return normally; every event is
  either spooled or counted as dropped, and shipping in-process failing does not change that.
- ``spool-ship doctor --yes`` (a real subprocess) replaces a damaged spool with a fresh one whose
  salvaged events ship byte for byte.

``tests/test_cli_doctor.py`` covers the salvage itself (which rows survive which damage, the
counts, the prompt, moving aside); ``tests/test_spool_processors.py`` covers the processors on a
file garbled from its header or its second page; this file does not repeat them.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import random
import re
import signal
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import SHIP_ACCOUNT, SHIP_KEY, run_async, run_program, status_json
from test_cli_doctor import PAGE, fill, overwrite_pages
from test_cli_inspect import payload

from shipper import Shipper, ShipperConfig
from shipper.testing import FakeSpanServer
from spool import (
    AsyncSpool,
    EventState,
    Spool,
    SpoolConfig,
    SpoolCorruptError,
    SpoolError,
    SpoolProcessor,
    SyncSpoolProcessor,
)
from spool._committer import acquire_committer, release_committer

WAL_WRITER = Path(__file__).parent / "soak_children" / "wal_writer.py"
FILLED = 1500
# A call that does not return within this is a hung agent.
CALL_BOUND = 30.0


# ---- damage ---------------------------------------------------------------------------------


def truncate(path: Path) -> None:
    """Cut the file mid-page, about halfway."""
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size // 2 + 1000)


def scribble_middle(path: Path) -> None:
    """Random bytes over three pages in the middle; the header and the schema are intact."""
    overwrite_pages(path, path.stat().st_size // PAGE // 2, 3)


DAMAGE: dict[str, Callable[[Path], None]] = {"truncated": truncate, "middle": scribble_middle}


def damaged_spool(tmp_path: Path, damage: str) -> Path:
    path = tmp_path / "spool.db"
    fill(path, FILLED)
    DAMAGE[damage](path)
    return path


def span(n: int) -> dict[str, Any]:
    return {
        "id": f"new-{n}",
        "trace_id": "trace-new",
        "name": f"op-{n}",
        "start_timestamp": "2025-01-01T00:00:00+00:00",
        "end_timestamp": "2025-01-01T00:00:01+00:00",
    }


def spool_ids(path: Path) -> dict[str, bytes]:
    """Span id -> payload of every event in a sound spool."""
    with Spool.open(SpoolConfig(path=path), create=False) as opened:
        return {r.span_id: r.payload for r in opened.export(list(EventState))}


# ---- every way in fails clearly ---------------------------------------------------------------


def _first_error_sync(path: Path) -> SpoolError:
    def read_all() -> None:
        with Spool.open(SpoolConfig(path=path), create=False) as opened:
            opened.stats()
            list(opened.export(list(EventState)))

    with pytest.raises(SpoolError) as info:  # the open, or the first read
        read_all()
    return info.value


def _first_error_async(path: Path) -> SpoolError:
    async def main() -> None:
        async with await AsyncSpool.open(SpoolConfig(path=path), create=False) as opened:
            await opened.stats()

    with pytest.raises(SpoolError) as info:
        run_async(main())
    return info.value


def _first_error_shipper(path: Path) -> SpoolError:
    async def main() -> None:
        config = ShipperConfig(api_key="k", account_id="a", base_url="http://127.0.0.1:9")
        async with Shipper(SpoolConfig(path=path), config, create=False) as shipper:
            await shipper.drain(timeout=10)

    with pytest.raises(SpoolError) as info:
        run_async(main())
    return info.value


@pytest.mark.parametrize("damage", sorted(DAMAGE))
@pytest.mark.parametrize(
    "way_in",
    [_first_error_sync, _first_error_async, _first_error_shipper],
    ids=["Spool", "AsyncSpool", "Shipper"],
)
def test_a_damaged_spool_fails_with_a_corrupt_error_naming_the_path_and_the_remedy(
    tmp_path: Path, damage: str, way_in: Callable[[Path], SpoolError]
) -> None:
    path = damaged_spool(tmp_path, damage)
    before = path.read_bytes()

    error = way_in(path)

    assert isinstance(error, SpoolCorruptError), repr(error)
    assert error.path == str(path)
    assert str(error).startswith(f"{path}: the spool is corrupt (")
    assert "run 'spool-ship doctor'" in str(error)
    # Nothing that merely fails on a damaged spool may change it (doctor needs it as found).
    assert path.read_bytes() == before


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_every_cli_command_on_a_damaged_spool_exits_3_with_one_line(
    tmp_path: Path, damage: str, span_server: FakeSpanServer, ship_env: dict[str, str]
) -> None:
    """Real processes: the shipping commands too (``run`` is a sidecar: it must not spin)."""
    path = damaged_spool(tmp_path, damage)
    for command in (["status"], ["export"], ["drain", "--timeout", "10"], ["run"]):
        done = run_program(["spool-ship", *command, "--spool", str(path)], ship_env)
        assert done.returncode == 3, (command, done.stderr)
        assert "Traceback" not in done.stderr, command
        last = done.stderr.strip().splitlines()[-1]
        assert last == (
            f"spool-ship: {path}: the spool is corrupt (database disk image is malformed); "
            "run 'spool-ship doctor' to salvage it"
        ), command
        assert done.stdout == "", command
    assert span_server.request_count == 0


# ---- a torn WAL --------------------------------------------------------------------------------

_WAL_HEADER = 32
_FRAME_HEADER = 24


def wal_frames(wal: bytes) -> tuple[int, list[tuple[int, bool]]]:
    """The page size and the valid frames of a WAL: ``(offset, is_commit)`` for each frame
    whose salt matches the header and whose running checksum holds (SQLite's own test)."""
    magic, _, page_size, _, salt1, salt2, check1, check2 = struct.unpack(">8I", wal[:32])
    order = "<" if magic == 0x377F0682 else ">"

    def checksum(data: bytes, s0: int, s1: int) -> tuple[int, int]:
        for x0, x1 in struct.iter_unpack(order + "II", data):
            s0 = (s0 + x0 + s1) & 0xFFFFFFFF
            s1 = (s1 + x1 + s0) & 0xFFFFFFFF
        return s0, s1

    assert checksum(wal[:24], 0, 0) == (check1, check2), "not a WAL header"
    running = (check1, check2)
    frames: list[tuple[int, bool]] = []
    size = _FRAME_HEADER + page_size
    offset = _WAL_HEADER
    while offset + size <= len(wal):
        _, commit, f_salt1, f_salt2, f_check1, f_check2 = struct.unpack(
            ">6I", wal[offset : offset + _FRAME_HEADER]
        )
        if (f_salt1, f_salt2) != (salt1, salt2):
            break
        running = checksum(wal[offset : offset + 8], *running)
        running = checksum(wal[offset + _FRAME_HEADER : offset + size], *running)
        if running != (f_check1, f_check2):
            break
        frames.append((offset, commit != 0))
        offset += size
    return page_size, frames


def kill_writer_after(path: Path, acks: int) -> list[int]:
    """Run the WAL writer child, SIGKILL it once it acknowledged ``acks`` events (it is still
    appending); every event number it acknowledged."""
    child = subprocess.Popen(
        [sys.executable, str(WAL_WRITER), str(path), "150"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    assert child.stderr is not None
    lines: list[str] = []
    try:
        while len(lines) < acks:
            line = child.stdout.readline()
            if not line:
                break
            lines.append(line)
    finally:
        child.send_signal(signal.SIGKILL)
        lines += child.stdout.read().splitlines(keepends=True)
        err = child.stderr.read()
        child.wait()
        for pipe in (child.stdin, child.stdout, child.stderr):
            if pipe is not None:
                pipe.close()
    assert child.returncode == -signal.SIGKILL, err
    acked = [int(m[1]) for m in (re.fullmatch(r"ack (\d+)\n", line) for line in lines) if m]
    assert len(acked) >= acks, err
    assert acked == list(range(len(acked)))
    return acked


def tear(wal: Path, offset: int, page_size: int, how: str) -> None:
    """Tear the frame at ``offset``: cut the file in its middle, or overwrite its page."""
    frame = _FRAME_HEADER + page_size
    if how == "truncated":
        with wal.open("r+b") as f:
            f.truncate(offset + frame // 2)
    else:
        with wal.open("r+b") as f:
            f.seek(offset + _FRAME_HEADER + page_size // 3)
            f.write(random.Random(5).randbytes(page_size // 3))


@pytest.mark.slow
@pytest.mark.parametrize("how", ["truncated", "scribbled"])
def test_a_torn_wal_keeps_every_transaction_committed_before_the_tear(
    tmp_path: Path, how: str, span_server: FakeSpanServer, ship_env: dict[str, str]
) -> None:
    path = tmp_path / "spool.db"
    fill(path, 20)  # an existing spool, checkpointed: the WAL starts empty
    baseline = spool_ids(path)
    acked = kill_writer_after(path, 100)
    wal = Path(f"{path}-wal")

    page_size, frames = wal_frames(wal.read_bytes())
    commits = [i for i, (_, commit) in enumerate(frames) if commit]
    # One writer, one event per call: one transaction per event, in order, none checkpointed.
    assert len(commits) >= len(acked), "an acknowledged event is not in the WAL"
    kept = 60
    torn = commits[kept]  # the commit frame of event w-60, which was acknowledged
    assert commits[kept - 1] + 1 < torn, "the torn transaction has frames before its commit"
    tear(wal, frames[torn][0], page_size, how)

    # The torn transaction is ignored whole (its earlier, intact frames too), and so is
    # everything after it; everything committed before it is there, byte for byte.
    expected = {f"w-{n}" for n in range(kept)}
    with Spool.open(SpoolConfig(path=path), create=False) as opened:
        assert opened.integrity_check() == ["ok"]
        records = list(opened.export(list(EventState)))
        stats = opened.stats()
    found = {r.span_id: r.payload for r in records}
    assert set(found) == set(baseline) | expected
    assert all(found[span_id] == body for span_id, body in baseline.items())
    for span_id in expected:
        body = json.loads(found[span_id])
        assert (body["id"], body["input"]["n"]) == (span_id, int(span_id[2:]))
    assert (stats.pending, stats.dropped) == (len(found), {})
    lost = [n for n in acked if f"w-{n}" not in found]
    assert lost == [n for n in acked if n >= kept]  # only what the tear destroyed

    # Sound: doctor has nothing to repair, and the spool spools and ships as before.
    doctor = run_program(["spool-ship", "doctor", "--json", "--spool", str(path)], ship_env)
    assert doctor.returncode == 0, doctor.stderr
    assert json.loads(doctor.stdout)["integrity"] == ["ok"]
    processor = SyncSpoolProcessor(path)
    processor.on_span_end(span(0))
    processor.shutdown()
    drained = run_program(["spool-ship", "drain", "--spool", str(path)], ship_env)
    assert drained.returncode == 0, drained.stderr
    assert span_server.completed_ids() == set(found) | {"new-0"}


# ---- the agent's processors meet a damaged spool ----------------------------------------------


def bounded(call: Callable[[], None], what: str) -> None:
    """Run a blocking processor call on a thread; fail (not hang) if it does not return."""
    failure: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(CALL_BOUND)
    assert not thread.is_alive(), f"{what} did not return within {CALL_BOUND}s"
    assert failure == [], f"{what} raised {failure[0]!r}"


def emit(
    kind: str, config: SpoolConfig, ship: ShipperConfig, spans: list[dict[str, Any]]
) -> dict[str, int]:
    """Emit ``spans`` through a processor of ``kind`` (shipping in-process); the counts the
    processor could not write, read before it shuts down."""

    def local_counts() -> dict[str, int]:
        committer = acquire_committer(config)
        try:
            return committer.local_counts()
        finally:
            release_committer(committer)

    if kind == "sync":
        processor = SyncSpoolProcessor(config=config, ship=ship)
        for s in spans:
            bounded(functools.partial(processor.on_span_end, s), "on_span_end")
        bounded(lambda: processor.on_spans_end([]), "on_spans_end")
        counts = local_counts()
        bounded(lambda: processor.shutdown(timeout=5), "shutdown")
        return counts

    async def main() -> dict[str, int]:
        processor = SpoolProcessor(config=config, ship=ship)
        beats = 0

        async def heartbeat() -> None:
            nonlocal beats
            while True:
                beats += 1
                await asyncio.sleep(0)

        beating = asyncio.create_task(heartbeat())
        for s in spans:
            await asyncio.wait_for(processor.on_span_end(s), CALL_BOUND)
        beating.cancel()
        counts = local_counts()
        await asyncio.wait_for(processor.shutdown(timeout=5), CALL_BOUND)
        assert beats > 0  # the loop kept running other tasks
        return counts

    return run_async(main())


@pytest.mark.parametrize(
    "case",
    [(kind, damage) for kind in ("sync", "async") for damage in sorted(DAMAGE)],
    ids="-".join,
)
def test_a_processor_meeting_a_damaged_spool_returns_normally_and_accounts_for_every_event(
    tmp_path: Path,
    case: tuple[str, str],
    span_server: FakeSpanServer,
    ship_env: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Shipping in-process is on: it cannot ship from a damaged spool, and must not take the
    agent down with it. A truncated spool cannot be opened: every event is dropped and counted
    (``spool_corrupt``). Damage in the middle leaves the rightmost pages, where appends go,
    intact: events may still be spooled; whatever was not spooled is counted."""
    kind, damage = case
    path = damaged_spool(tmp_path, damage)
    config = SpoolConfig(path=path)
    ship = ShipperConfig(
        api_key=SHIP_KEY, account_id=SHIP_ACCOUNT, base_url=span_server.base_url, linger=0.0
    )
    spans = [span(n) for n in range(40)]

    with caplog.at_level(logging.WARNING):
        counts = emit(kind, config, ship, spans)

    assert set(counts) <= {"dropped:spool_corrupt"}, counts
    dropped = counts.get("dropped:spool_corrupt", 0)
    if damage == "truncated":
        assert dropped == len(spans)
        assert "cannot ship in-process, events stay in the spool" in caplog.text
        assert f"{path}: the spool is corrupt" in caplog.text
    assert span_server.request_count == 0  # nothing readable was shipped from a damaged spool

    # What was spooled is found again by the salvage; the rest was counted.
    doctor = run_program(
        ["spool-ship", "doctor", "--yes", "--json", "--spool", str(path)], ship_env
    )
    assert doctor.returncode == 1, doctor.stderr
    spooled = {s for s in spool_ids(path) if s.startswith("new-")}
    assert len(spooled) + dropped == len(spans), (len(spooled), dropped)


# ---- doctor, end to end ------------------------------------------------------------------------


_DOCTOR_LINE = re.compile(r"^(salvaged|lost)\s+(\d+) event", re.MULTILINE)


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_after_doctor_the_salvaged_events_ship_byte_for_byte_and_the_loss_stays_counted(
    tmp_path: Path, damage: str, span_server: FakeSpanServer, ship_env: dict[str, str]
) -> None:
    """The console script, as an operator runs it: the damaged file is moved aside, the counts
    are printed, and ``drain`` then delivers exactly the salvaged events, unchanged."""
    path = damaged_spool(tmp_path, damage)

    doctor = run_program(["spool-ship", "doctor", "--yes", "--spool", str(path)], ship_env)

    assert doctor.returncode == 1, doctor.stderr
    assert f"{path}: damaged: the spool is corrupt" in doctor.stderr
    counts = {name: int(n) for name, n in _DOCTOR_LINE.findall(doctor.stdout)}
    assert set(counts) == {"salvaged", "lost"}, doctor.stdout
    assert 0 < counts["salvaged"] < FILLED
    assert len(list(tmp_path.glob("spool.db.corrupt-*"))) >= 1
    facts = status_json(path, ship_env)
    assert facts["pending"] == counts["salvaged"]
    assert facts["dropped_by_reason"].get("salvage_lost", 0) == counts["lost"]

    drained = run_program(["spool-ship", "drain", "--spool", str(path)], ship_env)
    assert drained.returncode == 0, drained.stderr
    delivered = span_server.spans()
    assert len(delivered) == counts["salvaged"]
    for (trace_id, span_id), item in delivered.items():
        n = int(span_id[1:])
        assert trace_id == f"t{n % 5}"
        assert item == json.loads(payload(span_id, trace_id, end=True, input="x" * 300))
    assert span_server.duplicates() == 0


def test_an_agent_left_running_through_doctor_does_not_spool_into_the_moved_aside_file(
    tmp_path: Path, ship_env: dict[str, str]
) -> None:
    """BUG (spool/_committer.py, ``GroupCommitter._connection``/``_commit``; cli/maintain.py,
    ``doctor``): the group committer keeps the connection it opened for the life of the
    process. ``doctor --yes`` renames the damaged file (and its -wal/-shm) aside; a running
    agent's connection follows the renamed inode, so every event it acknowledges afterwards is
    committed into ``spool.db.corrupt-*``, which nothing ships, and nothing is counted as
    dropped. The corruption error tells the operator to run doctor; with ``--yes`` the advice
    to stop the agents first (it is in the confirmation question) is never shown.

    Fix (either): the committer notes ``os.fstat`` of the spool at open and, before each
    commit, compares ``os.stat(path)`` (st_dev, st_ino), reopening when the path now names
    another file (one stat per group commit); or close the connection after a
    ``SpoolCorruptError`` so the reopen interval picks up the fresh spool. And doctor should
    print the stop-the-agents warning with ``--yes`` too."""
    path = damaged_spool(tmp_path, "middle")
    config = SpoolConfig(path=path)
    processor = SyncSpoolProcessor(config=config)
    try:
        processor.on_span_end(span(0))  # the agent is running: its writer has the file open
        doctor = run_program(["spool-ship", "doctor", "--yes", "--spool", str(path)], ship_env)
        assert doctor.returncode == 1, doctor.stderr
        for n in range(1, 11):
            processor.on_span_end(span(n))  # acknowledged: committed somewhere
        committer = acquire_committer(config)
        try:
            dropped = sum(committer.local_counts().values())
        finally:
            release_committer(committer)
    finally:
        processor.shutdown()
    spooled = {s for s in spool_ids(path) if s.startswith("new-")}
    later = {f"new-{n}" for n in range(1, 11)}
    assert len(spooled & later) + dropped == len(later), (
        f"{len(later) - len(spooled & later) - dropped} acknowledged event(s) went into the "
        "moved-aside file"
    )
