"""The ship benchmark: drain a spooled backlog to a loopback endpoint, against baselines that
send the same batches in the same process run (the machine is small and shared, so only the
ratios are comparable across runs).

    .venv/bin/python bench/ship.py                   # 100,000 events, 3 interleaved repeats
    .venv/bin/python bench/ship.py --quick           # a smoke run: 20,000 events, one repeat
    .venv/bin/python bench/ship.py --rss             # also drain 1,000,000 events, peak RSS
    .venv/bin/python bench/ship.py --latency         # the endpoint 150 ms away (bench/_latency.py)

The endpoint is ``python -m shipper.testing --no-record`` in its own process (the fake of
``PUT /v5/spans/batch``: it parses and validates every item, keeps counters only). Every event
is the END event of a distinct span (an end supersedes nothing and is never superseded), so
events spooled = items delivered. Batches are 50 items everywhere.

* raw httpx: the pre-serialized batch bodies (``shipper.upload.batch_body`` of the stored
  payloads), one ``PUT`` at a time on one keep-alive ``httpx.Client``. The ceiling: no spool,
  no SDK, no concurrency.
* SDK upsert_batch: what scale-gp-beta's ``TraceExporter`` does,
  ``SGPClient(...).spans.upsert_batch(items=batch)`` one batch at a time, the items being
  ``SpanCreateParam`` dicts built beforehand (the SDK transforms and serializes them per call).
* spool-ship: ``Shipper(path, ShipperConfig(..., batch_size=50)).drain()`` on a spool holding
  the backlog (a copy of one spool made before the clock starts): claim, upload through
  ``AsyncSGPClient``, ack, with the default concurrency (adaptive, at most 32 in flight).
* RSS (``--rss``): a fresh child process drains a 1,000,000-event spool while a thread samples
  its RSS with psutil.

Besides events/s, each run records the CPU time it cost per event: the client's (this
process, every thread) and the endpoint's. On a shared machine the CPU cost moves much less
than the wall clock. Every run checks the endpoint's ``items_accepted`` counter against the
events sent.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import scale_gp_beta
from _corpus import BASE_TIME, NAMES, QUESTIONS, TYPES
from _files import remove_database
from _host import describe_host
from _rss import measure_rss

from shipper import Shipper, ShipperConfig
from shipper.upload import BATCH_PATH, Uploader, batch_body
from spool import EventKind, NewEvent, Spool, SpoolConfig, encode_span

__all__ = ["main", "make_param", "spool_backlog"]

API_KEY = "bench-key"
ACCOUNT_ID = "bench-account"
BATCH = 50
SPOOL_CHUNK = 10_000
_MIB = 1024 * 1024

# ---- the spans ---------------------------------------------------------------------------


def make_param(i: int) -> dict[str, Any]:
    """The ``i``-th completed span as a ``SpanCreateParam`` dict: traces of 8 spans."""
    trace = i // 8
    start = BASE_TIME + timedelta(microseconds=37 * i)
    param: dict[str, Any] = {
        "id": f"span-{i:09d}",
        "trace_id": f"trace-{trace:08d}",
        "name": NAMES[i % len(NAMES)],
        "type": TYPES[i % len(TYPES)],
        "start_timestamp": start.isoformat(),
        "end_timestamp": (start + timedelta(milliseconds=120 + i % 900)).isoformat(),
        "status": "SUCCESS",
        "input": {"messages": [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}]},
        "output": {"content": f"answer {i}", "tokens": 20 + i % 300},
        "metadata": {"model": "gpt-4o-mini", "temperature": 0.2, "agent": "support-bot"},
    }
    if i % 8:
        param["parent_id"] = f"span-{trace * 8:09d}"
    return param


def _event(i: int) -> NewEvent:
    span_id, trace_id, payload = encode_span(make_param(i), EventKind.END, _MIB)
    return NewEvent(span_id, trace_id, EventKind.END, payload)


def spool_backlog(config: SpoolConfig, events: int) -> float:
    """Append ``events`` END events to a new spool in chunks; returns the seconds it took."""
    start = time.perf_counter()
    with Spool.open(config) as spool:
        for first in range(0, events, SPOOL_CHUNK):
            chunk = [_event(i) for i in range(first, min(events, first + SPOOL_CHUNK))]
            if not spool.append(chunk):
                raise SystemExit(f"the spool dropped events at {first:,}")
        spool.checkpoint("TRUNCATE")
    return time.perf_counter() - start


def _stored_payloads(path: Path) -> list[bytes]:
    """The payloads exactly as spooled, in seq order: what the baselines send."""
    conn = sqlite3.connect(path)
    try:
        return [bytes(row[0]) for row in conn.execute("SELECT payload FROM events ORDER BY seq")]
    finally:
        conn.close()


# ---- the endpoint, in its own process ------------------------------------------------------
def _psutil() -> Any:
    return importlib.import_module("psutil")


@dataclass(frozen=True)
class Endpoint:
    url: str
    pid: int

    def accepted(self) -> int:
        """The endpoint's count of items it stored."""
        with urllib.request.urlopen(f"{self.url}/_fake/stats", timeout=10) as answer:
            stats: dict[str, Any] = json.load(answer)
        return int(stats["items_accepted"])

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the endpoint's process has used so far."""
        times = _psutil().Process(self.pid).cpu_times()
        return float(times.user + times.system)


@contextmanager
def endpoint(*options: str, record: bool = False) -> Iterator[Endpoint]:
    """``python -m shipper.testing --no-record`` on a free port, with fault ``options``."""
    command = [sys.executable, "-m", "shipper.testing", "--api-key", API_KEY, *options]
    if not record:
        command.append("--no-record")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        if not line.startswith("SGP_CLIENT_BASE_URL="):
            raise SystemExit(f"the fake endpoint did not start: {line!r}")
        yield Endpoint(line.partition("=")[2], process.pid)
    finally:
        process.terminate()
        process.wait(timeout=10)


# ---- the three ways to ship ----------------------------------------------------------------
@dataclass(frozen=True)
class Timing:
    """One timed run: wall-clock seconds, and this process's CPU seconds in that window."""

    elapsed: float
    cpu: float


class _Stopwatch:
    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def stop(self) -> Timing:
        return Timing(time.perf_counter() - self.wall, time.process_time() - self.cpu)


def raw_httpx(bodies: Sequence[bytes], base_url: str) -> Timing:
    """PUT each pre-built body, one at a time, on one keep-alive connection."""
    headers = {"content-type": "application/json", "x-api-key": API_KEY}
    headers["x-selected-account-id"] = ACCOUNT_ID
    with httpx.Client(base_url=base_url, headers=headers, timeout=30.0) as client:
        client.put(BATCH_PATH, content=bodies[0]).raise_for_status()  # connect first
        watch = _Stopwatch()
        for body in bodies[1:]:
            client.put(BATCH_PATH, content=body).raise_for_status()
        return watch.stop()


def sdk_upsert(batches: Sequence[list[dict[str, Any]]], base_url: str) -> Timing:
    """``spans.upsert_batch(items=batch)`` per batch, as scale-gp-beta's exporter does."""
    with scale_gp_beta.SGPClient(
        api_key=API_KEY, account_id=ACCOUNT_ID, base_url=base_url
    ) as client:
        client.spans.upsert_batch(items=batches[0])  # type: ignore[arg-type]
        watch = _Stopwatch()
        for batch in batches[1:]:
            client.spans.upsert_batch(items=batch)  # type: ignore[arg-type]
        return watch.stop()


def shipper_config(base_url: str) -> ShipperConfig:
    return ShipperConfig(
        api_key=API_KEY, account_id=ACCOUNT_ID, base_url=base_url, batch_size=BATCH
    )


def drain(
    path: Path,
    base_url: str,
    events: int,
    *,
    config: ShipperConfig | None = None,
    uploader: Callable[[ShipperConfig], Uploader] | None = None,
) -> Timing:
    """``Shipper.drain()`` of the spool at ``path``, which must hold ``events`` events."""
    config = config or shipper_config(base_url)
    upload = uploader(config) if uploader is not None else None
    shipper = Shipper(SpoolConfig(path=path), config, uploader=upload)

    async def run() -> Timing:
        watch = _Stopwatch()
        result = await shipper.drain()
        timing = watch.stop()
        await shipper.aclose()
        if result.shipped != events or result.exit_code != 0:
            raise SystemExit(f"the shipper did not deliver everything: {result}")
        return timing

    return asyncio.run(run())


def spool_ship(
    template: Path,
    workdir: Path,
    base_url: str,
    events: int,
    *,
    config: ShipperConfig | None = None,
    uploader: Callable[[ShipperConfig], Uploader] | None = None,
) -> Timing:
    """:func:`drain` of a fresh copy of the backlog."""
    path = workdir / f"drain-{time.monotonic_ns()}.db"
    shutil.copyfile(template, path)
    os.chmod(path, 0o600)  # the spool refuses a file others can read
    try:
        return drain(path, base_url, events, config=config, uploader=uploader)
    finally:
        remove_database(path)


# ---- RSS, in a child process -------------------------------------------------------------------
def _rss_child(path: Path, base_url: str, events: int) -> dict[str, float]:
    timing, before, peak = measure_rss(lambda: drain(path, base_url, events))
    return {
        "events": events,
        "rate": events / timing.elapsed,
        "cpu_us": timing.cpu / events * 1e6,
        "rss_before_mb": before / _MIB,
        "rss_peak_mb": peak / _MIB,
    }


def rss_run(events: int, workdir: Path, server: Endpoint, quiet: bool) -> dict[str, float]:
    """Spool ``events`` events, then drain them in a fresh child process sampling its RSS."""
    path = workdir / "rss.db"
    if not quiet:
        print(f"  RSS: spooling {events:,} events", file=sys.stderr)
    spooled_in = spool_backlog(SpoolConfig(path=path), events)
    if not quiet:
        print(f"    spooled in {spooled_in:.0f} s; draining in a child process", file=sys.stderr)
    before = server.accepted()
    command = [
        sys.executable, __file__, "--rss-child", str(path),
        "--base-url", server.url, "--events", str(events),
    ]  # fmt: skip
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    delivered = server.accepted() - before
    if delivered != events:
        raise SystemExit(f"the endpoint accepted {delivered:,} items for {events:,} events")
    result["spool_mb"] = (path.stat().st_size + _size(Path(f"{path}-wal"))) / _MIB
    result["spooled_s"] = spooled_in
    return result


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


# ---- measuring -----------------------------------------------------------------------------------
@dataclass
class Series:
    """Repeated measurements of one way to ship: events/s, and CPU microseconds per event."""

    name: str
    events: int
    rates: list[float] = field(default_factory=list)
    client_us: list[float] = field(default_factory=list)
    endpoint_us: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.rates)

    def row(self) -> str:
        spread = f"{min(self.rates):>7,.0f} - {max(self.rates):>7,.0f}"
        cpu = (
            f"{statistics.median(self.client_us):>6.1f} {statistics.median(self.endpoint_us):>6.1f}"
        )
        return f"  {self.name:<36} {self.median:>9,.0f}   {spread}   {cpu}"


def _timed(
    series: Series, server: Endpoint, sent: int, fn: Callable[[], Timing], quiet: bool
) -> None:
    before, endpoint_cpu = server.accepted(), server.cpu_seconds()
    timing = fn()
    endpoint_cpu = server.cpu_seconds() - endpoint_cpu
    delivered = server.accepted() - before
    if delivered != sent:
        raise SystemExit(f"{series.name}: the endpoint accepted {delivered:,} of {sent:,} items")
    rate = series.events / timing.elapsed
    series.rates.append(rate)
    series.client_us.append(timing.cpu / series.events * 1e6)
    series.endpoint_us.append(endpoint_cpu / delivered * 1e6)
    if not quiet:
        print(f"    {series.name:<36} {rate:>10,.0f} events/s", file=sys.stderr)


@dataclass
class Results:
    """What one benchmark run measured."""

    events: int
    repeats: int
    payload_bytes: float
    spooled_in: float
    raw: Series
    sdk: Series
    ship: Series
    rss: dict[str, float] | None


def measure(events: int, repeats: int, args: argparse.Namespace) -> Results:
    """Spool the backlog once, then run the three ways to ship it ``repeats`` times."""
    quiet: bool = args.quiet
    timed = events - BATCH  # the baselines send their first batch before the clock starts
    with (
        tempfile.TemporaryDirectory(prefix="ship-bench-", dir=args.dir) as tmp,
        endpoint() as server,
    ):
        url = server.url
        workdir = Path(tmp)
        template = workdir / "backlog.db"
        spooled_in = spool_backlog(SpoolConfig(path=template), events)
        payloads = _stored_payloads(template)
        payload_bytes = statistics.mean(len(p) for p in payloads)
        bodies = [batch_body(payloads[i : i + BATCH]) for i in range(0, events, BATCH)]
        batches = [
            [json.loads(p) for p in payloads[i : i + BATCH]] for i in range(0, events, BATCH)
        ]
        del payloads
        # The prepared data is long-lived: keep the collector from walking it during runs.
        gc.collect()
        gc.freeze()

        raw = Series("raw httpx PUT, 1 in flight", timed)
        sdk = Series("SDK spans.upsert_batch, 1 in flight", timed)
        ship = Series("spool-ship Shipper.drain()", events)
        # Interleaved, so that a noisy neighbour hurts every figure alike.
        for r in range(repeats):
            if not quiet:
                print(f"  repeat {r + 1}/{repeats}", file=sys.stderr)
            _timed(raw, server, events, lambda: raw_httpx(bodies, url), quiet)
            _timed(sdk, server, events, lambda: sdk_upsert(batches, url), quiet)
            _timed(ship, server, events, lambda: spool_ship(template, workdir, url, events), quiet)
        # Freed before the RSS run, which drains in its own process anyway.
        bodies.clear()
        batches.clear()
        gc.unfreeze()

        rss = rss_run(args.rss_events, workdir, server, quiet) if args.rss else None
    return Results(events, repeats, payload_bytes, spooled_in, raw, sdk, ship, rss)


# ---- reporting ---------------------------------------------------------------------------------
def _machine() -> str:
    load = "load average {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())
    return describe_host(
        f"httpx {httpx.__version__}", f"scale-gp-beta {scale_gp_beta.__version__}", load
    )


def _ratio_line(label: str, ratios: list[float]) -> str:
    spread = f"{min(ratios):5.2f} - {max(ratios):5.2f}"
    return f"    {label:<28} {statistics.median(ratios):7.2f}x   {spread}"


def report(results: Results) -> None:
    raw, sdk, ship, rss = results.raw, results.sdk, results.ship, results.rss
    print(f"ship benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(f"  machine:  {_machine()}")
    print(
        f"  backlog:  {results.events:,} END events of distinct spans, payload "
        f"{results.payload_bytes:,.0f} bytes on average, batches of {BATCH}; "
        f"spooled in {results.spooled_in:.1f} s (not timed)"
    )
    print("  endpoint: python -m shipper.testing --no-record, in its own process")
    print(f"  repeats:  {results.repeats}, interleaved (medians, then min - max)")
    print()
    print(f"  {'':<36} {'events/s':>9}   {'range':>17}   {'CPU us/event':>13}")
    print(f"  {'':<36} {'':>9}   {'':>17}   {'client':>6} {'server':>6}")
    for series in (raw, sdk, ship):
        print(series.row())
    print()
    # Each repeat runs the three back to back, so a ratio within one repeat shares its noise.
    to_raw = [c / a for c, a in zip(ship.rates, raw.rates, strict=True)]
    to_sdk = [c / b for c, b in zip(ship.rates, sdk.rates, strict=True)]
    print("  ratios of events/s (median of the per-repeat ratios, then min - max)")
    print(_ratio_line("spool-ship / raw httpx", to_raw))
    print(_ratio_line("spool-ship / SDK upsert", to_sdk))
    vs_raw, vs_sdk = statistics.median(to_raw), statistics.median(to_sdk)
    goals = [
        ("spool-ship >= 0.5x raw httpx", vs_raw >= 0.5),
        ("spool-ship >= 5x SDK upsert_batch", vs_sdk >= 5),
    ]
    if rss is not None:
        print()
        print(f"  RSS, draining {int(rss['events']):,} events (fresh process, sampled 100/s)")
        print(
            f"    before {rss['rss_before_mb']:.0f} MB, peak {rss['rss_peak_mb']:.0f} MB; "
            f"{rss['rate']:,.0f} events/s, {rss['cpu_us']:.1f} us CPU/event; "
            f"spool {rss['spool_mb']:.0f} MB on disk (spooled in {rss['spooled_s']:.0f} s)"
        )
        goals.append((f"peak RSS < 200 MB at {int(rss['events']):,}", rss["rss_peak_mb"] < 200))
    print()
    print("  goals")
    for label, ok in goals:
        print(f"    {'met' if ok else 'MISSED':<7} {label}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=100_000, help="backlog for throughput")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs of each")
    parser.add_argument("--quick", action="store_true", help="20,000 events, one repeat")
    parser.add_argument("--rss", action="store_true", help="also drain --rss-events, peak RSS")
    parser.add_argument("--rss-events", type=int, default=1_000_000)
    parser.add_argument("--dir", type=Path, default=None, help="where the spool files go")
    parser.add_argument("--quiet", action="store_true", help="print the table only")
    parser.add_argument(
        "--latency", action="store_true", help="the latency mode (bench/_latency.py) instead"
    )
    parser.add_argument("--rss-child", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--base-url", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.rss_child is not None:
        print(json.dumps(_rss_child(args.rss_child, args.base_url, args.events)))
        return 0

    if args.latency:
        from _latency import run_latency

        return run_latency(args, _machine())

    events: int = args.events
    repeats: int = args.repeats
    if args.quick:
        events = min(events, 20_000)
        repeats = 1
    if events % BATCH or events <= BATCH:
        raise SystemExit(f"--events must be a multiple of {BATCH}, more than {BATCH}")
    report(measure(events, repeats, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
