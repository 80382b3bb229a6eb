"""Bad input end to end, through ``SpoolProcessor(path, ship=...)``: the agent's calls return
normally; invalid events are refused and counted (``spool-ship status --json`` shows them by
reason); data JSON cannot hold is converted and shipped; every valid span of the same run is
delivered."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Any

from agentex_standin import Span, new_span
from conftest import status_json

from shipper import ShipperConfig
from shipper.testing import FakeSpanServer
from spool import SpoolProcessor

T0 = datetime(2025, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)
TRACE = "trace-bad-input"


class Opaque:
    def __repr__(self) -> str:
        return "<Opaque handle>"


class Color(Enum):
    RED = "red"


@dataclass
class Point:
    x: int
    y: int


def cyclic() -> dict[str, Any]:
    loop: dict[str, Any] = {"name": "loop"}
    loop["self"] = loop
    return loop


def good(n: int, **fields: Any) -> Span:
    return new_span(f"good-{n}", TRACE, f"good {n}", start_time=T0, **fields)


def bad_spans() -> dict[str, Span]:
    """Spans the endpoint would refuse (by the reason the spool counts them under)."""
    return {
        "too_large": new_span(
            "huge", TRACE, "huge", start_time=T0, input={"blob": "x" * 5_000_000}
        ),
        "id_too_long": new_span("i" * 300, TRACE, "long id", start_time=T0),
        "nul_in_id": new_span("nul", "trace\x00nul", "nul", start_time=T0),
    }


def run_agent(processor: SpoolProcessor, spans: list[Span], backwards: Span) -> int:
    """Start and end each span as an agent would (``backwards`` ends before it starts);
    how many calls returned normally."""

    async def agent() -> int:
        returned = 0
        for span in [*spans, backwards]:
            await processor.on_span_start(span)
            returned += 1
        for span in spans:
            span.end_time = span.start_time + timedelta(seconds=1)
            await processor.on_span_end(span)
            returned += 1
        backwards.end_time = backwards.start_time - timedelta(seconds=1)
        await processor.on_span_end(backwards)
        await processor.shutdown(timeout=15)
        return returned + 1

    return asyncio.run(agent())


def test_bad_input_is_refused_or_converted_and_valid_spans_still_ship(
    tmp_path: Path,
    span_server: FakeSpanServer,
    ship_config: ShipperConfig,
    ship_env: dict[str, str],
) -> None:
    path = tmp_path / "bad.db"
    unserializable = good(
        1,
        data={
            "object": Opaque(),
            "set": {3, 1, 2},
            "frozenset": frozenset({"b", "a"}),
            "text_bytes": b"raw text",
            "binary": b"\xff\x00\xfe",
            "when": datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
            "naive_when": datetime(2025, 1, 2, 3, 4, 5),  # noqa: DTZ001 - what agents pass
            "day": date(2025, 1, 2),
            "uuid": uuid.UUID(int=7),
            "decimal": Decimal("1.10"),
            "enum": Color.RED,
            "dataclass": Point(1, 2),
            "__span_type__": "CODE_EXECUTION",
        },
        output={"nested": [{"deep": {"bytes": b"ok"}}]},
    )
    with_cycle = good(2, data={"graph": cyclic(), "tags": {"x"}, "nan": float("nan")})
    list_shaped = good(3, data=[{"step": 1}, {"step": 2}], input=[{"role": "user"}])
    error = {"type": "ValueError", "message": "boom", "category": "application"}
    with_error = good(4, data={"__error__": error, "__span_type__": "not-a-type"})
    plain = [good(n, input={"n": n}) for n in range(5, 15)]
    refused = bad_spans()
    backwards = good(99)
    spans = [unserializable, refused["too_large"], with_cycle, refused["id_too_long"]]
    spans += [list_shaped, refused["nul_in_id"], with_error, *plain]

    processor = SpoolProcessor(path, ship=ship_config)
    returned = run_agent(processor, spans, backwards)

    # The agent saw nothing: every call returned normally.
    assert returned == 2 * len(spans) + 2

    # Refused (start and end of each bad span; only the end of the backwards one), counted.
    facts = status_json(path, ship_env)
    assert facts["refused_by_reason"] == {
        "too_large": 2,
        "id_too_long": 2,
        "nul_in_id": 2,
        "end_before_start": 1,
    }
    assert facts["refused"] == 7
    assert (facts["pending"], facts["leased"], facts["dead"], facts["dropped"]) == (0, 0, 0, 0)

    # Every valid span delivered, complete; the backwards one as the start it validly had.
    stored = {span_id: item for (_, span_id), item in span_server.spans().items()}
    valid = {f"good-{n}" for n in range(1, 15)}
    assert set(stored) == valid | {"good-99"}
    assert all("end_timestamp" in stored[span_id] for span_id in valid)
    assert "end_timestamp" not in stored["good-99"]
    assert span_server.order_violations() == []
    # Refused at the door: no request carried a bad item, so none was refused, bisected or
    # dead-lettered by the endpoint.
    assert {record.status for record in span_server.requests()} == {200}
    assert not {arrival.span_id for arrival in span_server.arrivals()} - valid - {"good-99"}

    # What JSON cannot hold arrived converted.
    assert_converted(stored)


def assert_converted(stored: dict[str, dict[str, Any]]) -> None:
    metadata = stored["good-1"]["metadata"]
    assert metadata["object"] == "<Opaque handle>"
    assert metadata["set"] == [1, 2, 3]
    assert metadata["frozenset"] == ["a", "b"]
    assert metadata["text_bytes"] == "raw text"
    assert metadata["binary"] == "base64:/wD+"
    assert metadata["when"] == "2025-01-02T03:04:05+00:00"
    assert metadata["naive_when"] == "2025-01-02T03:04:05+00:00"  # naive is taken as UTC
    assert metadata["day"] == "2025-01-02"
    assert metadata["uuid"] == str(uuid.UUID(int=7))
    assert "1.10" in metadata["decimal"]
    assert metadata["enum"] == "red"
    assert metadata["dataclass"] == {"x": 1, "y": 2}
    assert stored["good-1"]["type"] == "CODE_EXECUTION"
    assert stored["good-1"]["output"] == {"nested": [{"deep": {"bytes": "ok"}}]}
    # A cycle or a NaN sends the whole span through the slow, total path: cut, never an error.
    assert stored["good-2"]["metadata"] == {
        "graph": {"name": "loop", "self": "<cycle>"},
        "tags": ["x"],
        "nan": "nan",
    }
    # Lists stay lists, as agentex's own processor sends them.
    assert stored["good-3"]["metadata"] == [{"step": 1}, {"step": 2}]
    assert stored["good-3"]["input"] == [{"role": "user"}]
    assert stored["good-4"]["status"] == "ERROR"
    assert stored["good-4"]["type"] == "not-a-type"  # as agentex sends it
    assert stored["good-5"]["input"] == {"n": 5}
    assert stored["good-5"]["start_timestamp"] == T0.isoformat()
