"""The span the crash children spool: shared by crash_async.py and crash_sync.py."""

from __future__ import annotations

__all__ = ["span"]


def span(span_id: str, run: str, ended: bool) -> dict[str, object]:
    param: dict[str, object] = {
        "id": span_id,
        "trace_id": f"trace-{run}",
        "name": "crash test",
        "start_timestamp": "2025-01-01T00:00:00+00:00",
        "metadata": {"padding": "x" * 200},
    }
    if ended:
        param["end_timestamp"] = "2025-01-01T00:00:01+00:00"
    return param
