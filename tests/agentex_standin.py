"""An agentex-shaped ``Span`` for the generic processor tests that run without agentex (Python
3.11): :class:`Span` has the fields of ``agentex.types.span.Span`` (a pydantic model there too).

Everything else about agentex is tested against the real agentex-sdk in ``make test``'s Python
3.12 environment (tests/test_agentex_*.py), which also checks that these fields are still
agentex's (tests/test_embedded_agentex.py).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

__all__ = ["Span", "new_span"]


class Span(BaseModel):
    """The fields of ``agentex.types.span.Span``."""

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


def new_span(span_id: str, trace_id: str, name: str = "step", **fields: Any) -> Span:
    """A started span (``start_time`` now, unless given), as agentex builds one."""
    fields.setdefault("start_time", datetime.now(UTC))
    return Span(id=span_id, trace_id=trace_id, name=name, **fields)
