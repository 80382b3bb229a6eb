"""Soak (issue 6, point 7): many processes on one spool for a minute, against a faulty endpoint.

Four agent processes (two asyncio ``SpoolProcessor``s, two threaded ``SyncSpoolProcessor``s)
spool spans at a steady rate while two ``spool-ship run`` sidecars (the installed console
script, credentials from the environment) ship them to a ``FakeSpanServer`` that answers 10%
of requests 503 with a short Retry-After and drops 2% of connections. Then the producers stop,
the sidecars empty the spool and are sent SIGTERM.

Checked: every span whose end a producer saw acknowledged arrived complete, and every
acknowledged start arrived (as itself or inside its end); no start arrived after its end;
nothing was dropped, refused or dead-lettered; no process said "database is locked" (or
anything else on stderr beyond the sidecars' log lines); every process exited 0; and each
process's resident memory at the end is within ``RSS_SLACK`` of what it was once warmed up.
Duplicates (at-least-once delivery) are counted and printed, as are the numbers; run with
``-s`` to see them.
"""

from __future__ import annotations

import importlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from shipper.testing import FakeSpanServer, ServerStats
from spool import EventState, Spool, SpoolConfig, SpoolStats

psutil: Any = importlib.import_module("psutil")  # psutil ships no type hints

PRODUCER = Path(__file__).parent / "soak_children" / "soak_producer.py"
SPOOL_SHIP = str(Path(sys.executable).with_name("spool-ship"))
KEY = "soak-key"
SECONDS = 60.0
SPANS_PER_SECOND = 200.0  # per producer: 400 events/s each, 1,600 events/s in all
RSS_SLACK = 50 * 1024 * 1024
STARTUP = 30.0
SETTLE = 60.0
ACK = re.compile(r"([se]) (\S+)")
# What a sidecar logs at INFO on stderr; anything else there is a finding.
SIDECAR_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|WARNING) (shipper|spool|spool_ship\.cli) "
)


class Child:
    """A child process whose stdout and stderr are read as they come (pipes never fill)."""

    def __init__(self, name: str, args: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            args,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self.starts: set[str] = set()
        self.ends: set[str] = set()
        self.ready = threading.Event()
        self.finished = threading.Event()
        self.rss: dict[str, int] = {}
        self._readers = [
            threading.Thread(target=self._read_out, daemon=True),
            threading.Thread(target=self._read_err, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read_out(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.rstrip("\n")
            match = ACK.fullmatch(line)
            if match:
                (self.starts if match[1] == "s" else self.ends).add(match[2])
                continue
            self.out.append(line)
            if line == "ready":
                self.ready.set()
            elif line.startswith("finished "):
                self.finished.set()

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.err.append(line.rstrip("\n"))
            if "shipper started" in line:
                self.ready.set()

    def sample(self, label: str) -> int:
        rss = int(psutil.Process(self.proc.pid).memory_info().rss)
        self.rss[label] = rss
        self.rss["peak"] = max(self.rss.get("peak", 0), rss)
        return rss

    def wait(self, timeout: float) -> int:
        code = self.proc.wait(timeout)
        for reader in self._readers:
            reader.join(timeout)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


def wait_all(events: list[threading.Event], timeout: float, what: str) -> None:
    give_up = time.monotonic() + timeout
    for event in events:
        if not event.wait(max(0.0, give_up - time.monotonic())):
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    give_up = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > give_up:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


@dataclass
class Soak:
    """What one soak run did and saw."""

    path: Path
    shippers: list[Child] = field(default_factory=list)
    producers: list[Child] = field(default_factory=list)
    produced_for: float = 0.0
    exit_codes: dict[str, int] = field(default_factory=dict)
    stats: SpoolStats | None = None
    integrity: list[str] = field(default_factory=list)
    dead: list[tuple[str, str | None]] = field(default_factory=list)

    @property
    def children(self) -> list[Child]:
        return self.shippers + self.producers


def start(soak: Soak, server: FakeSpanServer) -> None:
    """Two sidecars, then four producers; memory is sampled once each is warmed up."""
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("SPOOL_SHIP_", "SGP_"))}
    ship_env = base_env | {
        "SGP_API_KEY": KEY,
        "SGP_ACCOUNT_ID": "soak-account",
        "SGP_CLIENT_BASE_URL": server.base_url,
        "SPOOL_SHIP_BACKOFF_INITIAL": "0.1",
        "SPOOL_SHIP_BACKOFF_MAX": "2",
    }
    run = [SPOOL_SHIP, "run", "--spool", str(soak.path), "--stop-timeout", "10"]
    for n in range(2):
        soak.shippers.append(Child(f"shipper-{n}", run, ship_env))
    wait_all([c.ready for c in soak.shippers], STARTUP, "the sidecars to start")
    for n, mode in enumerate(["async", "async", "sync", "sync"]):
        args = [sys.executable, str(PRODUCER), str(soak.path), f"p{n}", mode]
        args += [str(SPANS_PER_SECOND), str(SECONDS)]
        soak.producers.append(Child(f"producer-{n}-{mode}", args, base_env))
    wait_all([c.ready for c in soak.producers], STARTUP, "the producers' first spans")
    for child in soak.children:
        child.sample("start")


def produce(soak: Soak) -> None:
    """Until every producer's time is up, sampling memory now and then; then let them go."""
    began = time.monotonic()
    give_up = began + SECONDS + STARTUP
    while busy := [p for p in soak.producers if not p.finished.is_set()]:
        if time.monotonic() > give_up:
            raise AssertionError(f"{[p.name for p in busy]} did not finish in time")
        busy[0].finished.wait(5.0)
        for child in soak.children:
            if child.proc.poll() is None:
                child.sample("during")
    soak.produced_for = time.monotonic() - began
    for producer in soak.producers:
        producer.sample("end")
        assert producer.proc.stdin is not None
        producer.proc.stdin.close()
    for producer in soak.producers:
        soak.exit_codes[producer.name] = producer.wait(STARTUP)


def settle(soak: Soak) -> None:
    """Wait until the sidecars have emptied the spool, then stop them with SIGTERM."""
    with Spool.open(SpoolConfig(path=soak.path), create=False) as spool:

        def settled() -> bool:
            stats = spool.stats()
            return stats.pending == 0 and stats.leased == 0

        wait_until(settled, SETTLE, "the sidecars to empty the spool")
        soak.stats = spool.stats()
        soak.integrity = spool.integrity_check()
        soak.dead = [(r.span_id, r.last_error) for r in spool.export([EventState.DEAD])]
    for shipper in soak.shippers:
        shipper.sample("end")
        shipper.proc.send_signal(signal.SIGTERM)
    for shipper in soak.shippers:
        soak.exit_codes[shipper.name] = shipper.wait(STARTUP)


def describe(soak: Soak, server: ServerStats, duplicates: dict[Any, int], elapsed: float) -> str:
    stats = soak.stats
    assert stats is not None
    starts = sum(len(p.starts) for p in soak.producers)
    ends = sum(len(p.ends) for p in soak.producers)
    lines = [
        f"soak: {elapsed:.0f}s in all, producing for {soak.produced_for:.0f}s",
        f"  acknowledged {starts} starts and {ends} ends "
        f"({(starts + ends) / soak.produced_for:.0f} events/s)",
        f"  endpoint: {server.requests} requests, by status {dict(server.by_status)}, "
        f"{server.dropped} dropped connections, {server.items_accepted} items, "
        f"{server.completed} spans complete",
        f"  spool: done {stats.done}, superseded {stats.superseded}, dead {stats.dead}, "
        f"dropped {stats.dropped}, refused {stats.refused}, file {mib(stats.file_bytes)}",
        f"  duplicates: {sum(n - 1 for n in duplicates.values())} extra arrivals of "
        f"{len(duplicates)} events {sorted(duplicates.items())[:10]}",
    ]
    for child in soak.children:
        rss = child.rss
        lines.append(
            f"  {child.name:<18} rss start {mib(rss['start'])}, end {mib(rss['end'])}, "
            f"peak {mib(rss['peak'])}"
        )
    return "\n".join(lines)


@pytest.mark.slow
def test_four_producers_and_two_sidecars_on_one_spool_for_a_minute(tmp_path: Path) -> None:
    soak = Soak(tmp_path / "soak.db")
    Spool.open(SpoolConfig(path=soak.path)).close()
    began = time.monotonic()
    with FakeSpanServer(api_key=KEY) as server:
        server.faults.set_random(
            fail_rate=0.10, status=503, retry_after=0.05, drop_rate=0.02, seed=20251128
        )
        try:
            start(soak, server)
            produce(soak)
            settle(soak)
        finally:
            for child in soak.children:
                child.kill()
        server_stats = server.stats()
        completed = server.completed_ids()
        delivered = {span_id for _, span_id in server.spans()}
        repeats = Counter((a.trace_id, a.span_id, a.kind.value) for a in server.arrivals())
        violations = server.order_violations()
    duplicates = {key: n for key, n in repeats.items() if n > 1}
    print(describe(soak, server_stats, duplicates, time.monotonic() - began))

    stderr = {c.name: c.err[-20:] for c in soak.children}
    assert soak.exit_codes == {c.name: 0 for c in soak.children}, stderr
    assert [p.out[-1] for p in soak.producers] == ["bye"] * 4
    for child in soak.children:
        assert not [line for line in child.err if "locked" in line.lower()], child.name
    for producer in soak.producers:
        assert producer.err == [], (producer.name, producer.err[:20])
    for shipper in soak.shippers:
        # Only the sidecar's own log lines, and no warnings (dead letters, blocked, drops).
        odd = [line for line in shipper.err if not SIDECAR_LINE.match(line)]
        assert odd == [], (shipper.name, odd[:20])
        assert not [line for line in shipper.err if " WARNING " in line], shipper.name

    # The faults were real, and enough was produced for them to matter.
    assert server_stats.by_status.get(503, 0) > 0
    assert server_stats.dropped > 0
    acked_starts = set().union(*(p.starts for p in soak.producers))
    acked_ends = set().union(*(p.ends for p in soak.producers))
    assert len(acked_ends) > 0.8 * 4 * SPANS_PER_SECOND * SECONDS
    # Everything acknowledged arrived: every span complete, no start after its end.
    assert acked_ends == acked_starts
    missing = acked_ends - completed
    assert not missing, f"{len(missing)} acknowledged spans never arrived complete"
    assert acked_starts <= delivered
    assert violations == []
    stats = soak.stats
    assert stats is not None
    assert soak.integrity == ["ok"]
    assert (stats.pending, stats.leased, stats.dead) == (0, 0, 0), soak.dead[:10]
    assert (stats.dropped, stats.refused) == ({}, {})
    # Every spooled event is done (shipped, or superseded by its end), and only those.
    assert stats.done == len(acked_starts) + len(acked_ends)
    for child in soak.children:
        assert child.rss["end"] < child.rss["start"] + RSS_SLACK, (child.name, child.rss)
