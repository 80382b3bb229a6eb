"""What ``run`` does beside shipping: the heartbeat line, the summary of what it left behind on
stop, and the metrics server's collector and probes."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry

from shipper import Shipper
from shipper.metrics import COUNTER_DELIVERED, COUNTER_RETRIES, REQUESTS_PREFIX
from spool import (
    Damage,
    MetaKey,
    SpoolError,
    SpoolStats,
    check_damage,
    limit_from_meta,
    open_readonly,
    ops,
)

from ._metrics import FactsCollector
from ._render import status_dict
from ._serve import MetricsServer

__all__ = [
    "READY_CHECK_BUDGET",
    "heartbeat",
    "heartbeat_line",
    "log_left_behind",
    "stall_limit",
    "start_metrics_server",
]

log = logging.getLogger("spool_ship.cli")

# /readyz's damage check: at most this long per probe (a larger spool is "unchecked", ready).
READY_CHECK_BUDGET = 0.25


def heartbeat_line(
    snapshot: SpoolStats,
    used: int,
    totals: Mapping[str, int],
    before: Mapping[str, int],
    seconds: float,
) -> str:
    """``heartbeat pending=... delivered=... delivered_per_s=...``: the spool's counts, and
    what this shipper did since the last heartbeat, as rates."""

    def rate(name: str) -> float:
        return (totals.get(name, 0) - before.get(name, 0)) / seconds if seconds > 0 else 0.0

    requests = sum(n for k, n in totals.items() if k.startswith(REQUESTS_PREFIX))
    requests_before = sum(n for k, n in before.items() if k.startswith(REQUESTS_PREFIX))
    failed = sum(
        n for k, n in totals.items() if k.startswith(REQUESTS_PREFIX) and not k.endswith(":200")
    )
    limit = limit_from_meta(snapshot.meta)
    return (
        f"heartbeat pending={snapshot.pending} leased={snapshot.leased} dead={snapshot.dead} "
        f"delivered={totals.get(COUNTER_DELIVERED, 0)} "
        f"delivered_per_s={rate(COUNTER_DELIVERED):.1f} requests={requests} "
        f"requests_per_s={(requests - requests_before) / seconds if seconds > 0 else 0.0:.2f} "
        f"failed_requests={failed} retries={totals.get(COUNTER_RETRIES, 0)} "
        f"dropped={snapshot.dropped_total} fill_pct={100 * used / limit:.1f} "
        f"credentials_refused={'yes' if snapshot.meta.get(MetaKey.BLOCKED.value) else 'no'}"
    )


async def heartbeat(
    shipper: Shipper, every: float, clock: Callable[[], float] = time.monotonic
) -> None:
    """Log :func:`heartbeat_line` every ``every`` seconds until cancelled."""
    before = dict(shipper.metrics.totals)
    at = clock()
    while True:
        await asyncio.sleep(every)
        try:
            snapshot, _, used = await shipper.spool.run(ops.status_report(), write=False)
        except SpoolError as exc:
            log.warning("heartbeat: cannot read the spool: %s", exc)
            continue
        now, totals = clock(), dict(shipper.metrics.totals)
        log.info("%s", heartbeat_line(snapshot, used, totals, before, now - at))
        before, at = totals, now


async def log_left_behind(shipper: Shipper) -> None:
    """One line on stop: what stays in the spool for the next shipper, and what this one did."""
    try:
        snapshot = await shipper.spool.stats()
    except SpoolError as exc:
        log.warning("stopped; cannot read what is left in the spool: %s", exc)
        return
    oldest = snapshot.oldest_pending_at
    age = f"{max(time.time() - oldest, 0):.0f}s" if oldest is not None else "none"
    log.info(
        "stopped left_pending=%d left_leased=%d left_dead=%d oldest_pending_age=%s "
        "delivered=%d dead_lettered=%d requests=%d",
        snapshot.pending, snapshot.leased, snapshot.dead, age,
        shipper.shipped, shipper.dead_lettered, shipper.requests,
    )  # fmt: skip


def stall_limit(shipper: Shipper) -> float:
    """How long the loop may go without progress before /healthz fails: longer than the
    longest wait it can be in for a good reason (a capped Retry-After, then a request)."""
    config = shipper.config
    return max(60.0, config.retry_after_cap + config.request_timeout + 30.0)


def start_metrics_server(
    addr: tuple[str, int], shipper: Shipper, running: Callable[[], bool]
) -> MetricsServer:
    """Serve /metrics, /healthz and /readyz for ``shipper`` on ``addr``; ``running()`` says
    whether its ship loop still runs."""
    config = shipper.spool_config
    stall = stall_limit(shipper)

    def read_counters() -> dict[str, int]:
        with open_readonly(config) as opened:
            return opened.run(ops.status_report(), write=False)[1]

    # This shipper's counts, on top of the spool's when it started: a counter that never goes
    # down while the process lives (another shipper's counts show in ``status``).
    baseline = read_counters()
    own = (COUNTER_DELIVERED, COUNTER_RETRIES)

    def facts() -> dict[str, Any]:
        with open_readonly(config) as opened:
            snapshot, counters, used = opened.run(ops.status_report(), write=False)
            snapshot = opened.with_sizes(snapshot)
        for name in [k for k in counters if k in own or k.startswith(REQUESTS_PREFIX)]:
            del counters[name]
        for name, n in baseline.items():
            if name in own or name.startswith(REQUESTS_PREFIX):
                counters[name] = n
        for name, n in shipper.metrics.totals.copy().items():
            counters[name] = counters.get(name, 0) + n
        return status_dict(snapshot, config.path, time.time(), counters, used)

    def health() -> tuple[bool, str]:
        if not running():
            return False, "the ship loop is not running"
        quiet = time.monotonic() - shipper.metrics.last_progress
        if quiet > stall:
            return False, f"the ship loop made no progress for {quiet:.0f}s (limit {stall:.0f}s)"
        return True, f"the ship loop is running (last progress {quiet:.1f}s ago)"

    def ready() -> tuple[bool, str]:
        try:
            with open_readonly(config) as opened:
                check = check_damage(opened, READY_CHECK_BUDGET)
        except SpoolError as exc:
            return False, str(exc)
        if check.verdict is Damage.DAMAGED:
            return False, str(check.error(config.path))
        return True, f"the spool opens (damage check: {check.verdict.value})"

    registry = CollectorRegistry(auto_describe=False)
    registry.register(FactsCollector(facts))
    server = MetricsServer(addr, registry, health, ready).start()
    log.info("metrics listening on http://%s:%d (/metrics /healthz /readyz)", addr[0], server.port)
    return server
