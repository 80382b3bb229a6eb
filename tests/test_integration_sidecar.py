"""The sidecar alternative to ``ship=``: the agent only spools, ``spool-ship run`` ships, and
SIGTERM stops it gracefully within ``--stop-timeout`` even when the endpoint hangs."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from conftest import run_program, status_json

from shipper.testing import FakeSpanServer
from spool import SyncSpoolProcessor

SPOOL_SHIP = str(Path(sys.executable).with_name("spool-ship"))
STOP_TIMEOUT = 2.0
EPSILON = 1.5  # signal delivery, closing the SDK client and the spool, interpreter exit


def spool_spans(path: Path, prefix: str, n: int) -> set[str]:
    """An agent without ``ship=``: it only spools."""
    processor = SyncSpoolProcessor(path)
    for i in range(n):
        span: dict[str, object] = {
            "id": f"{prefix}-{i}",
            "trace_id": f"{prefix}-trace",
            "name": "work",
            "start_timestamp": datetime.now(UTC).isoformat(),
        }
        processor.on_span_start(span)
        processor.on_span_end(span | {"end_timestamp": datetime.now(UTC).isoformat()})
    processor.shutdown()
    return {f"{prefix}-{i}" for i in range(n)}


@contextmanager
def sidecar(path: Path, env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    command = [SPOOL_SHIP, "run", "--spool", str(path), "--stop-timeout", str(STOP_TIMEOUT)]
    with subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True) as proc:
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()


def stop(proc: subprocess.Popen[str]) -> tuple[int, float, str]:
    """SIGTERM; the exit code, how long the exit took, and stderr."""
    began = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, time.monotonic() - began, err


def test_a_sidecar_ships_what_agents_spool_and_stops_on_sigterm(
    tmp_path: Path, span_server: FakeSpanServer, ship_env: dict[str, str]
) -> None:
    path = tmp_path / "shared.db"
    first = spool_spans(path, "before", 100)

    with sidecar(path, ship_env) as proc:
        assert span_server.wait_for(lambda: span_server.completed_ids() == first, 20)
        later = spool_spans(path, "while-running", 50)  # another process appends meanwhile
        everything = first | later
        shipped = span_server.wait_for(lambda: span_server.completed_ids() == everything, 20)
        code, _, err = stop(proc)

    assert shipped
    assert code == 0, err
    assert span_server.duplicates() == 0
    facts = status_json(path, ship_env)
    assert (facts["pending"], facts["leased"], facts["dead"]) == (0, 0, 0)


def test_sigterm_with_the_endpoint_hanging_stops_within_the_stop_timeout(
    tmp_path: Path, span_server: FakeSpanServer, ship_env: dict[str, str]
) -> None:
    path = tmp_path / "shared.db"
    ids = spool_spans(path, "held", 400)
    span_server.faults.hang()
    env = ship_env | {"SPOOL_SHIP_CONCURRENCY": "4", "SPOOL_SHIP_REQUEST_TIMEOUT": "15"}

    try:
        with sidecar(path, env) as proc:
            # Every upload slot is held by the hanging endpoint: one, as nothing answers to
            # raise the adaptive limit from its start.
            assert span_server.wait_for(lambda: span_server.stats().in_flight >= 1, 20)
            code, took, err = stop(proc)
        facts = status_json(path, ship_env)
    finally:
        span_server.faults.unhang()

    assert code == 0, err
    assert took < STOP_TIMEOUT + EPSILON, f"took {took:.1f}s to stop"
    assert facts["leased"] == 0  # handed back, so the next shipper need not wait out leases
    drained = run_program(["spool-ship", "drain", "--spool", str(path), "--timeout", "30"], env)
    assert drained.returncode == 0, drained.stderr
    assert span_server.completed_ids() == ids
