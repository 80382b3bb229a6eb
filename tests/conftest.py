"""Shared fixtures. Spool tests use real SQLite files under ``tmp_path``, never mocks."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import subprocess
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import hypothesis
import pytest

from spool import EventKind, NewEvent, Spool, SpoolConfig

# CI runs the property and model-based tests on the examples a hash of each test draws, the
# same every run: a submission lands or fails on its own merits, not on the one run in ten
# where a random search finds something. Every other run (`make test` at a desk) searches
# anew, and what it finds becomes a plain test (see test_model_spool.py).
hypothesis.settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    hypothesis.settings.load_profile("ci")

if TYPE_CHECKING:
    from shipper import ShipperConfig
    from shipper.testing import FakeSpanServer


@pytest.fixture
def spool_config(tmp_path: Path) -> SpoolConfig:
    """A spool in a fresh directory, every option at its default."""
    return SpoolConfig(path=tmp_path / "spool.db")


@pytest.fixture
def spool(spool_config: SpoolConfig) -> Iterator[Spool]:
    """An open :class:`spool.Spool` on ``spool_config``, closed after the test."""
    with Spool.open(spool_config) as opened:
        yield opened


# ---- shipper tests (tests/test_shipper_*.py) ------------------------------------------------
# The endpoint is a FakeSpanServer on loopback spoken to by the real SDK; time is injected
# (FakeClock, RecordedSleeps) so backoff is asserted, not waited for.

T = TypeVar("T")

SHIP_KEY = "ship-test-key"
SHIP_ACCOUNT = "ship-test-account"
SPAN_STARTED_AT = "2024-05-01T12:00:00+00:00"
SPAN_ENDED_AT = "2024-05-01T12:00:01.500000+00:00"


@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A real file system of ``size`` (a tmpfs) mounted on the new directory ``where``, unmounted
    afterwards; skips the test where mounting is not permitted (it needs root)."""
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def used_bytes(path: Path) -> int:
    """The bytes a spool file's pages hold: pages less free pages, times the page size, read
    through a connection of its own."""
    conn = sqlite3.connect(path)
    try:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
    finally:
        conn.close()
    return int((pages - free) * size)


def span_item(
    span_id: str, trace_id: str = "trace-1", *, end: bool, **extra: Any
) -> dict[str, Any]:
    """A ``SpanCreateParam`` dict: a start event carries no ``end_timestamp``."""
    item: dict[str, Any] = {
        "name": f"op-{span_id}",
        "id": span_id,
        "trace_id": trace_id,
        "start_timestamp": SPAN_STARTED_AT,
    }
    if end:
        item["end_timestamp"] = SPAN_ENDED_AT
    return item | extra


def span_payload(span_id: str, trace_id: str = "trace-1", *, end: bool, **extra: Any) -> bytes:
    """The event as the spool stores it: compact JSON, sent byte for byte."""
    item = span_item(span_id, trace_id, end=end, **extra)
    return json.dumps(item, separators=(",", ":")).encode()


def span_events(
    span_ids: Iterable[str],
    kind: EventKind,
    trace_id: str = "trace-1",
    *,
    enqueued_at: float | None = None,
) -> list[NewEvent]:
    """One ``kind`` event per span id, ready for ``Spool.append``."""
    end = kind is EventKind.END
    return [
        NewEvent(sid, trace_id, kind, span_payload(sid, trace_id, end=end), enqueued_at)
        for sid in span_ids
    ]


class FakeClock:
    """An injectable ``clock=``: time stands still until the test moves it."""

    def __init__(self, now: float | None = None) -> None:
        self.now = time.time() if now is None else now
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class RecordedSleeps:
    """An injectable ``sleep=``: records each wait and returns at once; with ``clock``, the
    fake time moves on by the wait, as if it had been slept."""

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.waits: list[float] = []
        self.clock = clock

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        if self.clock is not None:
            self.clock.advance(seconds)
        await asyncio.sleep(0)


class GatedSleep:
    """An injected sleep that records the wait, then holds until the test opens the gate."""

    def __init__(self) -> None:
        self.waits: list[float] = []
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.entered.set()
        await self.gate.wait()


def run_async(main: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
    """Run a test's coroutine; a hang fails the test instead of stalling the suite."""

    async def bounded() -> T:
        return await asyncio.wait_for(main, timeout)

    return asyncio.run(bounded())


async def eventually(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Wait until ``predicate()`` holds (checked every few milliseconds), or fail naming it."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + timeout
    while not predicate():
        if loop.time() > give_up:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.005)


async def server_reaches(
    server: FakeSpanServer, predicate: Callable[[], bool], what: str, timeout: float = 10.0
) -> None:
    """Wait (off the loop) until the fake endpoint's records satisfy ``predicate``."""
    if not await asyncio.to_thread(server.wait_for, predicate, timeout):
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def span_server() -> Iterator[FakeSpanServer]:
    """The fake ``PUT /v5/spans/batch`` on 127.0.0.1, requiring ``SHIP_KEY``."""
    from shipper.testing import FakeSpanServer

    with FakeSpanServer(api_key=SHIP_KEY) as server:
        yield server


@pytest.fixture
def ship_config(span_server: FakeSpanServer) -> ShipperConfig:
    """Credentials and endpoint of ``span_server``; no linger, quick polls, and starts
    claimable at once (tests of the start delay set it)."""
    from shipper import ShipperConfig

    return ShipperConfig(
        api_key=SHIP_KEY,
        account_id=SHIP_ACCOUNT,
        base_url=span_server.base_url,
        linger=0.0,
        poll_interval=0.02,
        start_delay=0.0,
    )


# ---- embedded and integration tests (tests/test_embedded_*.py, tests/test_integration_*.py) --
# Agents ship in-process (ship=...) or leave the spool to the CLI; child processes and the CLI
# get span_server's credentials through the SDK's environment variables.

if TYPE_CHECKING:
    import subprocess


@pytest.fixture
def ship_env(span_server: FakeSpanServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """``SGP_*`` pointing at ``span_server``, set in this process (``ship=True`` reads them)
    and returned as a whole environment for child processes."""
    import os

    monkeypatch.setenv("SGP_API_KEY", SHIP_KEY)
    monkeypatch.setenv("SGP_ACCOUNT_ID", SHIP_ACCOUNT)
    monkeypatch.setenv("SGP_CLIENT_BASE_URL", span_server.base_url)
    for name in [n for n in os.environ if n.startswith("SPOOL_SHIP_")]:
        monkeypatch.delenv(name)
    return dict(os.environ)


def run_program(
    args: list[str], env: dict[str, str], timeout: float = 60.0, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``args`` (``spool-ship`` resolves to this venv's script) and capture its output."""
    import subprocess
    import sys

    if args[0] == "spool-ship":
        args = [str(Path(sys.executable).with_name("spool-ship")), *args[1:]]
    elif args[0].endswith(".py"):
        args = [sys.executable, *args]
    return subprocess.run(
        args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


def status_json(path: Path, env: dict[str, str]) -> dict[str, Any]:
    """``spool-ship status --json --spool PATH``, run as a user would."""
    done = run_program(["spool-ship", "status", "--json", "--spool", str(path)], env)
    assert done.returncode == 0, done.stderr
    facts: dict[str, Any] = json.loads(done.stdout)
    return facts


async def append_off_loop(spool: SpoolConfig, events: list[NewEvent]) -> None:
    """Append from a test's event loop without blocking it: a shipper on the same loop may be
    between the statements of a write transaction, which a blocked loop would never finish."""

    def append() -> bool:
        with Spool.open(spool) as opened:
            return opened.append(events)

    assert await asyncio.to_thread(append)


@pytest.fixture(autouse=True)
def private_umask() -> Iterator[None]:
    """Files a test makes (another application's database, a damaged copy) are private to it,
    as a deployment's would be: the spool refuses a file group or others can read or write
    (spool/_files.py). Tests of modes set their own umask."""
    previous = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(previous)
