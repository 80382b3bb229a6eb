"""The durability promise through OpenTelemetry: a child process ends spans on a real
``TracerProvider`` with ``SpoolSpanProcessor`` and prints each span's id once ``span.end()``
returned; SIGKILLed at once, every printed span's end is in the spool."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from spool import EventKind, EventState, Spool

CHILD = """
import sys
from opentelemetry.sdk.trace import TracerProvider
from spool.otel import SpoolSpanProcessor

provider = TracerProvider()
provider.add_span_processor(SpoolSpanProcessor(sys.argv[1]))
tracer = provider.get_tracer("crash")
with tracer.start_as_current_span("root"):
    for i in range(1_000_000):
        span = tracer.start_span(f"step-{i}", attributes={"i": i})
        span.end()
        print(f"{span.get_span_context().span_id:016x}", flush=True)
"""


@pytest.mark.parametrize("lines", [1, 150])
def test_every_span_ended_before_a_sigkill_is_in_the_spool(tmp_path: Path, lines: int) -> None:
    path = tmp_path / "otel.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOOL_SHIP_")}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert child.stdout is not None
    assert child.stderr is not None
    printed: list[str] = []
    try:
        while len(printed) < lines:
            line = child.stdout.readline()
            if not line:
                break
            printed.append(line.decode().strip())
    finally:
        child.send_signal(signal.SIGKILL)
        printed += [line.strip() for line in child.stdout.read().decode().splitlines()]
        err = child.stderr.read().decode(errors="replace")
        child.wait()
        child.stdout.close()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL, err
    assert len(printed) >= lines, err

    with Spool.open(path) as spool:
        ends = {
            json.loads(r.payload)["obs_span_id"]
            for r in spool.export(list(EventState))
            if r.kind is EventKind.END
        }
        assert spool.integrity_check() == ["ok"]
    assert set(printed) <= ends
