"""Span -> spooled JSON -> request body, proved with hypothesis against the endpoint's contract
(issue 6, part A).

The contract is the SDK's documentation of ``PUT /v5/spans/batch`` as the repo's
``FakeSpanServer`` implements it: ``name``, ``trace_id`` and ``start_timestamp`` required;
``id``/``trace_id``/``parent_id``/``group_id`` strings of at most 256 UTF-8 bytes without NUL;
timestamps ISO-8601; an ``end_timestamp`` not before the start; free-form JSON objects in
``input``/``output``/``metadata``.

- Every span the contract accepts, in each accepted shape (a plain ``SpanCreateParam`` dict, an
  agentex-style object with datetimes and ``data``, a scale-gp-beta ``lib.tracing`` span), is
  spooled by a real spool as exactly the expected ``SpanCreateParam``; the stored bytes are the
  bytes inside the request body; and a real ``FakeSpanServer`` answers 200.
- Every span the contract refuses is refused at append with the right ``Refused.reason``
  (counted as ``refused:<reason>`` by the processors), and the endpoint refuses the same input.
- For arbitrary span-like dicts the spool and the endpoint agree: what the spool accepts, the
  endpoint stores; what the spool refuses, the endpoint refuses too.

The expected ``SpanCreateParam`` is built here from DESIGN.md's mapping, not by the code under
test.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, get_args

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scale_gp_beta.lib.tracing.span import BaseSpan
from scale_gp_beta.types import SpanType

from shipper.testing import BATCH_PATH, FakeSpanServer
from shipper.upload import batch_body
from spool import (
    EventKind,
    EventState,
    NewEvent,
    Refused,
    Spool,
    SpoolConfig,
    SyncSpoolProcessor,
    encode_span,
    ops,
)

MIB = 1 << 20
ID_FIELDS = ("id", "trace_id", "parent_id", "group_id")
SDK_SPAN_TYPES: tuple[str, ...] = get_args(SpanType)
NOW = datetime(2030, 1, 1, tzinfo=UTC)  # "now" for end events without an end: after every start

FAST = settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# ---- the endpoint --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def endpoint() -> Iterator[httpx.Client]:
    """A FakeSpanServer on loopback and a keep-alive client to it (shared by all examples)."""
    with (
        FakeSpanServer(record=False) as server,
        httpx.Client(base_url=server.base_url, timeout=10.0) as client,
    ):
        yield client


def put(endpoint: httpx.Client, body: bytes) -> httpx.Response:
    return endpoint.put(BATCH_PATH, content=body, headers={"Content-Type": "application/json"})


def raw_body(items: list[dict[str, Any]]) -> bytes:
    """The request an uncheckd client would send for ``items`` (what the spool's validation
    stands in for)."""
    return json.dumps({"items": items}).encode()


# ---- strategies: what the contract accepts ---------------------------------------------------

NO_NUL = st.characters(codec="utf-8", exclude_characters="\x00")
json_scalars = (
    st.none()
    | st.booleans()
    # Wider integers are spooled as text (tests/test_mapping_json.py): not this contract's.
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=10,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=4)

ids = st.one_of(
    st.text(NO_NUL, min_size=1, max_size=40),
    st.uuids().map(str),
    # At the limit: 256 UTF-8 bytes, in 1-, 2-, 3- and 4-byte characters.
    st.sampled_from(["a" * 256, "é" * 128, "€" * 85 + "a", "😀" * 64]),
).filter(lambda s: 1 <= len(s.encode()) <= 256)

offsets = st.one_of(
    st.just(UTC),
    st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m))),
)
aware_datetimes = st.datetimes(
    # hypothesis bounds are naive; the drawn values carry one of ``offsets``
    min_value=datetime(1970, 1, 1, tzinfo=UTC).replace(tzinfo=None),
    max_value=datetime(2029, 1, 1, tzinfo=UTC).replace(tzinfo=None),
    timezones=offsets,
)


@st.composite
def iso(draw: st.DrawFn, when: datetime) -> str:
    """``when`` as ISO-8601 with its offset, in a few spellings (``Z`` for UTC), never losing
    precision (a truncated time could move an end before its start)."""
    lossless = ["auto", "microseconds"]
    if when.microsecond % 1000 == 0:
        lossless.append("milliseconds")
    if when.microsecond == 0:
        lossless.append("seconds")
    text = when.isoformat(timespec=draw(st.sampled_from(lossless)))
    if text.endswith("+00:00") and draw(st.booleans()):
        text = text[: -len("+00:00")] + "Z"
    return text


@dataclass(frozen=True, slots=True)
class Fields:
    """One span, before it is put in any shape."""

    name: str | None  # None: missing (a refused span)
    id: str
    trace_id: str | None
    parent_id: str | None
    group_id: str | None
    start: datetime | None
    end: datetime | None
    start_text: str | None
    end_text: str | None
    input: dict[str, Any]
    output: dict[str, Any]
    metadata: dict[str, Any]
    span_type: str


@st.composite
def span_fields(draw: st.DrawFn) -> Fields:
    start = draw(aware_datetimes)
    end = None
    if draw(st.booleans()):
        later = draw(st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=3)))
        end = (start + later).astimezone(draw(offsets))  # the same instant, maybe another offset
    metadata = draw(json_objects)
    if draw(st.booleans()):
        metadata["__span_type__"] = draw(st.sampled_from([*SDK_SPAN_TYPES, "NOT_A_TYPE"]))
    if draw(st.booleans()):
        metadata["__error__"] = draw(json_values)
    return Fields(
        name=draw(st.text(min_size=1, max_size=20)),
        id=draw(ids),
        trace_id=draw(ids),
        parent_id=draw(st.none() | ids),
        group_id=draw(st.none() | ids),
        start=start,
        end=end,
        start_text=draw(iso(start)),
        end_text=None if end is None else draw(iso(end)),
        input=draw(json_objects),
        output=draw(json_objects),
        metadata=metadata,
        span_type=draw(st.sampled_from(SDK_SPAN_TYPES)),
    )


# ---- the three accepted shapes, and the SpanCreateParam each must become -----------------------


@dataclass(slots=True)
class AgentexSpan:
    """The attributes of an agentex ``Span`` the spool reads."""

    id: str | None
    name: str | None
    trace_id: str | None
    parent_id: str | None
    start_time: datetime | None
    end_time: datetime | None
    input: Any
    output: Any
    data: Any


def as_dict(f: Fields) -> dict[str, Any]:
    """The SpanCreateParam dict; a field that is None is left out."""
    span: dict[str, Any] = {
        "name": f.name,
        "id": f.id,
        "trace_id": f.trace_id,
        "start_timestamp": f.start_text,
        "end_timestamp": f.end_text,
        "parent_id": f.parent_id,
        "group_id": f.group_id,
        "input": f.input,
        "output": f.output,
        "metadata": f.metadata,
        "type": f.span_type,
        "status": "SUCCESS",
    }
    return {key: value for key, value in span.items() if value is not None}


def as_agentex(f: Fields) -> AgentexSpan:
    return AgentexSpan(
        id=f.id,
        name=f.name,
        trace_id=f.trace_id,
        parent_id=f.parent_id,
        start_time=f.start,
        end_time=f.end,
        input=f.input,
        output=f.output,
        data=f.metadata,
    )


def expected_agentex(f: Fields) -> dict[str, Any]:
    """agentex's own SGP processor's mapping (DESIGN.md, agentex): ISO-8601 times, ``metadata``
    = ``data``, ``type`` = ``str(data["__span_type__"])`` (STANDALONE when absent), ``status``
    ERROR with the SDK's error fields when ``__error__`` holds a dict."""
    metadata = dict(f.metadata)
    error = metadata.get("__error__")
    if isinstance(error, dict):
        metadata |= {
            "error": True,
            "error_type": error.get("type") or None,
            "error_message": error.get("message") or None,
            "error_category": error.get("category", "unknown"),
        }
    param: dict[str, Any] = {
        "name": f.name,
        "id": f.id,
        "trace_id": f.trace_id,
        "start_timestamp": None if f.start is None else f.start.isoformat(),
        "input": f.input,
        "output": f.output,
        "metadata": metadata,
        "type": str(metadata.get("__span_type__", "STANDALONE")),
        "status": "ERROR" if isinstance(error, dict) else "SUCCESS",
    }
    if f.parent_id:
        param["parent_id"] = f.parent_id
    if f.end is not None:
        param["end_timestamp"] = f.end.isoformat()
    return param


def as_sdk(f: Fields) -> BaseSpan:
    assert f.name is not None  # an SDK span always has its name
    span = BaseSpan(
        name=f.name,
        trace_id=f.trace_id,
        span_id=f.id,
        parent_span_id=f.parent_id,
        group_id=f.group_id,
        input=f.input,
        output=f.output,
        metadata=f.metadata,
        span_type=f.span_type,  # type: ignore[arg-type]  # drawn from get_args(SpanType)
    )
    span.start_time = f.start_text
    span.end_time = f.end_text
    return span


def expected_sdk(f: Fields) -> dict[str, Any]:
    """What ``to_request_params()`` documents: the span's fields under SpanCreateParam names."""
    param = as_dict(f)
    param["type"] = f.span_type
    return param


SHAPES: dict[str, tuple[Callable[[Fields], object], Callable[[Fields], dict[str, Any]]]] = {
    "dict": (as_dict, as_dict),
    "agentex": (as_agentex, expected_agentex),
    "sdk": (as_sdk, expected_sdk),
}


def expected_event(param: dict[str, Any], kind: EventKind, now: datetime) -> dict[str, Any]:
    """A start carries no ``end_timestamp``; an end always does (now, when the span has none)."""
    param = dict(param)
    if kind is EventKind.START:
        param.pop("end_timestamp", None)
    else:
        param.setdefault("end_timestamp", now.isoformat())
    return param


# ---- accepted spans: spooled exactly, sent exactly, stored ------------------------------------


@FAST
@given(
    spans=st.lists(
        st.tuples(st.sampled_from(sorted(SHAPES)), span_fields()), min_size=1, max_size=6
    ),
    kind=st.sampled_from(EventKind),
)
def test_accepted_spans_are_spooled_and_sent_byte_for_byte(
    endpoint: httpx.Client, spans: list[tuple[str, Fields]], kind: EventKind
) -> None:
    expected: list[dict[str, Any]] = []
    events: list[NewEvent] = []
    for shape, fields in spans:
        render, param = SHAPES[shape]
        span_id, trace_id, payload = encode_span(render(fields), kind, MIB, NOW)
        want = expected_event(param(fields), kind, NOW)
        assert json.loads(payload.decode("utf-8")) == want, shape
        assert (span_id, trace_id) == (want["id"], want["trace_id"])
        expected.append(want)
        events.append(NewEvent(span_id, trace_id, kind, payload))

    with scratch_spool() as spool:
        assert spool.append(events)
        claimed = spool.run(ops.claim("prop", limit=len(events), lease_seconds=60, now=1e12))
    stored = [e.payload for e in claimed]
    assert stored == [e.payload for e in events]  # the spool hands back exactly what it took

    body = batch_body(stored)
    assert json.loads(body) == {"items": expected}
    inner = body[len(b'{"items":[') : -len(b"]}")]
    assert inner == b",".join(stored)  # each payload sits in the body byte for byte

    answer = put(endpoint, body)
    assert answer.status_code == 200, answer.text
    assert [i["id"] for i in answer.json()["items"]] == [p["id"] for p in expected]


@contextlib.contextmanager
def scratch_spool() -> Iterator[Spool]:
    """A real spool file in a fresh directory, for one hypothesis example."""
    where = Path(tempfile.mkdtemp(prefix="spool-prop-"))
    try:
        with Spool.open(SpoolConfig(path=where / "spool.db")) as spool:
            yield spool
    finally:
        shutil.rmtree(where, ignore_errors=True)


# ---- refused spans: refused at append, for the endpoint's reason --------------------------------

long_ids = st.text(NO_NUL, min_size=1, max_size=8).map(
    lambda s: s * (257 // len(s.encode()) + 1)  # over 256 UTF-8 bytes, maybe not 256 characters
)


@st.composite
def nul_ids(draw: st.DrawFn) -> str:
    base = draw(st.text(NO_NUL, max_size=20))
    at = draw(st.integers(0, len(base)))
    return base[:at] + "\x00" + base[at:]


# Which fields each shape can carry, and so which refusals it can express.
ID_FIELDS_OF = {
    "dict": ID_FIELDS,
    "agentex": ("id", "trace_id", "parent_id"),
    "sdk": ID_FIELDS,
}
# An SDK span has no way to lose its name or trace id (it substitutes "no_trace_id").
MISSING_OF = {
    "dict": ("name", "trace_id", "start_timestamp"),
    "agentex": ("name", "trace_id", "start_timestamp"),
    "sdk": ("start_timestamp",),
}


@dataclass(frozen=True, slots=True)
class Broken:
    shape: str
    span: object
    raw: dict[str, Any]  # the same span as an unchecking client would send it
    reason: str


@st.composite
def broken_spans(draw: st.DrawFn) -> Broken:
    """A span the contract accepts, with exactly one thing the contract refuses."""
    shape = draw(st.sampled_from(sorted(SHAPES)))
    fields = draw(span_fields())
    problem = draw(st.sampled_from(["id_too_long", "nul_in_id", "end_before_start", "missing"]))
    raw: dict[str, Any]
    if problem in ("id_too_long", "nul_in_id"):
        field = draw(st.sampled_from(ID_FIELDS_OF[shape]))
        value = draw(long_ids if problem == "id_too_long" else nul_ids())
        changes: dict[str, Any] = {field: value}
        fields = replace(fields, **changes)
        reason = problem
    elif problem == "end_before_start":
        assert fields.start is not None
        earlier = draw(st.timedeltas(min_value=timedelta(microseconds=1), max_value=timedelta(3)))
        end = (fields.start - earlier).astimezone(draw(offsets))
        fields = replace(fields, end=end, end_text=draw(iso(end)))
        reason = problem
    else:
        missing = draw(st.sampled_from(MISSING_OF[shape]))
        reason = f"missing_{missing}"
        if missing == "start_timestamp":
            fields = replace(fields, start=None, start_text=None)
        else:
            gone: dict[str, Any] = {missing: None}
            fields = replace(fields, **gone)
    render, param = SHAPES[shape]
    raw = {k: v for k, v in param(fields).items() if v is not None}
    return Broken(shape, render(fields), raw, reason)


@FAST
@given(cases=st.lists(broken_spans(), min_size=1, max_size=5))
def test_refused_spans_are_refused_at_append_and_by_the_endpoint(
    endpoint: httpx.Client, cases: list[Broken]
) -> None:
    for case in cases:
        with pytest.raises(Refused) as refused:
            encode_span(case.span, EventKind.END, MIB, NOW)
        assert refused.value.reason == case.reason, (case.shape, str(refused.value))
        answer = put(endpoint, raw_body([case.raw]))
        assert answer.status_code in (400, 422), (case.reason, case.raw, answer.text)

    # Through a processor: the call returns, nothing is spooled, each refusal is counted.
    with scratch_dir() as where:
        config = SpoolConfig(path=where / "spool.db")
        processor = SyncSpoolProcessor(config=config)
        processor.on_spans_end([case.span for case in cases])  # returns: it never raises
        processor.shutdown()
        with Spool.open(config) as spool:
            stats = spool.stats()
    assert stats.refused == dict(Counter(case.reason for case in cases))
    assert (stats.pending, stats.dropped) == (0, {})


@contextlib.contextmanager
def scratch_dir() -> Iterator[Path]:
    where = Path(tempfile.mkdtemp(prefix="spool-prop-"))
    try:
        yield where
    finally:
        shutil.rmtree(where, ignore_errors=True)


# ---- any span-like dict: the spool and the endpoint agree ---------------------------------------

ABSENT = object()


@st.composite
def span_like_dicts(draw: st.DrawFn) -> dict[str, Any]:
    """Dicts near the SpanCreateParam shape, each field valid, absent, null, empty or broken."""
    start = draw(aware_datetimes)
    later = draw(st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=1)))
    earlier = draw(st.timedeltas(min_value=timedelta(microseconds=1), max_value=timedelta(1)))
    bad_id = long_ids | nul_ids()
    choices: dict[str, st.SearchStrategy[object]] = {
        "name": st.sampled_from([ABSENT, None, ""]) | st.text(min_size=1, max_size=8),
        "id": st.sampled_from([ABSENT, None, ""]) | ids | bad_id,
        "trace_id": st.sampled_from([ABSENT, None, ""]) | ids | bad_id,
        "parent_id": st.sampled_from([ABSENT, None, ""]) | ids | bad_id,
        "group_id": st.sampled_from([ABSENT, None, ""]) | ids | bad_id,
        "start_timestamp": st.sampled_from([ABSENT, None, "not a time"]) | iso(start),
        "end_timestamp": st.sampled_from([ABSENT, None, "later"])
        | iso(start + later)
        | iso(start - earlier),
        "input": st.sampled_from([ABSENT]) | json_objects,
    }
    span = {key: draw(strategy) for key, strategy in choices.items()}
    return {key: value for key, value in span.items() if value is not ABSENT}


@settings(FAST, max_examples=200)
@given(span=span_like_dicts())
def test_the_spool_and_the_endpoint_agree_on_every_span(
    endpoint: httpx.Client, span: dict[str, Any]
) -> None:
    """What the spool accepts, the endpoint stores (the spool may repair, e.g. stamp a missing
    end or give a missing id a uuid); what the spool refuses, the endpoint refuses as sent."""
    verdict = spool_verdict(span)
    if isinstance(verdict, Refused):
        answer = put(endpoint, raw_body([span]))
        assert answer.status_code in (400, 422), (
            f"the spool refused ({verdict.reason}) a span the endpoint stores: {span!r}"
        )
    else:
        answer = put(endpoint, batch_body([verdict]))
        assert answer.status_code == 200, (
            f"the spool accepted a span the endpoint refuses ({answer.text}): {verdict!r}"
        )


def spool_verdict(span: object) -> bytes | Refused:
    """The payload the spool would store for an end event of ``span``, or its refusal."""
    try:
        return encode_span(span, EventKind.END, MIB, NOW)[2]
    except Refused as refused:
        return refused


# ---- the disagreements, one each ----------------------------------------------------------


def base_span(**changes: Any) -> dict[str, Any]:
    span: dict[str, Any] = {
        "name": "llm",
        "id": "span-1",
        "trace_id": "trace-1",
        "start_timestamp": "2024-05-01T12:00:00+00:00",
        "end_timestamp": "2024-05-01T12:00:01+00:00",
    }
    return span | changes


@pytest.mark.parametrize("field", ["parent_id", "group_id"])
def test_a_null_optional_id_is_not_spooled_for_the_endpoint_to_refuse(
    endpoint: httpx.Client, field: str
) -> None:
    """BUG (spool/_mapping.py, ``_validate``): an ID field set to ``None`` (a root span written
    as ``{"parent_id": None}``) is skipped by the checks but kept in the payload as ``null``.
    The endpoint answers 422 (``parent_id must be a string``), so the event is accepted at
    append, then bisected out of its batch and dead-lettered. Fix: drop ID fields that are
    ``None`` (absent is what the caller meant) before encoding."""
    _, _, payload = encode_span(base_span(**{field: None}), EventKind.END, MIB, NOW)
    answer = put(endpoint, batch_body([payload]))
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize("field", ["name", "trace_id"])
def test_an_empty_name_or_trace_id_is_refused_only_if_the_endpoint_refuses_it(
    endpoint: httpx.Client, field: str
) -> None:
    """DISAGREEMENT (spool/_mapping.py ``_validate`` vs shipper/testing.py ``_item_problem``):
    the spool refuses ``""`` as ``missing_name``/``missing_trace_id``, the endpoint (per the
    SDK's ``SpanCreateParam``: ``name: Required[str]``, ``trace_id: Required[str]``, no length
    rule) stores it, so the span is lost at append. Either the spool accepts empty strings or
    the fake (and the documented contract) refuses them; they must agree."""
    span = base_span(**{field: ""})
    verdict = spool_verdict(span)
    if isinstance(verdict, Refused):
        answer = put(endpoint, raw_body([span]))
        assert answer.status_code in (400, 422), (
            f"the spool refused ({verdict.reason}) a span the endpoint stores"
        )


def test_an_end_without_end_time_is_kept_when_the_start_is_ahead_of_the_local_clock(
    endpoint: httpx.Client,
) -> None:
    """BUG (spool/_mapping.py, ``to_param``): an end event for a span without an end time is
    stamped with the local clock; when the span's start came from a clock slightly ahead (another
    host, a skewed container), the stamp precedes the start and the event is refused as
    ``end_before_start`` although the span as given is valid. Fix: stamp
    ``max(now, start_timestamp)``."""
    start = NOW + timedelta(seconds=2)
    span = base_span(start_timestamp=start.isoformat())
    del span["end_timestamp"]
    assert put(endpoint, raw_body([span])).status_code == 200
    _, _, payload = encode_span(span, EventKind.END, MIB, NOW)
    assert put(endpoint, batch_body([payload])).status_code == 200


@pytest.mark.parametrize("field", ID_FIELDS)
def test_an_id_that_is_not_valid_utf8_is_refused_at_append(
    endpoint: httpx.Client, field: str
) -> None:
    """BUG (spool/_mapping.py, ``_validate``): a lone surrogate (what ``os.fsdecode`` or
    ``surrogateescape`` leave for bytes that are not UTF-8) in an ID field is not refused. The
    endpoint refuses it (400, not valid UTF-8); the spool instead rewrites it to ``?`` in the
    payload while keeping the original as the row's span id, which sqlite3 cannot bind: the
    event ends up dropped as ``spool_error`` rather than refused with a reason (see the
    processor test below). Fix: refuse ids that do not encode as UTF-8 (``"invalid_id"``)."""
    span = base_span(**{field: "span-\udc80"})
    assert put(endpoint, raw_body([span])).status_code == 400
    with pytest.raises(Refused):
        encode_span(span, EventKind.END, MIB, NOW)


def test_a_span_with_an_undecodable_id_does_not_hang_the_agent(tmp_path: Path) -> None:
    """Such an id reaches ``INSERT`` (see the test above), where sqlite3 raises
    ``UnicodeEncodeError``, not an ``sqlite3.Error``. Before 31d3b92 that escaped the group
    committer's handler and killed its thread: this call and every later append to the spool
    in the process waited forever. Now the call returns, the event is counted (dropped as
    ``spool_error`` until ``_validate`` refuses it), and the next span is spooled."""
    config = SpoolConfig(path=tmp_path / "spool.db")
    processor = SyncSpoolProcessor(config=config)
    calls = [
        threading.Thread(target=processor.on_span_end, args=(span,), daemon=True)
        for span in (base_span(id="span-\udc80"), base_span(id="span-2"))
    ]
    for call in calls:
        call.start()
        call.join(timeout=5.0)  # a bound on a hang, not a sleep: the call returns in ms
        assert not call.is_alive(), "on_span_end never returned"
    processor.shutdown()
    with Spool.open(config) as spool:
        assert [r.span_id for r in spool.export(list(EventState))] == ["span-2"]
        stats = spool.stats()
    assert stats.refused_total + stats.dropped_total == 1  # not lost without a reason
