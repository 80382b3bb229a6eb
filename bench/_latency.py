"""bench/ship.py's latency mode: the shipper against an endpoint as far away as Scale GP's.

    .venv/bin/python bench/ship.py --latency            # every scenario, 3 interleaved repeats
    .venv/bin/python bench/ship.py --latency --quick    # a smoke run

The endpoint is ``python -m shipper.testing`` in its own process, answering each batch after a
lognormal delay with a median of 150 ms and a 95th percentile of 330 ms (what agentex measured
for ``PUT /v5/spans/batch``). Every figure is a ratio against a baseline run in the same
process run, on the same endpoint and the same events:

* throughput: ``Shipper.drain()`` with default settings against agentex's queue defaults
  (``AsyncSGPClient.spans.upsert_batch``, batches of 200, 3 in flight). Goal: 2x or more.
  Alongside, the upload path: the shipper's uploader (the SDK's public ``put`` on an aiohttp
  client) against the transport bypass it used before 2026-12-03 (kept in this file to be
  measured) and against ``put`` on the SDK's default httpx client, at this latency and on
  loopback.
* storm: the endpoint serves 8 requests at a time and answers 429 at once to any more. Requests
  per delivered event of a sender whose concurrency adapts (:class:`AdaptiveConcurrency`)
  against the same sender held at a fixed 32; and of ``Shipper.drain()``. Goal: adaptive
  fewer than fixed.
* steady agent: ``SpoolProcessor(path, ship=ShipperConfig(...))`` in this process, agent tasks
  making spans of 0.1 to 3 s, one span of 20 s among them. Goal: at most 1.1 items delivered
  per span, and the 20 s span's start at the endpoint before its end.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import random
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import scale_gp_beta
from hotpath import AgentSpan
from ship import (
    ACCOUNT_ID,
    API_KEY,
    Endpoint,
    Timing,
    _Stopwatch,
    _stored_payloads,
    endpoint,
    spool_backlog,
    spool_ship,
)

from shipper import AdaptiveConcurrency, ShipperConfig, Signal
from shipper.upload import BATCH_PATH, SGPUploader, Uploader, batch_body
from spool import SpoolConfig, SpoolProcessor

__all__ = ["run_latency"]

P50, P95 = 0.15, 0.33
LATENCY = ("--latency", str(P50), "--latency-p95", str(P95))
AGENTEX_BATCH, AGENTEX_IN_FLIGHT = 200, 3
STORM_CAPACITY, FIXED = 8, 32
BATCH = 50
LONG_SPAN = 20.0


# ---- the upload path: what the shipper's public put is measured against ------------------------
class SDKDefaultClientUploader:
    """``AsyncSGPClient.put`` on every request, on the SDK's default httpx client."""

    def __init__(self, config: ShipperConfig) -> None:
        self._client = scale_gp_beta.AsyncSGPClient(
            api_key=config.api_key,
            account_id=config.account_id,
            base_url=config.base_url,
            max_retries=0,
            timeout=config.request_timeout,
            http_client=scale_gp_beta.DefaultAsyncHttpxClient(
                limits=httpx.Limits(max_connections=config.concurrency + 2)
            ),
        )

    async def upload(self, body: bytes) -> None:
        await self._client.put(
            BATCH_PATH,
            cast_to=httpx.Response,
            content=body,
            options={"headers": {"Content-Type": "application/json"}},
        )

    async def aclose(self) -> None:
        await self._client.close()


class TransportBypassUploader(SGPUploader):
    """The shipper's upload path until 2026-12-03, kept here only to be measured: after the
    first request, each request is built from that one and sent straight to the transport of
    the SDK's httpx client, skipping the SDK's and httpx's per-request layers. Uses three
    private attributes (the SDK's ``_make_status_error_from_response`` and
    ``_idempotency_header``, httpx's ``AsyncClient._transport_for_url``); issue 11's rule was
    to keep it in the shipper only if it made at least 10 % more events/s at 150 ms."""

    def __init__(self, config: ShipperConfig) -> None:
        super().__init__(config)
        self._http: httpx.AsyncClient = self._client._client
        self._http.event_hooks = {"request": [self._keep]}
        self._template: tuple[httpx.URL, list[tuple[bytes, bytes]], dict[str, Any]] | None = None
        self._transport: httpx.AsyncBaseTransport | None = None

    async def upload(self, body: bytes) -> None:
        if self._template is None or self._transport is None:
            await super().upload(body)
            return
        url, headers, extensions = self._template
        request = httpx.Request("PUT", url, content=body, headers=headers, extensions=extensions)
        try:
            response = await self._transport.handle_async_request(request)
            try:
                if response.is_success and isinstance(response.stream, httpx.AsyncByteStream):
                    async for _ in response.stream:  # to the end, keeping the connection
                        pass
                else:
                    await response.aread()  # the endpoint's detail
            finally:
                await response.aclose()
        except httpx.TimeoutException as exc:
            raise scale_gp_beta.APITimeoutError(request=request) from exc
        except Exception as exc:
            raise scale_gp_beta.APIConnectionError(request=request) from exc
        if not response.is_success:
            raise self._client._make_status_error_from_response(response) from None

    async def _keep(self, request: httpx.Request) -> None:
        if self._template is None and self._client._idempotency_header is None:
            headers = [(k, v) for k, v in request.headers.raw if k.lower() != b"content-length"]
            self._template = (request.url, headers, dict(request.extensions))
            self._transport = self._http._transport_for_url(request.url)
            self._http.event_hooks = {"request": [], "response": []}


def config_for(url: str, **options: Any) -> ShipperConfig:
    """Default settings, this endpoint's credentials."""
    return ShipperConfig(api_key=API_KEY, account_id=ACCOUNT_ID, base_url=url, **options)


UPLOADERS: dict[str, Callable[[ShipperConfig], Uploader]] = {
    "SGPUploader (SDK put, aiohttp)": SGPUploader,
    "the transport bypass, before 2026-12-03": TransportBypassUploader,
    "SDK put on its default httpx client": SDKDefaultClientUploader,
}


# ---- agentex's queue defaults ------------------------------------------------------------------
def agentex_queue(batches: Sequence[list[dict[str, Any]]], base_url: str) -> Timing:
    """``upsert_batch`` of batches of 200, 3 in flight, on the SDK's default async client."""

    async def run() -> Timing:
        async with scale_gp_beta.AsyncSGPClient(
            api_key=API_KEY, account_id=ACCOUNT_ID, base_url=base_url
        ) as client:
            queue = iter(batches)
            watch = _Stopwatch()

            async def worker() -> None:
                for batch in queue:
                    await client.spans.upsert_batch(items=batch)  # type: ignore[arg-type]

            await asyncio.gather(*(worker() for _ in range(AGENTEX_IN_FLIGHT)))
            return watch.stop()

    return asyncio.run(run())


# ---- a sender with adaptive or fixed concurrency ----------------------------------------------
@dataclass
class Sent:
    timing: Timing
    requests: int


async def _send_all(
    bodies: Sequence[bytes],
    uploader: Uploader,
    limit: Callable[[], int],
    record: Callable[[float, Signal], None],
) -> Sent:
    """Every body delivered, at most ``limit()`` requests in flight; a refused batch waits the
    shipper's default backoff (0.4 s doubling, up to 20 s, jitter) off the slots, then again."""
    rng = random.Random(1)
    ready: collections.deque[tuple[int, int]] = collections.deque(
        (i, 0) for i in range(len(bodies))
    )
    in_flight: dict[asyncio.Task[None], tuple[int, int, float]] = {}
    waiting: set[asyncio.Task[None]] = set()
    requests = 0
    watch = _Stopwatch()

    async def later(index: int, attempt: int) -> None:
        await asyncio.sleep(min(20.0, 0.4 * 2 ** (attempt - 1)) + rng.uniform(0, 0.4))
        ready.append((index, attempt))

    while ready or in_flight or waiting:
        while ready and len(in_flight) < limit():
            index, attempt = ready.popleft()
            task = asyncio.ensure_future(uploader.upload(bodies[index]))
            in_flight[task] = (index, attempt, time.monotonic())
            requests += 1
        pending = set(in_flight) | waiting
        done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task in waiting:
                waiting.discard(task)
                continue
            index, attempt, sent_at = in_flight.pop(task)
            rtt = time.monotonic() - sent_at
            failure = task.exception()
            if failure is None:
                record(rtt, Signal.OK)
            else:
                refused = isinstance(failure, scale_gp_beta.RateLimitError)
                if not refused:
                    raise failure
                record(rtt, Signal.BACKPRESSURE)
                waiting.add(asyncio.ensure_future(later(index, attempt + 1)))
    return Sent(watch.stop(), requests)


def send_all(bodies: Sequence[bytes], base_url: str, adaptive: bool) -> Sent:
    config = config_for(base_url)

    async def run() -> Sent:
        uploader = SGPUploader(config)
        try:
            if adaptive:
                aimd = AdaptiveConcurrency(FIXED)
                return await _send_all(bodies, uploader, lambda: aimd.limit, aimd.record)
            return await _send_all(bodies, uploader, lambda: FIXED, lambda _rtt, _signal: None)
        finally:
            await uploader.aclose()

    return asyncio.run(run())


# ---- the steady agent ---------------------------------------------------------------------------
def _get(server: Endpoint, path: str) -> Any:
    with urllib.request.urlopen(f"{server.url}{path}", timeout=30) as answer:
        return json.load(answer)


def _reset(server: Endpoint) -> None:
    request = urllib.request.Request(f"{server.url}/_fake/reset", method="POST", data=b"")
    with urllib.request.urlopen(request, timeout=10):
        pass


@dataclass
class Steady:
    spans: int
    items: int
    long_visible_after: float | None  # seconds from the long span's start to its start arriving
    long_complete: bool


def _visible(url: str, span_id: str, within: float) -> float | None:
    """Seconds until the endpoint holds ``span_id`` (in progress or complete), None if not
    within ``within``. Runs in a thread: the agent's loop goes on."""
    started = time.monotonic()
    while time.monotonic() - started < within:
        with urllib.request.urlopen(f"{url}/_fake/spans", timeout=30) as answer:
            if any(item.get("id") == span_id for item in json.load(answer)):
                return time.monotonic() - started
        time.sleep(0.2)  # a poll of the endpoint's records, not a synchronisation
    return None


async def _steady_agent(
    path: Path, url: str, seconds: float, tasks: int
) -> tuple[int, str, float | None]:
    processor = SpoolProcessor(path, ship=config_for(url))
    rng = random.Random(3)
    made = 0

    def span(name: str) -> AgentSpan:
        return AgentSpan(
            id=str(uuid.uuid4()),
            name=name,
            trace_id=str(uuid.uuid4()),
            start_time=datetime.now(UTC),
            input={"messages": [{"role": "user", "content": "why is the sky blue? " * 20}]},
            data={"__span_type__": "COMPLETION", "model": "m-1"},
        )

    async def agent_task() -> None:
        nonlocal made
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            item = span("llm.completion")
            await processor.on_span_start(item)
            # The agent's own work (an LLM call, a tool): simulated, not synchronisation.
            took = rng.uniform(0.1, 3.0)
            await asyncio.sleep(took)
            item.end_time = item.start_time + timedelta(seconds=took)
            item.output = {"content": "because of Rayleigh scattering"}
            await processor.on_span_end(item)
            made += 1

    async def long_task() -> tuple[str, float | None]:
        item = span("agent.turn")
        await processor.on_span_start(item)
        watch = asyncio.ensure_future(asyncio.to_thread(_visible, url, item.id, LONG_SPAN))
        await asyncio.sleep(LONG_SPAN)
        item.end_time = item.start_time + timedelta(seconds=LONG_SPAN)
        await processor.on_span_end(item)
        return item.id, await watch

    try:
        long = asyncio.ensure_future(long_task())
        await asyncio.gather(*(agent_task() for _ in range(tasks)))
        long_id, visible = await long
    finally:
        await processor.shutdown(timeout=60.0)
    return made + 1, long_id, visible


def steady_agent(workdir: Path, server: Endpoint, seconds: float, tasks: int) -> Steady:
    _reset(server)
    path = workdir / f"steady-{time.monotonic_ns()}.db"
    spans, long_id, visible = asyncio.run(_steady_agent(path, server.url, seconds, tasks))
    stats = _get(server, "/_fake/stats")
    complete = any(
        item.get("id") == long_id and item.get("end_timestamp")
        for item in _get(server, "/_fake/spans")
    )
    return Steady(spans, int(stats["items_accepted"]), visible, complete)


# ---- running and reporting ----------------------------------------------------------------------
def _rate(events: int, timing: Timing) -> float:
    return events / timing.elapsed


def _say(quiet: bool, text: str) -> None:
    if not quiet:
        print(text, file=sys.stderr)


def throughput(args: argparse.Namespace, events: int, repeats: int, workdir: Path) -> list[str]:
    lines = []
    template = workdir / "backlog.db"
    spool_backlog(SpoolConfig(path=template), events)
    payloads = _stored_payloads(template)
    params = [json.loads(p) for p in payloads]
    agentex_batches = [params[i : i + AGENTEX_BATCH] for i in range(0, events, AGENTEX_BATCH)]
    rows: dict[str, list[float]] = collections.defaultdict(list)
    with endpoint(*LATENCY) as far, endpoint() as near:
        for r in range(repeats):
            _say(args.quiet, f"  throughput repeat {r + 1}/{repeats}")
            rows["agentex queue (upsert_batch, 200 x 3), 150 ms"].append(
                _rate(events, agentex_queue(agentex_batches, far.url))
            )
            for where, server in (("150 ms", far), ("loopback", near)):
                for name, make in UPLOADERS.items():
                    config = config_for(server.url)
                    timing = spool_ship(
                        template, workdir, server.url, events, config=config, uploader=make
                    )
                    rows[f"spool-ship defaults, {name}, {where}"].append(_rate(events, timing))
                    _say(args.quiet, f"    {name}, {where}: {_rate(events, timing):,.0f}/s")
    baseline = rows["agentex queue (upsert_batch, 200 x 3), 150 ms"]
    lines.append(f"  throughput, {events:,} END events, events/s (median of {repeats}, min - max)")
    for name, measured in rows.items():
        lines.append(
            f"    {name:<62} {statistics.median(measured):>8,.0f}  "
            f"{min(measured):>8,.0f} - {max(measured):>8,.0f}"
        )
    ours = rows[f"spool-ship defaults, {next(iter(UPLOADERS))}, 150 ms"]
    ratios = [a / b for a, b in zip(ours, baseline, strict=True)]
    lines.append(
        f"    spool-ship defaults / agentex queue at 150 ms: {statistics.median(ratios):.2f}x "
        f"({min(ratios):.2f} - {max(ratios):.2f})  goal >= 2x: "
        f"{'met' if statistics.median(ratios) >= 2 else 'MISSED'}"
    )
    for where in ("150 ms", "loopback"):
        own = rows[f"spool-ship defaults, {next(iter(UPLOADERS))}, {where}"]
        for name in list(UPLOADERS)[1:]:
            other = rows[f"spool-ship defaults, {name}, {where}"]
            against = [a / b for a, b in zip(own, other, strict=True)]
            lines.append(
                f"    SGPUploader / {name}, {where}: {statistics.median(against):.2f}x "
                f"({min(against):.2f} - {max(against):.2f})"
            )
    return lines


def storm(args: argparse.Namespace, events: int, repeats: int, workdir: Path) -> list[str]:
    template = workdir / "storm.db"
    spool_backlog(SpoolConfig(path=template), events)
    payloads = _stored_payloads(template)
    bodies = [batch_body(payloads[i : i + BATCH]) for i in range(0, events, BATCH)]
    capacity = ("--capacity", str(STORM_CAPACITY))
    per_event: dict[str, list[float]] = collections.defaultdict(list)
    rates: dict[str, list[float]] = collections.defaultdict(list)
    with endpoint(*LATENCY, *capacity) as server:
        for r in range(repeats):
            _say(args.quiet, f"  storm repeat {r + 1}/{repeats}")
            for name, adaptive in (("fixed 32 in flight", False), ("adaptive, at most 32", True)):
                before = _get(server, "/_fake/stats")["requests"]
                sent = send_all(bodies, server.url, adaptive)
                requests = _get(server, "/_fake/stats")["requests"] - before
                assert requests == sent.requests
                per_event[name].append(requests / events)
                rates[name].append(_rate(events, sent.timing))
            before = _get(server, "/_fake/stats")["requests"]
            timing = spool_ship(template, workdir, server.url, events)
            requests = _get(server, "/_fake/stats")["requests"] - before
            per_event["spool-ship Shipper.drain(), defaults"].append(requests / events)
            rates["spool-ship Shipper.drain(), defaults"].append(_rate(events, timing))
    lines = [
        f"  storm: {events:,} events, endpoint serves {STORM_CAPACITY} at a time, 429 beyond; "
        "requests per delivered event (ideal 0.02), events/s"
    ]
    for name, values in per_event.items():
        lines.append(
            f"    {name:<40} {statistics.median(values):6.3f}  "
            f"({min(values):.3f} - {max(values):.3f})"
            f"   {statistics.median(rates[name]):>7,.0f}/s"
        )
    ratio = statistics.median(per_event["adaptive, at most 32"]) / statistics.median(
        per_event["fixed 32 in flight"]
    )
    lines.append(
        f"    adaptive / fixed requests per event: {ratio:.2f}x  goal < 1: "
        f"{'met' if ratio < 1 else 'MISSED'}"
    )
    return lines


def steady(args: argparse.Namespace, seconds: float, tasks: int, workdir: Path) -> list[str]:
    with endpoint(*LATENCY, record=True) as server:
        result = steady_agent(workdir, server, seconds, tasks)
    per_span = result.items / result.spans
    visible = result.long_visible_after
    return [
        f"  steady agent, in-process shipping: {tasks} agent tasks, spans of 0.1 to 3 s for "
        f"{seconds:.0f} s, plus one of {LONG_SPAN:.0f} s",
        f"    {result.spans:,} spans, {result.items:,} items delivered: {per_span:.3f} per span"
        f"  goal <= 1.1: {'met' if per_span <= 1.1 else 'MISSED'}",
        f"    the {LONG_SPAN:.0f} s span in progress at the endpoint "
        + (f"{visible:.1f} s after it started" if visible is not None else "never before its end")
        + f", complete after its end: {result.long_complete}  goal: "
        + ("met" if visible is not None and result.long_complete else "MISSED"),
    ]


def run_latency(args: argparse.Namespace, machine: str) -> int:
    quick: bool = args.quick
    repeats = 1 if quick else args.repeats
    events = 6_000 if quick else 20_000
    with tempfile.TemporaryDirectory(prefix="ship-latency-", dir=args.dir) as tmp:
        workdir = Path(tmp)
        lines = [
            f"ship benchmark, latency mode, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
            f"  machine:  {machine}",
            f"  endpoint: python -m shipper.testing, its own process, lognormal latency "
            f"p50 {P50 * 1000:.0f} ms, p95 {P95 * 1000:.0f} ms",
            "",
        ]
        lines += throughput(args, events, repeats, workdir)
        lines.append("")
        lines += storm(args, events // 2, repeats, workdir)
        lines.append("")
        lines += steady(args, 10.0 if quick else 25.0, 40, workdir)
    print("\n".join(lines))
    return 0
