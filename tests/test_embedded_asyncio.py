"""Shipping in-process (``ship=...``) the ways agents really run: ``asyncio.run()`` per
request through one module-level processor, a program that never calls ``shutdown()``, and an
agent loop that blocks. The endpoint is a FakeSpanServer spoken to by the real SDK.

Child programs live in tests/embedded_children/; they get span_server's credentials from the
environment (the ``ship_env`` fixture).
"""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from agentex_standin import new_span
from conftest import run_program, status_json

from shipper import ShipperConfig
from shipper.testing import FakeSpanServer
from spool import Spool, SpoolProcessor

CHILDREN = Path(__file__).parent / "embedded_children"
REQUESTS, SPANS = 20, 25  # 500 spans, 1,000 events
SHUTDOWN_BOUND = 2.0
# What a bounded shutdown may overrun by: the thread join after the shipper's own deadline.
EPSILON = 0.5


def expected_ids(prefix: str) -> set[str]:
    return {
        f"{prefix}-{request}-{'root' if n == 0 else n}"
        for request in range(REQUESTS)
        for n in range(SPANS)
    }


def run_agent(path: Path, prefix: str, env: dict[str, str], timeout: float) -> float:
    """Run the asyncio.run()-per-request agent; the seconds its shutdown() took."""
    args = [str(path), prefix, str(REQUESTS), str(SPANS), str(timeout)]
    done = run_program([str(CHILDREN / "asyncio_agent.py"), *args], env)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["spans"] == REQUESTS * SPANS
    elapsed: float = report["shutdown_s"]
    return elapsed


def test_asyncio_run_per_request_delivers_every_span_by_shutdown(
    tmp_path: Path, span_server: FakeSpanServer, ship_env: dict[str, str]
) -> None:
    path = tmp_path / "agent.db"

    run_agent(path, "ok", ship_env, timeout=30.0)

    # No waiting: shutdown() returned only after the shipper had shipped everything.
    assert span_server.completed_ids() == expected_ids("ok")
    assert span_server.duplicates() == 0
    assert span_server.order_violations() == []
    stored = span_server.spans()
    root = stored[("ok-trace-3", "ok-3-root")]
    assert root["input"] == {"n": 3}
    assert stored[("ok-trace-3", "ok-3-7")]["parent_id"] == "ok-3-root"
    facts = status_json(path, ship_env)
    assert (facts["pending"], facts["leased"], facts["dead"]) == (0, 0, 0)


def test_shutdown_with_the_endpoint_hanging_keeps_its_bound_and_drain_delivers_later(
    tmp_path: Path, span_server: FakeSpanServer, ship_env: dict[str, str]
) -> None:
    path = tmp_path / "agent.db"
    span_server.faults.hang()

    shutdown_s = run_agent(path, "hung", ship_env, timeout=SHUTDOWN_BOUND)

    # A bound check, not a speed claim.
    assert shutdown_s < SHUTDOWN_BOUND + EPSILON
    assert span_server.completed_ids() == set()
    assert span_server.stats().in_flight > 0  # the agent really met a hanging endpoint

    span_server.faults.unhang()
    drained = run_program(
        ["spool-ship", "drain", "--spool", str(path), "--timeout", "30"], ship_env, timeout=60
    )

    assert drained.returncode == 0, drained.stderr
    assert span_server.completed_ids() == expected_ids("hung")
    facts = status_json(path, ship_env)
    assert (facts["pending"], facts["leased"], facts["dead"]) == (0, 0, 0)


@pytest.mark.parametrize(
    "tunables",
    [
        pytest.param({}, id="defaults"),
        # A batch being filled must not wait out its linger once the process is exiting.
        pytest.param({"SPOOL_SHIP_LINGER": "60", "SPOOL_SHIP_BATCH_SIZE": "1000"}, id="linger"),
    ],
)
def test_sync_processor_without_shutdown_flushes_at_interpreter_exit(
    tmp_path: Path, span_server: FakeSpanServer, ship_env: dict[str, str], tunables: dict[str, str]
) -> None:
    path = tmp_path / "threads.db"
    threads, spans = 4, 50

    done = run_program(
        [str(CHILDREN / "sync_no_shutdown.py"), str(path), "exit", str(threads), str(spans)],
        ship_env | tunables,
    )

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"spans": threads * spans}
    # The process is gone: whatever was shipped, was shipped before it exited.
    assert span_server.completed_ids() == {
        f"exit-{worker}-{n}" for worker in range(threads) for n in range(spans)
    }
    facts = status_json(path, ship_env)
    assert (facts["pending"], facts["leased"]) == (0, 0)


def test_a_blocked_agent_loop_does_not_stall_shipping(
    tmp_path: Path, span_server: FakeSpanServer, ship_config: ShipperConfig
) -> None:
    """The agent's loop spins on the CPU (it runs nothing else) while its spans ship."""
    processor = SpoolProcessor(tmp_path / "agent.db", ship=ship_config)
    ids = {f"busy-{n}" for n in range(30)}
    blocked, release = threading.Event(), threading.Event()
    observed: dict[str, object] = {}

    async def agent() -> None:
        loop_ran = threading.Event()
        for span_id in sorted(ids):
            span = new_span(span_id, "trace-busy")
            await processor.on_span_start(span)
            span.end_time = datetime.now(UTC)
            await processor.on_span_end(span)
        asyncio.get_running_loop().call_soon(loop_ran.set)
        blocked.set()
        while not release.is_set():  # CPU-bound: no await, no sleep, the loop is stuck here
            pass
        observed["loop ran while blocked"] = loop_ran.is_set()

    # Hold every upload until the loop is blocked: all delivery happens while it is stuck.
    span_server.faults.hang()
    agent_thread = threading.Thread(target=asyncio.run, args=(agent(),), name="agent")
    agent_thread.start()
    try:
        assert blocked.wait(10)
        span_server.faults.unhang()
        delivered = span_server.wait_for(lambda: span_server.completed_ids() == ids, 15)
        still_blocked = agent_thread.is_alive() and not release.is_set()
    finally:
        release.set()
        agent_thread.join(10)
        span_server.faults.unhang()
        asyncio.run(processor.shutdown(timeout=5))

    assert delivered
    assert still_blocked
    assert observed == {"loop ran while blocked": False}


def test_a_bounded_shutdown_hands_in_flight_batches_back_to_the_spool(
    tmp_path: Path, span_server: FakeSpanServer, ship_config: ShipperConfig
) -> None:
    """When the bound is up, batches stuck in a hanging upload are released, not left leased
    to a shipper that is gone (whose leases would block every other shipper for a minute)."""
    path = tmp_path / "agent.db"
    processor = SpoolProcessor(path, ship=ship_config)
    span_server.faults.hang()

    async def agent() -> float:
        for n in range(200):
            span = new_span(f"held-{n}", "trace-held")
            await processor.on_span_start(span)
            span.end_time = datetime.now(UTC)
            await processor.on_span_end(span)
        # Every upload slot is taken by a hanging request before the agent stops: one, as
        # nothing answers to raise the adaptive limit from its start.
        slots = 1
        full = await asyncio.to_thread(
            span_server.wait_for, lambda: span_server.stats().in_flight >= slots, 10
        )
        assert full
        began = asyncio.get_running_loop().time()
        await processor.shutdown(timeout=1.0)
        return asyncio.get_running_loop().time() - began

    try:
        elapsed = asyncio.run(agent())
        with Spool.open(path, create=False) as spool:
            stats = spool.stats()
    finally:
        span_server.faults.unhang()

    assert elapsed < 1.0 + EPSILON
    assert stats.leased == 0
    assert stats.pending > 0


def test_starting_the_shipper_on_the_first_call_does_not_block_the_agent_loop(
    tmp_path: Path, ship_config: ShipperConfig
) -> None:
    """The first ``await on_span_start`` starts the process's shipper (entry point, imports,
    thread, spool and SDK client: 0.1 s to 2 s). That must happen off the agent's loop.

    To tell without timing, the start is held: the test owns the process registry's lock,
    which ``start_embedded`` takes. If the first call starts the shipper on the loop's
    thread, the loop is stuck on that lock and the agent's other task cannot run."""
    from spool import REGISTRY

    processor = SpoolProcessor(tmp_path / "agent.db", ship=ship_config)
    other_task_ran = threading.Event()

    async def agent() -> None:
        first = asyncio.create_task(processor.on_span_start(new_span("first", "trace-first")))
        await asyncio.sleep(0)  # the first call runs up to its first real wait
        other_task_ran.set()  # the agent's other work
        await first
        await processor.shutdown(timeout=5)

    with REGISTRY._lock:
        agent_thread = threading.Thread(target=asyncio.run, args=(agent(),), name="agent")
        agent_thread.start()
        responsive = other_task_ran.wait(5)
    agent_thread.join(20)

    assert not agent_thread.is_alive()
    assert responsive, "the agent's loop was blocked while the shipper started"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({}, "SGP_API_KEY"),
        (
            {"SGP_API_KEY": "k", "SGP_ACCOUNT_ID": "a", "SGP_CLIENT_BASE_URL": "htps//typo"},
            "SGP_CLIENT_BASE_URL='htps//typo' is not an http(s) URL",
        ),
    ],
    ids=["no credentials", "malformed base URL"],
)
def test_ship_true_that_cannot_ship_keeps_spooling_and_says_why_once(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    *,
    env: dict[str, str],
    named: str,
) -> None:
    """Shipping is a convenience: when it cannot start, the agent's calls still succeed and
    the events wait in the spool, with one error logged that names the cause. A base URL no
    request could go to is such a cause, not a connection error retried for ever."""
    for name in ("SGP_API_KEY", "SGP_ACCOUNT_ID", "SGP_CLIENT_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    path = tmp_path / "agent.db"
    processor = SpoolProcessor(path, ship=True)

    async def agent() -> None:
        for n in range(5):
            span = new_span(f"kept-{n}", "trace-kept")
            await processor.on_span_start(span)
            span.end_time = datetime.now(UTC)
            await processor.on_span_end(span)
        await processor.shutdown(timeout=5)

    asyncio.run(agent())

    with Spool.open(path, create=False) as spool:
        stats = spool.stats()
    assert (stats.pending, stats.done, stats.dropped_total) == (10, 0, 0)
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1
    assert "cannot ship in-process" in errors[0]
    assert named in errors[0]  # says what is wrong
