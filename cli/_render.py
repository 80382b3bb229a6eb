"""Turning spool values into what an operator reads: JSON objects, tables, Prometheus text,
human times and sizes, and files written whole or not at all."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from spool import EventRecord, MetaKey, SpoolStats

__all__ = [
    "decode_payload",
    "human_age",
    "human_bytes",
    "human_time",
    "pairs",
    "prometheus_text",
    "record_dict",
    "status_dict",
    "when",
    "write_atomic",
]


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def human_age(seconds: float) -> str:
    """``7260`` -> ``2h 1m``: the largest unit and the next one, when it is not zero."""
    s = max(int(seconds), 0)
    units = (("d", 86_400), ("h", 3600), ("m", 60), ("s", 1))
    for i, (unit, size) in enumerate(units):
        if s >= size or unit == "s":
            out = f"{s // size}{unit}"
            if i + 1 < len(units):
                next_unit, next_size = units[i + 1]
                if rest := (s % size) // next_size:
                    out += f" {rest}{next_unit}"
            return out
    raise AssertionError("unreachable")  # pragma: no cover


def pairs(rows: Sequence[tuple[str, str]]) -> str:
    """Aligned ``name  value`` lines: plain text, so span data is never read as markup."""
    width = max((len(name) for name, _ in rows), default=0)
    return "".join(f"{name:<{width}}  {value}\n" for name, value in rows)


def human_time(ts: float) -> str:
    """UTC, to the second: ``2024-05-01 12:00:00Z``."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def when(ts: float | None, now: float, *, none: str = "-") -> str:
    """A time and how far it is from now: ``2024-05-01 12:00:00Z (2h 1m ago)``."""
    if ts is None:
        return none
    delta = now - ts
    rel = f"{human_age(delta)} ago" if delta >= 0 else f"in {human_age(-delta)}"
    return f"{human_time(ts)} ({rel})"


def _meta_time(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None


def status_dict(stats: SpoolStats, path: Path, now: float) -> dict[str, Any]:
    """``status --json``: the documented integer keys first, then the details."""
    meta = stats.meta
    last_success_at = _meta_time(meta.get(MetaKey.LAST_SUCCESS_AT.value))
    oldest = stats.oldest_pending_at
    return {
        "pending": stats.pending,
        "leased": stats.leased,
        "done": stats.done,
        "dead": stats.dead,
        "dropped": stats.dropped_total,
        "refused": stats.refused_total,
        "superseded": stats.superseded,
        "dropped_by_reason": dict(stats.dropped),
        "refused_by_reason": dict(stats.refused),
        "oldest_pending_at": oldest,
        "oldest_pending_age_s": None if oldest is None else round(max(now - oldest, 0.0), 3),
        "file_bytes": stats.file_bytes,
        "wal_bytes": stats.wal_bytes,
        "total_bytes": stats.file_bytes + stats.wal_bytes,
        "last_error": meta.get(MetaKey.LAST_ERROR.value),
        "last_error_at": _meta_time(meta.get(MetaKey.LAST_ERROR_AT.value)),
        "blocked": MetaKey.BLOCKED.value in meta,
        "blocked_reason": meta.get(MetaKey.BLOCKED.value),
        "last_success_at": last_success_at,
        "last_success_age_s": (
            None if last_success_at is None else round(max(now - last_success_at, 0.0), 3)
        ),
        "path": str(path),
        "generated_at": now,
    }


def decode_payload(payload: bytes) -> Any:
    """The span JSON as an object; a payload that is not JSON comes back as text."""
    try:
        return json.loads(payload)
    except ValueError:
        return payload.decode("utf-8", errors="replace")


def record_dict(record: EventRecord, *, payload: bool = False) -> dict[str, Any]:
    """One event as ``stuck --json`` and ``export`` write it."""
    out: dict[str, Any] = {
        "seq": record.seq,
        "span_id": record.span_id,
        "trace_id": record.trace_id,
        "kind": record.kind.value,
        "state": record.state.value,
        "attempts": record.attempts,
        "last_error": record.last_error,
        "enqueued_at": record.enqueued_at,
        "next_attempt_at": record.next_attempt_at,
        "lease_owner": record.lease_owner,
        "lease_expires_at": record.lease_expires_at,
        "done_at": record.done_at,
        "outcome": record.outcome.value if record.outcome is not None else None,
    }
    if payload:
        out["payload"] = decode_payload(record.payload)
    return out


# ---- Prometheus text exposition (node_exporter's textfile collector) ------------------------


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def prometheus_text(status: Mapping[str, Any]) -> str:
    """``status`` (from :func:`status_dict`) as metrics. Families without samples are left
    out; timestamps of things that never happened too."""
    families: list[tuple[str, str, str, list[tuple[dict[str, str], float]]]] = [
        (
            "spool_ship_events",
            "gauge",
            "Span events in the spool, by state.",
            [({"state": s}, status[s]) for s in ("pending", "leased", "done", "dead")],
        ),
        (
            "spool_ship_superseded_total",
            "counter",
            "Start events not sent because their span's end carries the whole span.",
            [({}, status["superseded"])],
        ),
        (
            "spool_ship_dropped_total",
            "counter",
            "Valid span events that were not spooled (spool full or broken), by reason.",
            [({"reason": r}, n) for r, n in status["dropped_by_reason"].items()],
        ),
        (
            "spool_ship_refused_total",
            "counter",
            "Invalid span events that were not spooled, by reason.",
            [({"reason": r}, n) for r, n in status["refused_by_reason"].items()],
        ),
        (
            "spool_ship_oldest_pending_age_seconds",
            "gauge",
            "Age of the oldest pending or leased event; 0 when there is none.",
            [({}, status["oldest_pending_age_s"] or 0)],
        ),
        (
            "spool_ship_size_bytes",
            "gauge",
            "Bytes on disk: the spool file and its write-ahead log.",
            [({"file": "db"}, status["file_bytes"]), ({"file": "wal"}, status["wal_bytes"])],
        ),
        (
            "spool_ship_blocked",
            "gauge",
            "1 while shipping is paused because the endpoint refused the credentials.",
            [({}, 1 if status["blocked"] else 0)],
        ),
        (
            "spool_ship_last_success_timestamp_seconds",
            "gauge",
            "Unix time of the last batch the endpoint accepted.",
            [({}, status["last_success_at"])] if status["last_success_at"] is not None else [],
        ),
        (
            "spool_ship_last_error_timestamp_seconds",
            "gauge",
            "Unix time of the last shipping error.",
            [({}, status["last_error_at"])] if status["last_error_at"] is not None else [],
        ),
        (
            "spool_ship_info",
            "gauge",
            "The spool these metrics describe.",
            [({"path": status["path"]}, 1)],
        ),
    ]
    lines = []
    for name, kind, help_text, samples in families:
        if not samples:
            continue
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        for labels, value in samples:
            rendered = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
            lines.append(
                f"{name}{{{rendered}}} {_number(value)}" if rendered else f"{name} {_number(value)}"
            )
    return "\n".join(lines) + "\n"


# ---- files ---------------------------------------------------------------------------------


def write_atomic(path: Path, chunks: Iterable[str], mode: int) -> None:
    """Write ``chunks`` to a temporary file beside ``path``, then rename it over ``path``:
    a reader (the textfile collector, a log shipper) sees the old file or the new one, never
    half of one. The temporary name does not end in ``.prom``, so the collector skips it."""
    directory = path.parent
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
