"""Hot path isolation: does the endpoint's health reach the agent's event loop?

    .venv/bin/python bench/hotpath.py            # the full run (about half a minute)
    .venv/bin/python bench/hotpath.py --quick    # a smoke run
    .venv/bin/python bench/hotpath.py --spans 2000 --rounds 5 --json
    .venv312/bin/python bench/hotpath.py --agentex   # agentex's own path vs use_spool (3.12)

The latency of each ``await processor.on_span_start(span)`` / ``on_span_end(span)``
(``perf_counter_ns``), one agent task on one event loop, through
``SpoolProcessor(path, ship=ShipperConfig(...))``: the shipper runs in-process on its own thread
and loop (``shipper.embedded``), against a FakeSpanServer in a separate process (so the fake's
own threads do not compete with the agent for the GIL), in three conditions, each round on a
fresh spool:

* ``no shipping``: ``ship=False``, the floor: serialization, hand-off, group commit.
* ``healthy``: the endpoint answers at once; the shipper claims, uploads and acks alongside.
* ``hanging``: ``faults.hang()``: every upload is held open, the shipper's batches all wait.

Rounds alternate the conditions (A B C A B C ...) so that drift on a shared machine spreads over
all three. The goal: hanging within 2x of healthy at p50 and p99. Each round also reports what
the endpoint saw, to show that the shipper was really shipping (healthy) or really stuck
(hanging) while the agent was being timed.

``--agentex`` (with agentex-sdk installed) times what an agentex agent awaits instead:
``await trace.start_span(...)`` / ``await trace.end_span(span)`` of agentex's ``AsyncTrace``
(what ``adk.tracing.span`` runs), the endpoint healthy, in two conditions alternating:

* ``agentex queue``: agentex's own default path, its ``SGPAsyncTracingProcessor`` registered;
  the call only enqueues, and agentex's queue ships later on the same loop (not durable).
* ``use_spool``: ``spool.agentex.use_spool(path, ship=...)``: the call returns once the event
  is committed; the shipper runs on its own thread.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from shipper import ShipperConfig
from spool import SpoolConfig, SpoolProcessor

__all__ = ["AgentSpan", "Condition", "main"]

AGENTEX_CONDITIONS = ("agentex queue", "use_spool")

KEY, ACCOUNT = "bench-key", "bench-account"
CONDITIONS = ("no shipping", "healthy", "hanging")
SHUTDOWN_TIMEOUT = 2.0
GOAL = 2.0


@dataclass(slots=True)
class AgentSpan:
    """The shape of an agentex ``Span``."""

    id: str
    name: str
    trace_id: str
    start_time: datetime
    parent_id: str | None = None
    end_time: datetime | None = None
    input: dict[str, Any] | None = None
    output: dict[str, Any] | None = None
    data: dict[str, Any] | None = None


def make_spans(n: int) -> list[AgentSpan]:
    """Spans of a realistic size (~1 KB of JSON each), ten to a trace."""
    started = datetime.now(UTC)
    spans: list[AgentSpan] = []
    trace_id = ""
    for i in range(n):
        if i % 10 == 0:
            trace_id = str(uuid.uuid4())
        spans.append(
            AgentSpan(
                id=str(uuid.uuid4()),
                name="llm.completion" if i % 3 else "tool.search",
                trace_id=trace_id,
                start_time=started + timedelta(milliseconds=i),
                parent_id=None if i % 10 == 0 else trace_id,
                input={"messages": [{"role": "user", "content": "why is the sky blue? " * 20}]},
                data={"__span_type__": "COMPLETION", "model": "m-1", "tokens": i},
            )
        )
    return spans


# ---- the endpoint, in its own process ---------------------------------------------------------
class Endpoint:
    """``python -m shipper.testing`` in a child process, steered through its control API."""

    def __init__(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "shipper.testing", "--api-key", KEY, "--no-record"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline().strip()
        if not line.startswith("SGP_CLIENT_BASE_URL="):
            self.close()
            raise RuntimeError(f"the fake endpoint did not start: {line!r}")
        self.base_url = line.partition("=")[2]
        self._http = httpx.Client(base_url=self.base_url, timeout=10.0)

    def faults(self, **spec: Any) -> None:
        self._http.post("/_fake/faults", json=spec).raise_for_status()

    def stats(self) -> dict[str, Any]:
        answer = self._http.get("/_fake/stats")
        answer.raise_for_status()
        stats: dict[str, Any] = answer.json()
        return stats

    def close(self) -> None:
        if hasattr(self, "_http"):
            self._http.close()
        self._proc.terminate()
        self._proc.communicate(timeout=10)


# ---- one round --------------------------------------------------------------------------------
@dataclass(slots=True)
class Condition:
    """Every latency measured in one condition, over all its rounds."""

    name: str
    latencies_ns: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def percentile(self, q: float) -> float:
        """The ``q`` quantile in microseconds (nearest rank)."""
        ordered = sorted(self.latencies_ns)
        index = min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))
        return ordered[index] / 1000

    def summary(self) -> dict[str, float]:
        return {
            "calls": len(self.latencies_ns),
            "p50_us": self.percentile(0.50),
            "p99_us": self.percentile(0.99),
            "p999_us": self.percentile(0.999),
            "max_us": max(self.latencies_ns) / 1000,
            "mean_us": statistics.fmean(self.latencies_ns) / 1000,
        }


async def agent(processor: SpoolProcessor, spans: Sequence[AgentSpan], warmup: int) -> list[int]:
    """Start and end every span, one after the other; the latency of each timed call."""
    timed: list[int] = []
    clock = time.perf_counter_ns
    for i, span in enumerate(spans):
        began = clock()
        await processor.on_span_start(span)
        started = clock()
        span.end_time = span.start_time + timedelta(milliseconds=5)
        span.output = {"text": "because of Rayleigh scattering"}
        await processor.on_span_end(span)
        ended = clock()
        if i >= warmup:
            timed += (started - began, ended - started)
    return timed


def run_round(
    condition: Condition, endpoint: Endpoint, workdir: Path, spans: int, warmup: int
) -> None:
    path = workdir / f"{condition.name.replace(' ', '-')}-{uuid.uuid4().hex[:8]}.db"
    ship: ShipperConfig | bool = False
    if condition.name != "no shipping":
        ship = ShipperConfig(api_key=KEY, account_id=ACCOUNT, base_url=endpoint.base_url)
    if condition.name == "hanging":
        endpoint.faults(clear=True, hang=True)
    else:
        endpoint.faults(clear=True)
    before = endpoint.stats()
    processor = SpoolProcessor(config=SpoolConfig(path=path), ship=ship)

    async def go() -> list[int]:
        timed = await agent(processor, make_spans(spans), warmup)
        during = endpoint.stats()
        began = time.monotonic()
        await processor.shutdown(timeout=SHUTDOWN_TIMEOUT)
        shutdown_s = time.monotonic() - began
        if condition.name == "healthy":
            shipped = during["items_accepted"] - before["items_accepted"]
            condition.notes.append(f"{shipped} events shipped while timed")
        elif condition.name == "hanging":
            condition.notes.append(
                f"{during['in_flight']} uploads held open; shutdown {shutdown_s:.2f}s "
                f"(bound {SHUTDOWN_TIMEOUT:g}s)"
            )
        return timed

    try:
        condition.latencies_ns += asyncio.run(go())
    finally:
        if condition.name == "hanging":
            endpoint.faults(hang=False)


async def agentex_agent(trace: Any, spans: Sequence[AgentSpan], warmup: int) -> list[int]:
    """``agent`` for agentex: the agent's own calls, with the same inputs and outputs."""
    timed: list[int] = []
    clock = time.perf_counter_ns
    for i, shape in enumerate(spans):
        began = clock()
        span = await trace.start_span(
            shape.name, parent_id=shape.parent_id, input=shape.input, data=shape.data
        )
        started = clock()
        span.output = {"text": "because of Rayleigh scattering"}
        await trace.end_span(span)
        ended = clock()
        if i >= warmup:
            timed += (started - began, ended - started)
        await asyncio.sleep(0)  # the agent's own work: agentex's queue gets the loop here
    return timed


def run_agentex_round(
    condition: Condition, endpoint: Endpoint, workdir: Path, spans: int, warmup: int
) -> None:
    from agentex import AsyncAgentex
    from agentex.lib.core.tracing import shutdown_default_span_queue
    from agentex.lib.core.tracing import tracing_processor_manager as manager
    from agentex.lib.core.tracing.tracer import AsyncTracer
    from agentex.lib.types.tracing import SGPTracingProcessorConfig

    from spool.agentex import use_spool

    registry = manager.GLOBAL_TRACING_PROCESSOR_MANAGER
    registry.async_processors.clear()
    registry.sync_processors.clear()
    endpoint.faults(clear=True)
    before = endpoint.stats()
    ship = ShipperConfig(api_key=KEY, account_id=ACCOUNT, base_url=endpoint.base_url)
    if condition.name == "use_spool":
        processor = use_spool(workdir / f"agentex-{uuid.uuid4().hex[:8]}.db", ship=ship)[0]
    else:
        manager.add_tracing_processor_config(
            SGPTracingProcessorConfig(
                sgp_api_key=KEY, sgp_account_id=ACCOUNT, sgp_base_url=endpoint.base_url
            )
        )

    async def go() -> list[int]:
        trace = AsyncTracer(AsyncAgentex(base_url=endpoint.base_url, api_key=KEY)).trace(
            str(uuid.uuid4())
        )
        timed = await agentex_agent(trace, make_spans(spans), warmup)
        during = endpoint.stats()
        await shutdown_default_span_queue(timeout=30)
        if condition.name == "use_spool":
            await processor.shutdown(timeout=SHUTDOWN_TIMEOUT)
        shipped = during["items_accepted"] - before["items_accepted"]
        condition.notes.append(f"{shipped} events shipped while timed")
        return timed

    condition.latencies_ns += asyncio.run(go())


def run_rounds(
    args: argparse.Namespace,
    names: Sequence[str],
    one_round: Callable[[Condition, Endpoint, Path, int, int], None],
) -> dict[str, Condition]:
    """Every round of every condition, alternating, against one endpoint process."""
    conditions = {name: Condition(name) for name in names}
    endpoint = Endpoint()
    try:
        with tempfile.TemporaryDirectory(prefix="hotpath-") as tmp:
            for _ in range(args.rounds):
                for name in names:
                    one_round(conditions[name], endpoint, Path(tmp), args.spans, args.warmup)
    finally:
        endpoint.close()
    return conditions


def agentex_main(args: argparse.Namespace) -> int:
    """The ``--agentex`` run: agentex's own path against use_spool, in one process run."""
    os.environ.setdefault("AGENT_NAME", "hotpath")  # agentex's SGP processor requires these
    os.environ.setdefault("ACP_URL", "http://127.0.0.1:9")
    conditions = run_rounds(args, AGENTEX_CONDITIONS, run_agentex_round)
    results = {name: c.summary() for name, c in conditions.items()}
    queue, spool = results["agentex queue"], results["use_spool"]
    ratios = {q: spool[f"{q}_us"] / queue[f"{q}_us"] for q in ("p50", "p99")}
    if not _report(args, "agentex hot path", conditions, {"use_spool_over_agentex_queue": ratios}):
        print(f"\nuse_spool / agentex queue: p50 {ratios['p50']:.2f}x, p99 {ratios['p99']:.2f}x")
    return 0


def _report(
    args: argparse.Namespace, title: str, conditions: dict[str, Condition], extra: dict[str, Any]
) -> bool:
    """Print the run's JSON object (``--json``: True) or its table and notes (False)."""
    results = {name: c.summary() for name, c in conditions.items()}
    if args.json:
        report = {
            "machine": _machine(),
            "spans_per_round": args.spans,
            "rounds": args.rounds,
            "conditions": results,
            "notes": {name: c.notes for name, c in conditions.items()},
            **extra,
        }
        print(json.dumps(report, indent=2))
        return True
    print(f"{title}: {_machine()}")
    print(f"{args.rounds} rounds x {args.spans} spans (2 timed calls each) per condition\n")
    print(
        f"{'condition':<14} {'calls':>7} {'p50 us':>9} {'p99 us':>9} {'p99.9 us':>9} {'max us':>9}"
    )
    for name, row in results.items():
        print(
            f"{name:<14} {row['calls']:>7.0f} {row['p50_us']:>9.1f} {row['p99_us']:>9.1f} "
            f"{row['p999_us']:>9.1f} {row['max_us']:>9.1f}"
        )
    print()
    for name, condition in conditions.items():
        if condition.notes:
            print(f"{name}: " + "; ".join(condition.notes))
    return False


def _machine() -> str:
    return (
        f"{platform.python_implementation()} {platform.python_version()} on "
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--spans", type=int, default=1500, help="spans per round (2 calls each)")
    parser.add_argument("--rounds", type=int, default=4, help="rounds per condition")
    parser.add_argument("--warmup", type=int, default=100, help="untimed spans per round")
    parser.add_argument("--quick", action="store_true", help="300 spans, 1 round")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--agentex", action="store_true", help="agentex's own path vs use_spool (needs agentex)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.spans, args.rounds, args.warmup = 300, 1, 50
    if args.agentex:
        return agentex_main(args)

    conditions = run_rounds(args, CONDITIONS, run_round)
    results = {name: c.summary() for name, c in conditions.items()}
    healthy, hanging = results["healthy"], results["hanging"]
    ratios = {
        "p50": hanging["p50_us"] / healthy["p50_us"],
        "p99": hanging["p99_us"] / healthy["p99_us"],
    }
    ok = ratios["p50"] <= GOAL and ratios["p99"] <= GOAL
    extra = {"hanging_over_healthy": ratios, "goal": GOAL, "ok": ok}
    if _report(args, "hot path", conditions, extra):
        return 0
    verdict = "meets" if ok else "MISSES"
    print(
        f"\nhanging / healthy: p50 {ratios['p50']:.2f}x, p99 {ratios['p99']:.2f}x "
        f"({verdict} the goal of {GOAL:g}x)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
