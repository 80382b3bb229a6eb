"""Turning spool values into what an operator reads: JSON objects, tables, Prometheus text,
human times and sizes, and files written whole or not at all."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from spool import Counter, DamageCheck, EventRecord, MetaKey, SpoolStats, limit_from_meta
from spool._text import printable as clean

__all__ = [
    "ago",
    "clean",
    "decode_payload",
    "export_line",
    "human_age",
    "human_bytes",
    "human_time",
    "pairs",
    "record_dict",
    "since",
    "status_dict",
    "waiting_dict",
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
    """Aligned ``name  value`` lines: plain text, so span data is never read as markup, and
    :func:`clean`, so it is never obeyed as a terminal control sequence either."""
    width = max((len(name) for name, _ in rows), default=0)
    return "".join(f"{name:<{width}}  {clean(value)}\n" for name, value in rows)


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


def ago(ts: float, now: float) -> str:
    """How long ago ``ts`` was: ``2h 1m ago``. A time that has passed by its nature (an event
    spooled, a success) but lies ahead of ``now`` was written before the wall clock stepped
    back, and is said so rather than read as a time to come."""
    if ts > now:
        return f"{human_age(ts - now)} ahead of this clock: it stepped back"
    return f"{human_age(now - ts)} ago"


def since(ts: float | None, now: float, *, none: str = "-") -> str:
    """:func:`when` for a time that has passed (see :func:`ago`)."""
    return none if ts is None else f"{human_time(ts)} ({ago(ts, now)})"


def waiting_dict(waiting: tuple[int, float | None, int, int], now: float) -> dict[str, Any]:
    """``status --json``'s view of :func:`spool.ops.waiting`: pending events due now, when a
    shipper next takes one (``now`` while some are due, ``None`` with nothing pending), and
    the pending and leased events beyond the horizon (the clock stepped back)."""
    due, next_at, pending_beyond, leased_beyond = waiting
    return {
        "due_now": due,
        "next_attempt_at": now if due else next_at,
        "beyond_horizon": {"pending": pending_beyond, "leased": leased_beyond},
    }


def _meta_time(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None


def status_dict(
    stats: SpoolStats,
    path: Path,
    now: float,
    counters: Mapping[str, int] | None = None,
    used_bytes: int | None = None,
    check: DamageCheck | None = None,
) -> dict[str, Any]:
    """``status --json``: the documented integer keys first, then the details. ``counters``
    (every counter in the spool) adds the shipper's deliveries, requests and retries;
    ``used_bytes`` the fill against the limit; ``check`` the damage check's verdict."""
    meta = stats.meta
    counters = counters or {}
    max_bytes = limit_from_meta(meta)
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
        "used_bytes": used_bytes,
        "max_bytes": max_bytes,
        "fill": None if used_bytes is None else round(used_bytes / max_bytes, 4),
        "delivered": counters.get(Counter.DELIVERED, 0),
        "requests_by_code": {
            k.removeprefix("requests:"): v
            for k, v in sorted(counters.items())
            if k.startswith("requests:")
        },
        "retries": counters.get(Counter.RETRIES, 0),
        "integrity": None if check is None else check.verdict.value,
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


def export_line(record: EventRecord) -> str:
    """One ``export`` line. The payload is written as the very bytes the spool holds (a JSON
    object, embedded as it is, last), so ``import`` can bring it back byte for byte."""
    head = json.dumps(record_dict(record), ensure_ascii=False)
    raw = record.payload
    if b"\n" not in raw and b"\r" not in raw:
        try:
            text = raw.decode("utf-8")
            if isinstance(json.loads(text), dict):
                return f'{head[:-1]}, "payload": {text}}}\n'
        except ValueError:
            pass
    body = json.dumps(decode_payload(raw), ensure_ascii=False)
    return f'{head[:-1]}, "payload": {body}}}\n'


# ---- files ---------------------------------------------------------------------------------


def write_atomic(path: Path, chunks: Iterable[str], mode: int) -> None:
    """Write ``chunks`` to a temporary file beside ``path``, then rename it over ``path``:
    a reader (the textfile collector, a log shipper) sees the old file or the new one, never
    half of one. The temporary name does not end in ``.prom``, so the collector skips it."""
    directory = path.parent
    import tempfile  # only when writing a file: not for every status

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
