"""The append benchmark: durable appends through ``spool.SpoolProcessor``, against baselines
measured in the same run. The machine is small and shared, so absolute figures move from run
to run; the ratios, measured interleaved, are what to compare.

    .venv/bin/python bench/append.py                 # the full run (a few minutes)
    .venv/bin/python bench/append.py --quick         # a smoke run: fewer events, one repeat
    .venv/bin/python bench/append.py --events 20000 --repeats 9 --rss-events 0 --spans plain

What is measured (every spool figure is on a real spool file in a temporary directory):

* spool, 100 tasks: 100 asyncio tasks each ``await processor.on_span_start(span)`` in a loop,
  on spans shaped like agentex's ``Span``: a pydantic model, as agentex has it, by default, or
  a plain slotted class with ``--spans plain``. Every call returns only once its row is
  committed. Also the CPU time of the event-loop thread and of the spool's writer thread per
  event: CPU time is far less disturbed by other load on the machine than wall time.
* spool, sequential: one task, the latency of each call (``perf_counter_ns``), p50 and p99.
* raw sqlite3: the same payloads, serialized beforehand, inserted into the same table (the
  spool's own schema, indexes included) with one ``BEGIN``/``INSERT``/``COMMIT`` per event,
  WAL, ``synchronous=NORMAL``: a hand-written durable append, without batching.
* persist-queue: ``persistqueue.SQLiteAckQueue.put`` of the same payload bytes, with its
  default settings (it always switches to WAL; ``synchronous`` stays SQLite's default, which
  the run prints). Its ``put`` blocks and commits once per call, so it runs sequentially.
* ``asyncio.Queue.put_nowait`` of the same payloads: in memory, not durable, for scale.
* spool, 100 tasks, ``synchronous=FULL``: as the first, with an fsync per group commit.
* spool, 100 tasks, ``redact=default_redactor()``: as the first, every event put through the
  built-in redactor (``spool.redact``) before it is written: what redaction costs.
* RSS: in a fresh child process, 100 tasks append ``--rss-events`` events (spans built one at a
  time, so the benchmark's own data does not count) while a thread samples RSS with psutil.

Each repeat runs every measurement once, in turn, so a noisy neighbour hurts all alike; the
table shows the median of the repeats and the range, and each ratio is the median of the
ratios within a repeat.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import persistqueue
from _corpus import BASE_TIME, NAMES, QUESTIONS, TYPES
from _files import remove_database
from _host import describe_host
from _rss import measure_rss
from pydantic import BaseModel

from spool import EventKind, SpoolConfig, SpoolProcessor, Synchronous, encode_span
from spool._schema import SCHEMA_V1
from spool.redact import Redact, default_redactor

__all__ = ["AgentexSpan", "PlainSpan", "Span", "main", "make_span", "make_spans"]

TASKS = 100
_INSERT = "INSERT INTO events (span_id, trace_id, kind, payload, enqueued_at) VALUES (?,?,?,?,?)"
_MIB = 1024 * 1024
_WARM_UP = 10**9 - 1

Row = tuple[str, str, str, bytes, float]


# ---- the spans ---------------------------------------------------------------------------------
class AgentexSpan(BaseModel):
    """The fields of ``agentex.types.span.Span``, a pydantic model as in agentex."""

    id: str
    name: str
    start_time: datetime
    trace_id: str
    data: dict[str, Any] | list[dict[str, Any]] | None = None
    end_time: datetime | None = None
    input: dict[str, Any] | list[dict[str, Any]] | None = None
    output: dict[str, Any] | list[dict[str, Any]] | None = None
    parent_id: str | None = None
    task_id: str | None = None


@dataclass(slots=True)
class PlainSpan:
    """The same attributes on a plain slotted class (``--spans plain``)."""

    id: str
    name: str
    start_time: datetime
    trace_id: str
    data: dict[str, Any] | list[dict[str, Any]] | None = None
    end_time: datetime | None = None
    input: dict[str, Any] | list[dict[str, Any]] | None = None
    output: dict[str, Any] | list[dict[str, Any]] | None = None
    parent_id: str | None = None
    task_id: str | None = None


Span = AgentexSpan | PlainSpan
SPANTYPES: dict[str, type[AgentexSpan] | type[PlainSpan]] = {
    "agentex": AgentexSpan,
    "plain": PlainSpan,
}
_span_type: type[AgentexSpan] | type[PlainSpan] = AgentexSpan


def _span_id(run: str, i: int) -> str:
    return f"{run}span-{i:09d}-{uuid.UUID(int=i).hex[:12]}"


def make_span(i: int, run: str = "") -> Span:
    """The ``i``-th span: traces of 8 spans (a root and its children), small payloads."""
    trace = i // 8
    return _span_type(
        id=_span_id(run, i),
        name=NAMES[i % len(NAMES)],
        trace_id=f"{run}trace-{trace:08d}",
        parent_id=None if i % 8 == 0 else _span_id(run, trace * 8),
        start_time=BASE_TIME + timedelta(microseconds=37 * i),
        input={"messages": [{"role": "user", "content": QUESTIONS[i % 4]}], "turn": i % 5},
        output={"content": f"answer {i}", "tokens": 20 + i % 300},
        data={
            "__span_type__": TYPES[i % len(TYPES)],
            "model": "gpt-4o-mini",
            "temperature": 0.2,
            "agent": "support-bot",
        },
    )


def make_spans(n: int, run: str = "") -> list[Span]:
    return [make_span(i, run) for i in range(n)]


def encode_rows(spans: Sequence[Span]) -> list[Row]:
    """The spool's own rows for ``spans``, serialized once, outside any timing."""
    now = time.time()
    rows: list[Row] = []
    for span in spans:
        span_id, trace_id, payload = encode_span(span, EventKind.START, _MIB)
        rows.append((span_id, trace_id, EventKind.START.value, payload, now))
    return rows


# ---- the measurements --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Concurrent:
    rate: float
    loop_cpu_us: float
    writer_cpu_us: float


def _count_rows(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])
    finally:
        conn.close()


def _writer_clock(path: Path) -> int | None:
    """The CPU clock of the spool's writer thread (named after the spool file), if found."""
    for thread in threading.enumerate():
        if thread.name == f"spool-writer:{path.name}" and thread.ident is not None:
            return time.pthread_getcpuclockid(thread.ident)
    return None


def spool_concurrent(
    spans: Sequence[Span],
    workdir: Path,
    sync: Synchronous,
    tasks: int = TASKS,
    redact: Redact | None = None,
) -> Concurrent:
    """Events per second with ``tasks`` tasks awaiting ``on_span_start``, and CPU per event."""
    path = workdir / f"spool-{sync.value.lower()}-{uuid.uuid4().hex[:8]}.db"

    async def run() -> Concurrent:
        config = SpoolConfig(path=path, synchronous=sync)
        processor = SpoolProcessor(config=config, redact=redact)
        # Open the spool and start the writer before the clock starts.
        await processor.on_span_start(make_span(_WARM_UP, "warm-"))
        clock = _writer_clock(path)

        async def worker(k: int) -> None:
            for span in spans[k::tasks]:
                await processor.on_span_start(span)

        writer_start = time.clock_gettime(clock) if clock is not None else 0.0
        loop_start = time.thread_time()
        start = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(tasks)))
        elapsed = time.perf_counter() - start
        loop_cpu = time.thread_time() - loop_start
        writer_cpu = time.clock_gettime(clock) - writer_start if clock is not None else 0.0
        await processor.shutdown()
        n = len(spans)
        return Concurrent(n / elapsed, loop_cpu / n * 1e6, writer_cpu / n * 1e6)

    result = asyncio.run(run())
    stored = _count_rows(path)
    if stored != len(spans) + 1:
        raise SystemExit(f"spool lost events: {stored} rows for {len(spans) + 1} appends")
    remove_database(path)
    return result


def spool_sequential(spans: Sequence[Span], workdir: Path) -> list[int]:
    """Nanoseconds per ``await on_span_start`` from a single task."""
    path = workdir / f"spool-seq-{uuid.uuid4().hex[:8]}.db"

    async def run() -> list[int]:
        processor = SpoolProcessor(config=SpoolConfig(path=path))
        await processor.on_span_start(make_span(_WARM_UP, "warm-"))
        clock = time.perf_counter_ns
        latencies: list[int] = []
        for span in spans:
            start = clock()
            await processor.on_span_start(span)
            latencies.append(clock() - start)
        await processor.shutdown()
        return latencies

    latencies = asyncio.run(run())
    remove_database(path)
    return latencies


def raw_sqlite(rows: Sequence[Row], workdir: Path) -> float:
    """One transaction per event on the spool's own table: WAL, synchronous=NORMAL."""
    path = workdir / f"raw-{uuid.uuid4().hex[:8]}.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    for statement in SCHEMA_V1.split(";"):
        if statement.strip():
            conn.execute(statement)
    execute = conn.execute
    start = time.perf_counter()
    for row in rows:
        execute("BEGIN")
        execute(_INSERT, row)
        execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    remove_database(path)
    return len(rows) / elapsed


def persist_queue_settings(workdir: Path) -> str:
    """The journal mode and synchronous level persist-queue ends up with by default."""
    queue = persistqueue.SQLiteAckQueue(str(workdir / "pq-settings"))
    conn: Any = queue._putter
    mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    level = conn.execute("PRAGMA synchronous").fetchone()[0]
    queue.close()
    names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
    return f"journal_mode={mode}, synchronous={names.get(int(level), level)}"


def persist_queue(rows: Sequence[Row], workdir: Path) -> float:
    """``SQLiteAckQueue.put`` of each payload, default settings, one commit per put."""
    path = workdir / f"pq-{uuid.uuid4().hex[:8]}"
    queue = persistqueue.SQLiteAckQueue(str(path))
    put = queue.put
    start = time.perf_counter()
    for row in rows:
        put(row[3])
    elapsed = time.perf_counter() - start
    queue.close()
    remove_database(path)
    return len(rows) / elapsed


def asyncio_queue(rows: Sequence[Row]) -> float:
    """``asyncio.Queue.put_nowait``: in memory, not durable; for scale only."""

    async def run() -> float:
        queue: asyncio.Queue[Row] = asyncio.Queue()
        put = queue.put_nowait
        start = time.perf_counter()
        for row in rows:
            put(row)
        return len(rows) / (time.perf_counter() - start)

    return asyncio.run(run())


# ---- RSS, in a child process -------------------------------------------------------------------
def _rss_child(events: int, workdir: Path) -> dict[str, float]:
    path = workdir / f"spool-rss-{uuid.uuid4().hex[:8]}.db"

    async def run() -> float:
        processor = SpoolProcessor(config=SpoolConfig(path=path))
        await processor.on_span_start(make_span(_WARM_UP, "warm-"))
        counter = iter(range(events))

        async def worker() -> None:
            # Spans are built one at a time, as an agent makes them, so that only the spool's
            # memory (and one span per task) is on the heap.
            for i in counter:
                await processor.on_span_start(make_span(i))

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(TASKS)))
        elapsed = time.perf_counter() - start
        await processor.shutdown()
        return events / elapsed

    rate, before, peak = measure_rss(lambda: asyncio.run(run()))
    wal = Path(f"{path}-wal")
    return {
        "events": events,
        "stored": _count_rows(path) - 1,
        "rate": rate,
        "rss_before_mb": before / _MIB,
        "rss_peak_mb": peak / _MIB,
        "spool_mb": (path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)) / _MIB,
    }


def rss_in_child(events: int, workdir: Path) -> dict[str, float]:
    kind = next(name for name, cls in SPANTYPES.items() if cls is _span_type)
    command = [sys.executable, __file__, "--rss-child", str(events), "--dir", str(workdir)]
    command += ["--spans", kind]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


# ---- one run -----------------------------------------------------------------------------------
@dataclass
class Series:
    """Repeated measurements of one thing, in events per second."""

    name: str
    events: int
    rates: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.rates)

    def row(self, extra: str = "") -> str:
        spread = f"{min(self.rates):>9,.0f} - {max(self.rates):>9,.0f}"
        return f"  {self.name:<42} {self.events:>8,} {self.median:>11,.0f}  {spread}  {extra}"


@dataclass
class Results:
    events: int
    repeats: int
    payload_bytes: float
    pq_settings: str
    normal: Series
    full: Series
    redacted: Series
    raw: Series
    pq: Series
    aq: Series
    cpu_normal: list[Concurrent] = field(default_factory=list)
    cpu_full: list[Concurrent] = field(default_factory=list)
    cpu_redacted: list[Concurrent] = field(default_factory=list)
    latencies: list[int] = field(default_factory=list)
    rss: dict[str, float] | None = None
    load: list[str] = field(default_factory=list)


def _load() -> str:
    one, five, _ = os.getloadavg()
    pressure = Path("/proc/pressure/cpu")
    some = ""
    if pressure.exists():
        first = pressure.read_text().splitlines()[0]  # "some avg10=... avg60=..."
        some = ", cpu pressure " + first.split()[1].replace("avg10=", "") + "%"
    return f"load {one:.2f} / {five:.2f}{some}"


def _say(quiet: bool, text: str) -> None:
    if not quiet:
        print(text, file=sys.stderr, flush=True)


def measure(
    events: int, repeats: int, rss_events: int, workdir: Path, quiet: bool = False
) -> Results:
    spans = make_spans(events)
    rows = encode_rows(spans)
    # A fsync per put costs the same however many events there are: fewer will do.
    slow_events = max(1_000, events // 10)
    seq_events = max(1_000, events // 5)
    results = Results(
        events=events,
        repeats=repeats,
        payload_bytes=statistics.mean(len(r[3]) for r in rows),
        pq_settings=persist_queue_settings(workdir),
        normal=Series(f"spool, {TASKS} tasks, synchronous=NORMAL", events),
        full=Series(f"spool, {TASKS} tasks, synchronous=FULL", events),
        redacted=Series(f"spool, {TASKS} tasks, redact=default_redactor()", events),
        raw=Series("raw sqlite3, 1 commit/event, NORMAL", events),
        pq=Series("persist-queue SQLiteAckQueue.put", slow_events),
        aq=Series("asyncio.Queue.put_nowait (not durable)", events),
    )
    results.load.append(_load())

    def timed(series: Series, fn: Callable[[], float]) -> None:
        series.rates.append(fn())
        _say(quiet, f"    {series.name:<42} {series.rates[-1]:>12,.0f} events/s")

    def concurrent(sync: Synchronous, cpu: list[Concurrent], redact: Redact | None = None) -> float:
        result = spool_concurrent(spans, workdir, sync, redact=redact)
        cpu.append(result)
        return result.rate

    # Interleaved, so that a noisy neighbour hurts every figure alike.
    for r in range(repeats):
        _say(quiet, f"  repeat {r + 1}/{repeats} ({_load()})")
        timed(results.normal, lambda: concurrent(Synchronous.NORMAL, results.cpu_normal))
        timed(results.raw, lambda: raw_sqlite(rows, workdir))
        timed(results.pq, lambda: persist_queue(rows[:slow_events], workdir))
        timed(results.aq, lambda: asyncio_queue(rows))
        timed(results.full, lambda: concurrent(Synchronous.FULL, results.cpu_full))
        timed(
            results.redacted,
            lambda: concurrent(Synchronous.NORMAL, results.cpu_redacted, default_redactor()),
        )
        results.latencies.extend(spool_sequential(spans[:seq_events], workdir))

    if rss_events > 0:
        _say(quiet, f"  RSS: {rss_events:,} events in a child process ({_load()})")
        results.rss = rss_in_child(rss_events, workdir)
    results.load.append(_load())
    return results


# ---- the report --------------------------------------------------------------------------------
def _machine() -> str:
    return describe_host()


def _cpu(results: list[Concurrent]) -> str:
    """CPU per event of the two threads. Their sum bounds the rate when the threads never wait
    for a CPU (they take turns: see docs/performance.md)."""
    loop = statistics.median(r.loop_cpu_us for r in results)
    writer = statistics.median(r.writer_cpu_us for r in results)
    total = loop + writer
    return f"cpu/event: loop {loop:4.1f} + writer {writer:4.1f} us (1/sum {1e6 / total:,.0f}/s)"


def _paired(a: Series, b: Series) -> float:
    """The median of ``a / b`` within each repeat: both ran back to back, under the same load."""
    return statistics.median(x / y for x, y in zip(a.rates, b.rates, strict=True))


def report(res: Results, workdir: Path) -> list[tuple[str, bool]]:
    """Print the table; return the goals and whether each was met."""
    lat = sorted(res.latencies)
    p50 = lat[len(lat) // 2] / 1000
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] / 1000
    vs_raw = _paired(res.normal, res.raw)
    vs_pq = _paired(res.normal, res.pq)

    print(f"append benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(f"  machine:  {_machine()}")
    print(f"  spools:   {workdir.parent} ({_filesystem(workdir.parent)})")
    label = "agentex Span fields on a pydantic model" if _span_type is AgentexSpan else "plain"
    print(f"  spans:    {label}, {res.payload_bytes:,.0f} bytes of JSON on average")
    print(f"  persist-queue defaults: {res.pq_settings}, pickle serializer")
    print(f"  repeats:  {res.repeats}, interleaved; median shown, then min - max")
    print(f"  load:     at start {res.load[0]}; at end {res.load[-1]}")
    print()
    print(f"  {'throughput':<42} {'events':>8} {'events/s':>11}  {'range':>21}")
    print(res.normal.row(_cpu(res.cpu_normal)))
    print(res.full.row(_cpu(res.cpu_full)))
    print(res.redacted.row(_cpu(res.cpu_redacted)))
    for series in (res.raw, res.pq, res.aq):
        print(series.row())
    print()
    print(f"  spool sequential (1 task, {len(lat):,} calls)")
    print(f"    p50 {p50:7.1f} us   p99 {p99:7.1f} us   {1e9 / statistics.mean(lat):,.0f} events/s")
    print()
    print("  ratios (median of the per-repeat ratios)")
    ratios = [
        ("spool / raw sqlite3 one commit per event", vs_raw, "6.2f"),
        ("spool / persist-queue", vs_pq, "6.1f"),
        ("spool FULL / persist-queue", _paired(res.full, res.pq), "6.1f"),
        ("spool FULL / spool NORMAL", _paired(res.full, res.normal), "6.2f"),
        ("spool redacted / spool NORMAL", _paired(res.redacted, res.normal), "6.2f"),
    ]
    for label, value, spec in ratios:
        print(f"    {label:<42} {value:{spec}}x")
    goals = [
        (f"spool >= 50,000 events/s with {TASKS} tasks", res.normal.median >= 50_000),
        ("spool >= 10x persist-queue", vs_pq >= 10),
        ("spool >= 0.5x raw sqlite3 one commit per event", vs_raw >= 0.5),
        ("sequential p50 <= 150 us", p50 <= 150),
    ]
    if res.rss is not None:
        rss = res.rss
        print()
        print(f"  RSS, {int(rss['events']):,} events, {TASKS} tasks (fresh process, sampled 100/s)")
        print(
            f"    before {rss['rss_before_mb']:.0f} MB, peak {rss['rss_peak_mb']:.0f} MB; "
            f"{rss['rate']:,.0f} events/s; {int(rss['stored']):,} rows stored, "
            f"spool {rss['spool_mb']:.0f} MB on disk"
        )
        goals.append(
            (f"peak RSS < 150 MB at {int(rss['events']):,} events", rss["rss_peak_mb"] < 150)
        )
    print()
    print("  goals")
    for label, ok in goals:
        print(f"    {'met' if ok else 'MISSED':<7} {label}")
    return goals


def _filesystem(path: Path) -> str:
    best = ("?", "")
    with open("/proc/mounts", encoding="utf-8") as mounts:  # Linux; "?" elsewhere
        for line in mounts:
            parts = line.split()
            mount, kind = parts[1], parts[2]
            if str(path.resolve()).startswith(mount) and len(mount) > len(best[1]):
                best = (kind, mount)
    return best[0]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Durable appends through SpoolProcessor.")
    parser.add_argument("--events", type=int, default=50_000, help="events per throughput run")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each throughput figure")
    parser.add_argument("--quick", action="store_true", help="20,000 events, one repeat, no 1M")
    parser.add_argument("--rss-events", type=int, default=None, help="events for RSS (0: skip)")
    parser.add_argument("--dir", type=Path, default=None, help="where the spool files go")
    parser.add_argument("--quiet", action="store_true", help="print the table only")
    parser.add_argument(
        "--spans",
        choices=sorted(SPANTYPES),
        default="agentex",
        help="agentex: a pydantic model like agentex's Span (default); plain: a slotted class",
    )
    parser.add_argument("--rss-child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    global _span_type  # noqa: PLW0603 - the span class is a process-wide choice
    _span_type = SPANTYPES[args.spans]

    if args.rss_child is not None:
        print(json.dumps(_rss_child(args.rss_child, args.dir)))
        return 0

    events: int = args.events
    repeats: int = args.repeats
    rss_events: int = 1_000_000 if args.rss_events is None else args.rss_events
    if args.quick:
        events = min(events, 20_000)
        repeats = 1
        rss_events = 100_000 if args.rss_events is None else rss_events
    with tempfile.TemporaryDirectory(prefix="spool-bench-", dir=args.dir) as tmp:
        workdir = Path(tmp)
        results = measure(events, repeats, rss_events, workdir, args.quiet)
        report(results, workdir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
