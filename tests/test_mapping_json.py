"""The append path's JSON: orjson where it writes what the standard encoder writes, the
standard encoder everywhere else (spool/_mapping.py ``_dumps``).

The reference is ``_dumps_standard``, the standard library's encoder with this module's
options, which is what every event was written with before orjson. The two must give the same
bytes for every value, except that orjson spells some floats differently (``0.00001`` for
``1e-05``): the same numbers, so those documents must parse to the same values.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import uuid
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spool import EventKind, Refused, encode_span
from spool import _mapping as mapping

MIB = 1 << 20


class Colour(enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


@dataclasses.dataclass
class Point:
    x: int
    y: float


offsets = st.one_of(
    st.none(),
    st.just(UTC),
    st.integers(-24 * 3600 + 1, 24 * 3600 - 1).map(lambda s: timezone(timedelta(seconds=s))),
)
datetimes = st.datetimes(timezones=offsets)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),  # beyond 64 bits too: orjson refuses them
    st.floats(),  # NaN and the infinities too: orjson writes them as null
    st.text(),  # lone surrogates too: orjson refuses them
    datetimes,
    st.dates(),
    st.times(),
    st.uuids(),
    st.decimals(allow_nan=False),
    st.binary(max_size=8),
    st.sampled_from([Colour.RED, Level.HIGH]),
    st.builds(Point, st.integers(), st.floats(allow_nan=False)),
    st.frozensets(st.integers(), max_size=3),
)
keys = st.one_of(st.text(max_size=6), st.integers(), st.booleans(), st.none(), st.floats())
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(keys, inner, max_size=4),
    ),
    max_leaves=24,
)


def has_float(value: object) -> bool:
    if isinstance(value, float):
        return True
    if isinstance(value, dict):
        return any(has_float(k) or has_float(v) for k, v in value.items())
    if isinstance(value, list | tuple | frozenset):
        return any(has_float(v) for v in value)
    return dataclasses.is_dataclass(value)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(param=st.dictionaries(st.text(max_size=8), values, max_size=6))
def test_the_json_is_what_the_standard_encoder_writes(param: dict[str, Any]) -> None:
    fast = mapping._dumps(param)
    # Integers beyond 64 bits are converted to text first (issue 12), on either path.
    standard = mapping._dumps_standard(mapping._wide_ints(param, set()))
    if has_float(param):
        assert json.loads(fast) == json.loads(standard)
    else:
        assert fast == standard


@pytest.mark.parametrize(
    "value",
    [1e-05, 1e16, -2.5e-300, 0.1, 1.0, 123456789.125, 5e-324, 1.7976931348623157e308],
)
def test_a_float_may_be_spelled_differently_but_is_the_same_number(value: float) -> None:
    fast = mapping._dumps({"x": value})
    assert json.loads(fast) == {"x": value}
    assert json.loads(fast) == json.loads(mapping._dumps_standard({"x": value}))


def test_nan_and_null_together_keep_the_standard_conversion() -> None:
    # orjson would write both as null; the standard path keeps NaN apart as "nan".
    param = {"nan": math.nan, "none": None, "inf": math.inf, "text": "null"}
    assert json.loads(mapping._dumps(param)) == {
        "nan": "nan",
        "none": None,
        "inf": "inf",
        "text": "null",
    }


def test_what_orjson_refuses_takes_the_standard_path() -> None:
    param: dict[Any, Any] = {
        "big": 1 << 70,
        1: "int key",
        "surrogate": "a\udc80b",
    }
    nested: Any = "leaf"
    for _ in range(300):
        nested = [nested]
    param["deep"] = nested
    assert mapping._dumps(param) == mapping._dumps_standard({**param, "big": str(1 << 70)})
    stored = json.loads(mapping._dumps(param))
    assert stored["big"] == str(1 << 70)
    assert stored["1"] == "int key"


@settings(max_examples=500, deadline=None)
@given(when=datetimes)
def test_timestamps_are_written_as_isoformat_writes_them(when: datetime) -> None:
    aware = when if when.tzinfo is not None else when.replace(tzinfo=UTC)
    assert mapping._iso(when) == aware.isoformat()


@pytest.mark.parametrize(
    "when",
    [
        datetime.min.replace(tzinfo=UTC),
        datetime.max.replace(tzinfo=UTC),
        datetime(2025, 1, 1, tzinfo=UTC),
        datetime(2025, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
    ],
)
def test_timestamps_at_the_edges_are_written_as_isoformat_writes_them(when: datetime) -> None:
    for value in (when, when.replace(tzinfo=None)):  # aware, and naive (taken as UTC)
        assert mapping._iso(value) == when.isoformat()


def span(**fields: Any) -> dict[str, Any]:
    return {
        "id": "s1",
        "name": "n",
        "trace_id": "t1",
        "start_timestamp": datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
    } | fields


def test_a_datetime_subclass_is_written_and_checked_by_its_own_isoformat() -> None:
    class Odd(datetime):
        def isoformat(self, sep: str = "T", timespec: str = "auto") -> str:
            return "the day before yesterday"

    with pytest.raises(Refused) as refused:
        encode_span(span(start_timestamp=Odd(2025, 1, 1, tzinfo=UTC)), EventKind.START, MIB)
    assert refused.value.reason == "invalid_timestamp"


def test_an_end_before_its_start_is_refused_for_datetimes_of_any_offset() -> None:
    start = datetime(2025, 1, 2, 12, 0, tzinfo=timezone(timedelta(hours=5)))
    end = datetime(2025, 1, 2, 6, 59, 59, tzinfo=UTC)  # the start, 12:00+05:00, is 07:00Z
    with pytest.raises(Refused) as refused:
        encode_span(span(start_timestamp=start, end_timestamp=end), EventKind.END, MIB)
    assert refused.value.reason == "end_before_start"
    naive_end = datetime(2025, 1, 2, 6, tzinfo=UTC).replace(tzinfo=None)  # taken as UTC
    with pytest.raises(Refused):
        encode_span(span(start_timestamp=start, end_timestamp=naive_end), EventKind.END, MIB)
    at_start = end + timedelta(seconds=1)
    encode_span(span(start_timestamp=start, end_timestamp=at_start), EventKind.END, MIB)


def test_classes_made_on_the_fly_are_mapped_and_not_all_remembered() -> None:
    for i in range(2 * mapping._REQUEST_PARAMS_MAX):
        params = span(id=f"s{i}")
        cls = type(f"Span{i}", (), {"to_request_params": lambda self, p=params: p})
        span_id, _, payload = encode_span(cls(), EventKind.START, MIB)
        assert span_id == f"s{i}"
        assert json.loads(payload)["id"] == f"s{i}"
        assert len(mapping._REQUEST_PARAMS) <= mapping._REQUEST_PARAMS_MAX


def test_scalars_of_every_kind_are_converted_alike() -> None:
    param = {
        "when": datetime(2025, 1, 2, 3, 4, 5, 6, tzinfo=timezone(timedelta(hours=-3))),
        "day": date(2025, 1, 2),
        "at": time(1, 2, 3, 4),
        "id": uuid.UUID(int=5),
        "amount": Decimal("1.10"),
        "colour": Colour.RED,
        "level": Level.HIGH,
        "point": Point(1, 2.5),
        "raw": b"\xff",
        "tags": frozenset({2, 1}),
        "pair": (1, "a"),
    }
    assert mapping._dumps(param) == mapping._dumps_standard(param)
    assert json.loads(mapping._dumps(param)) == {
        "when": "2025-01-02T03:04:05.000006-03:00",
        "day": "2025-01-02",
        "at": "01:02:03.000004",
        "id": "00000000-0000-0000-0000-000000000005",
        "amount": "1.10",
        "colour": "red",
        "level": 3,
        "point": {"x": 1, "y": 2.5},
        "raw": "base64:/w==",
        "tags": [1, 2],
        "pair": [1, "a"],
    }


# ---- issue 12: keys with lone surrogates, integers beyond 64 bits -------------------------------


def test_dict_keys_with_lone_surrogates_are_cleaned_like_values() -> None:
    param = {"metadata": {"a\udc80b": "c\udc80d", "nested": [{"\ud800": 1}]}}
    stored = json.loads(mapping._dumps(param))
    assert stored == {"metadata": {"a?b": "c?d", "nested": [{"?": 1}]}}


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        (2**64, "18446744073709551616"),
        (-(2**63) - 1, "-9223372036854775809"),
        (2**64 - 1, 2**64 - 1),  # what orjson writes: a number
        (-(2**63), -(2**63)),
        (10**5000, "1" + "0" * 5000),  # beyond Python's int-to-text limit too
    ],
    ids=["2**64", "-2**63-1", "2**64-1", "-2**63", "10**5000"],
)
def test_integers_beyond_64_bits_are_converted_to_decimal_text(value: int, stored: object) -> None:
    """JSON numbers beyond 64 bits are not portable (decoders refuse or round them): the
    mapping converts them to their decimal digits, as it converts what JSON cannot hold."""
    payload = mapping._dumps({"metadata": {"n": value, "list": [value]}})
    assert json.loads(payload) == {"metadata": {"n": stored, "list": [stored]}}


# ---- issue 12: spans without an id --------------------------------------------------------------


@dataclasses.dataclass
class IdlessSpan:
    """An agentex-style span whose ``id`` is not set."""

    name: str
    trace_id: str
    start_time: datetime
    id: str | None = None
    parent_id: str | None = "root"
    end_time: datetime | None = None
    input: Any = None
    output: Any = None
    data: Any = None


STARTED = datetime(2025, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)


def idless_shapes() -> dict[str, tuple[object, object]]:
    """Each shape as its start event and its end event would see it."""
    text = STARTED.isoformat()
    ended = (STARTED + timedelta(seconds=1)).isoformat()
    base = {"name": "step", "trace_id": "t-1", "parent_id": "root", "start_timestamp": text}
    later = STARTED + timedelta(seconds=1)
    return {
        "dict without id": (base, base | {"end_timestamp": ended, "output": {"x": 1}}),
        "dict id None": (base | {"id": None}, base | {"id": None, "end_timestamp": ended}),
        'dict id ""': (base | {"id": ""}, base | {"id": "", "end_timestamp": ended}),
        "agentex id None": (
            IdlessSpan("step", "t-1", STARTED),
            IdlessSpan("step", "t-1", STARTED, end_time=later, output={"x": 1}),
        ),
    }


@pytest.mark.parametrize("shape", sorted(idless_shapes()))
def test_a_span_without_an_id_gets_the_same_id_at_start_and_end(shape: str) -> None:
    start, end = idless_shapes()[shape]
    start_id = mapping.encode_span(start, EventKind.START, 1 << 20)[0]
    end_id = mapping.encode_span(end, EventKind.END, 1 << 20)[0]
    assert start_id == end_id
    assert uuid.UUID(start_id).version == 5


def test_different_idless_spans_get_different_ids() -> None:
    base = {"trace_id": "t-1", "start_timestamp": STARTED.isoformat()}
    ids = {
        mapping.encode_span(base | extra, EventKind.START, 1 << 20)[0]
        for extra in (
            {"name": "a"},
            {"name": "b"},
            {"name": "a", "parent_id": "p"},
            {"name": "a", "trace_id": "t-2"},
            {"name": "a", "start_timestamp": (STARTED + timedelta(microseconds=1)).isoformat()},
        )
    }
    assert len(ids) == 5
