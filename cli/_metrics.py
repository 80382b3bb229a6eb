"""The spool's facts (``status --json``) as Prometheus metric families, with prometheus_client:
for ``status --format prometheus`` (a textfile collector's file) and ``run --metrics-addr``.

Every counter family is there from the first scrape, at 0 for the reasons and answers that
have not happened yet, so ``increase(...[15m]) > 0`` fires on the first burst.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

__all__ = [
    "DROP_REASONS",
    "REFUSE_REASONS",
    "REQUEST_CODES",
    "FactsCollector",
    "families",
    "prometheus_text",
]

# Reasons and answers that get a sample at 0 before they first happen (others appear when
# they do). The drop reasons are the spool writer's; the refusals the mapping's checks.
DROP_REASONS = (
    "spool_full", "evicted", "disk_full", "spool_corrupt", "spool_locked", "spool_error",
)  # fmt: skip
REFUSE_REASONS = ("too_large", "invalid_timestamp", "missing_name", "redact_failed")
REQUEST_CODES = ("200", "error")


def _seeded(seen: Mapping[str, int], seeds: tuple[str, ...]) -> dict[str, int]:
    return {name: 0 for name in seeds} | dict(seen)


def families(facts: Mapping[str, Any]) -> Iterator[Any]:
    """The metric families for ``facts`` (from :func:`cli._render.status_dict`)."""
    events = GaugeMetricFamily(
        "spool_ship_events", "Span events in the spool, by state.", labels=["state"]
    )
    for state in ("pending", "leased", "done", "dead"):
        events.add_metric([state], facts[state])
    yield events
    yield CounterMetricFamily(
        "spool_ship_delivered",
        "Span events the endpoint accepted.",
        value=facts["delivered"],
    )
    yield CounterMetricFamily(
        "spool_ship_retries",
        "Batches put back to wait for another attempt after a failed one.",
        value=facts["retries"],
    )
    for name, label, key, help_text, seeds in (
        (
            "spool_ship_requests",
            "code",
            "requests_by_code",
            "Upload requests by HTTP status ('error': no response).",
            REQUEST_CODES,
        ),
        (
            "spool_ship_dropped",
            "reason",
            "dropped_by_reason",
            "Valid span events that were not spooled (spool full or broken), by reason.",
            DROP_REASONS,
        ),
        (
            "spool_ship_refused",
            "reason",
            "refused_by_reason",
            "Invalid span events that were not spooled, by reason.",
            REFUSE_REASONS,
        ),
    ):
        family = CounterMetricFamily(name, help_text, labels=[label])
        for value, n in _seeded(facts[key], seeds).items():
            family.add_metric([value], n)
        yield family
    yield CounterMetricFamily(
        "spool_ship_superseded",
        "Start events not sent because their span's end carries the whole span.",
        value=facts["superseded"],
    )
    yield GaugeMetricFamily(
        "spool_ship_max_bytes", "The spool's size limit.", value=facts["max_bytes"]
    )
    if facts["used_bytes"] is not None:
        yield GaugeMetricFamily(
            "spool_ship_used_bytes",
            "Bytes the spool's rows take: what the size limit is measured against.",
            value=facts["used_bytes"],
        )
    size = GaugeMetricFamily(
        "spool_ship_size_bytes",
        "Bytes on disk: the spool file and its write-ahead log.",
        labels=["file"],
    )
    size.add_metric(["db"], facts["file_bytes"])
    size.add_metric(["wal"], facts["wal_bytes"])
    yield size
    yield GaugeMetricFamily(
        "spool_ship_oldest_pending_age_seconds",
        "Age of the oldest pending or leased event; 0 when there is none.",
        value=facts["oldest_pending_age_s"] or 0,
    )
    yield GaugeMetricFamily(
        "spool_ship_blocked",
        "1 while shipping is paused because the endpoint refused the credentials.",
        value=1 if facts["blocked"] else 0,
    )
    for name, key, help_text in (
        (
            "spool_ship_last_success_timestamp_seconds",
            "last_success_at",
            "Unix time of the last batch the endpoint accepted.",
        ),
        (
            "spool_ship_last_error_timestamp_seconds",
            "last_error_at",
            "Unix time of the last answer that was not a success.",
        ),
    ):
        if facts[key] is not None:
            yield GaugeMetricFamily(name, help_text, value=facts[key])
    info = InfoMetricFamily("spool_ship", "The spool these metrics describe.")
    info.add_metric([], {"path": str(facts["path"])})
    yield info


class FactsCollector(Collector):
    """A collector that reads fresh facts at every scrape."""

    def __init__(self, read: Callable[[], Mapping[str, Any]]) -> None:
        self._read = read

    def collect(self) -> Iterator[Any]:
        yield from families(self._read())


def prometheus_text(facts: Mapping[str, Any]) -> str:
    """``facts`` in the Prometheus text exposition format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FactsCollector(lambda: facts))
    return generate_latest(registry).decode("utf-8")
