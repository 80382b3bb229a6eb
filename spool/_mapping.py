"""Span objects to the exact JSON the endpoint will get, and the endpoint's limits checked early.

Three shapes are accepted: agentex-style span objects (``id``, ``name``, ``trace_id``,
``parent_id``, ``start_time``, ``end_time``, ``input``, ``output``, ``data``), scale-gp-beta
``lib.tracing`` spans (they have ``to_request_params()``), and dicts already in the
``SpanCreateParam`` shape. Values JSON cannot hold are converted, never refused (integers
beyond 64 bits become their decimal text; lone surrogates in keys and values become ``?``).

agentex-style objects are mapped field for field as agentex's own ``SGPAsyncTracingProcessor``
maps a ``Span`` (``_from_agentex``): lists kept as lists, ``__span_type__`` sent as given, naive
times kept naive, an ``__error__`` dict made into the SDK's error fields. The metadata agentex's
processor adds from its environment (``__source__``, ``__agent_name__``...) is added by
``spool.agentex``'s processors, not here.
"""

from __future__ import annotations

import base64
import dataclasses
import decimal
import enum
import json
import json.encoder
import math
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, time
from typing import Any

import orjson as _orjson

from ._model import EventKind

__all__ = ["ID_FIELDS", "SPAN_TYPES", "NotASpan", "Refused", "encode_span", "to_param"]

# scale-gp-beta's SpanType values (a test keeps this in step with the SDK; the spool does not
# import the SDK).
SPAN_TYPES = frozenset(
    {
        "TEXT_INPUT", "TEXT_OUTPUT", "COMPLETION_INPUT", "COMPLETION", "KB_RETRIEVAL",
        "KB_INPUT", "RERANKING", "EXTERNAL_ENDPOINT", "PROMPT_ENGINEERING", "DOCUMENT_INPUT",
        "MAP_REDUCE", "DOCUMENT_SEARCH", "DOCUMENT_PROMPT", "CUSTOM", "CODE_EXECUTION",
        "DATA_MANIPULATION", "EVALUATION", "FILE_RETRIEVAL", "KB_ADD_CHUNK", "KB_MANAGEMENT",
        "GUARDRAIL", "OUTPUT_GUARDRAIL", "TRACER", "AGENT_TRACER", "AGENT_WORKFLOW",
        "STANDALONE",
    }
)  # fmt: skip
ID_FIELDS = ("id", "trace_id", "parent_id", "group_id")
_REQUIRED = frozenset({"name", "trace_id", "start_timestamp"})
MAX_ID_BYTES = 256


class NotASpan(TypeError):
    """Not a span at all: a programming error in the caller, raised to it."""


class Refused(Exception):
    """The span breaks one of the endpoint's documented limits; ``reason`` is the counter key."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        super().__init__(detail)


def encode_span(
    span: object, kind: EventKind, max_bytes: int, now: datetime | None = None
) -> tuple[str, str, bytes]:
    """``(span_id, trace_id, payload)`` for one event, or :class:`Refused`.

    ``TypeError`` for something that is not a span at all (a programming error).
    """
    param, times = _param(span, kind, now)
    _validate(param, times)
    payload = _dumps(param)
    if len(payload) > max_bytes:
        raise Refused(
            "too_large", f"span {param['id']!r}: {len(payload)} bytes is over {max_bytes}"
        )
    return param["id"], param["trace_id"], payload


def to_param(span: object, kind: EventKind, now: datetime | None = None) -> dict[str, Any]:
    """The ``SpanCreateParam`` dict for ``span``; a start carries no ``end_timestamp``."""
    return _param(span, kind, now)[0]


_Times = dict[str, datetime]
"""The timestamps ``_param`` wrote from datetimes, as aware datetimes: not parsed back."""


def _param(span: object, kind: EventKind, now: datetime | None) -> tuple[dict[str, Any], _Times]:
    agentex = False
    if isinstance(span, Mapping):
        param = _without_none(dict(span))
    elif _has_request_params(type(span)):
        try:
            param = _without_none(dict(span.to_request_params()))  # type: ignore[attr-defined]
        except Exception as exc:
            reason = (
                "missing_start_timestamp"
                if getattr(span, "start_time", 1) is None
                else "invalid_span"
            )
            raise Refused(reason, f"span cannot be read: {exc}") from exc
    elif hasattr(span, "trace_id") and hasattr(span, "start_time"):
        param = _from_agentex(span)
        agentex = True
    else:
        raise NotASpan(f"not a span: {type(span).__name__}")
    if kind is EventKind.START:
        param.pop("end_timestamp", None)
    elif "end_timestamp" not in param:
        # An end event always carries the end: stamp it now (never before the start, whose
        # clock may run ahead of ours) rather than lose the span.
        param["end_timestamp"] = _end_now(param.get("start_timestamp"), now)
    times: _Times = {}
    naive_utc = not agentex  # agentex sends ``isoformat()``: a naive time stays naive
    for name in ("start_timestamp", "end_timestamp"):
        value = param.get(name)
        if isinstance(value, datetime):
            param[name] = _iso(value, naive_utc)
            if type(value) is datetime:  # a subclass may write its own isoformat: parse it
                times[name] = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if not param.get("id"):
        param["id"] = _derived_id(param)
    return param, times


_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "spool-ship:span-id")


def _derived_id(param: Mapping[str, Any]) -> str:
    """The id of a span that has none, the same for its start and its end event: a UUID5 of
    what both carry (trace, parent, name, start). Two id-less spans alike in all four are one
    span at the endpoint; a random id would leave every id-less span "in progress" there."""
    shared = (param.get(field) for field in ("trace_id", "parent_id", "name", "start_timestamp"))
    return str(uuid.uuid5(_ID_NAMESPACE, "\x1f".join("" if v is None else str(v) for v in shared)))


def _without_none(param: dict[str, Any]) -> dict[str, Any]:
    """An optional field set to None is absent, not null, for the endpoint."""
    for key in [k for k, v in param.items() if v is None and k not in _REQUIRED]:
        del param[key]
    return param


# Whether a span class has ``to_request_params`` (scale-gp-beta's spans), asked once per
# class: pydantic models answer a missing class attribute from their metaclass's Python
# ``__getattr__``, which raises, and that costs more than the rest of the mapping's checks.
_REQUEST_PARAMS: dict[type, bool] = {}
_REQUEST_PARAMS_MAX = 1024


def _has_request_params(cls: type) -> bool:
    known = _REQUEST_PARAMS.get(cls)
    if known is None:
        if len(_REQUEST_PARAMS) >= _REQUEST_PARAMS_MAX:
            _REQUEST_PARAMS.clear()  # classes made on the fly: do not hold on to them all
        known = _REQUEST_PARAMS[cls] = callable(getattr(cls, "to_request_params", None))
    return known


def _end_now(start: object, now: datetime | None) -> str:
    stamp = now or datetime.now(UTC)
    if isinstance(start, datetime):
        started = start if start.tzinfo is not None else start.replace(tzinfo=UTC)
    elif isinstance(start, str):
        try:
            started = _parse_time("start_timestamp", start)
        except Refused:
            return stamp.isoformat()  # validation refuses the bad start with its own reason
    else:
        return stamp.isoformat()
    return max(stamp, started).isoformat()


def _from_agentex(span: Any) -> dict[str, Any]:
    """The parameters of an agentex-style span, as agentex's ``SGPAsyncTracingProcessor`` builds
    them (``_build_sgp_span``, then ``to_request_params``). Optional fields are only set when
    present, so (unlike a dict or ``to_request_params``) there is no ``None`` to strip."""
    data = getattr(span, "data", None)
    metadata = _payload(data)
    param: dict[str, Any] = {
        "name": span.name,
        "id": span.id,
        "trace_id": span.trace_id,
        "start_timestamp": span.start_time,
        "input": _payload(getattr(span, "input", None)),
        "output": _payload(getattr(span, "output", None)),
        "metadata": metadata,
        "type": "STANDALONE",
        "status": "SUCCESS",
    }
    if type(data) is dict or isinstance(data, Mapping):
        span_type = data.get("__span_type__", "STANDALONE")
        # agentex sends ``str()`` of whatever is there: a type the endpoint does not know is
        # its answer to give (a dead letter with its reason), as it is for agentex's processor.
        param["type"] = span_type if type(span_type) is str else str(span_type)
        error = data.get("__error__")
        if isinstance(error, Mapping):
            # agentex's set_span_error shape, {"type", "message", "category"}; agentex's
            # processor raises KeyError on a dict without "type" or "message" (and the span is
            # lost): here what is missing is None.
            param["status"] = "ERROR"
            metadata["error"] = True
            metadata["error_type"] = error.get("type") or None
            metadata["error_message"] = error.get("message") or None
            metadata["error_category"] = error.get("category", "unknown")
    parent_id = getattr(span, "parent_id", None)
    if parent_id:
        param["parent_id"] = parent_id
    end_time = getattr(span, "end_time", None)
    if end_time is not None:
        param["end_timestamp"] = end_time
    return param


def _payload(value: object) -> Any:
    """agentex's ``input``/``output``/``data`` as its processor sends them: a dict or a list as
    it is, nothing (None, empty) as ``{}``, anything else wrapped as ``{"value": ...}`` (not an
    agentex ``Span`` value: the endpoint wants JSON objects or arrays there)."""
    if value is None:
        return {}
    if type(value) is dict or isinstance(value, Mapping):
        return dict(value)
    if type(value) is list or isinstance(value, list | tuple):
        return list(value) if value else {}
    return {"value": value}


def _iso(value: datetime, naive_utc: bool = True) -> str:
    """``value.isoformat()``, a naive time taken as UTC unless ``naive_utc`` is false."""
    if type(value) is datetime and (value.tzinfo is None or value.tzinfo is UTC):
        # orjson writes these exactly as isoformat does, in a third of the time (a test
        # holds the two to it); an offset with seconds is where they part.
        option = _orjson.OPT_NAIVE_UTC if naive_utc else 0
        return _orjson.dumps(value, option=option)[1:-1].decode("ascii")
    if value.tzinfo is None and naive_utc:
        value = value.replace(tzinfo=UTC)
    return value.isoformat()


def _parse_time(name: str, value: object) -> datetime:
    if not isinstance(value, str):
        raise Refused("invalid_timestamp", f"{name} is not a timestamp: {value!r}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise Refused("invalid_timestamp", f"{name} is not ISO-8601: {value!r}") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _validate(param: dict[str, Any], times: _Times) -> None:
    name = param.get("name")
    if not isinstance(name, str) or not name:
        raise Refused("missing_name", "span has no name")
    if not param.get("trace_id"):
        raise Refused("missing_trace_id", f"span {name!r} has no trace_id")
    for field in ID_FIELDS:
        value = param.get(field)
        if value is None:
            continue
        if not isinstance(value, str):
            value = param[field] = str(value)
        if "\x00" in value:
            raise Refused("nul_in_id", f"span {name!r}: {field} contains a NUL byte")
        try:
            encoded = value.encode("utf-8")
        except UnicodeEncodeError:
            raise Refused(
                "invalid_id", f"span {name!r}: {field} is not valid UTF-8 (a lone surrogate)"
            ) from None
        if len(encoded) > MAX_ID_BYTES:
            raise Refused(
                "id_too_long", f"span {name!r}: {field} is over {MAX_ID_BYTES} UTF-8 bytes"
            )
    start = param.get("start_timestamp")
    if start is None:
        raise Refused("missing_start_timestamp", f"span {name!r} has no start_timestamp")
    started = times.get("start_timestamp") or _parse_time("start_timestamp", start)
    end = param.get("end_timestamp")
    if end is None:
        return
    ended = times.get("end_timestamp") or _parse_time("end_timestamp", end)
    if ended < started:
        raise Refused("end_before_start", f"span {name!r} ends before it starts")


def _dumps(param: dict[str, Any]) -> bytes:
    """The event's JSON: compact UTF-8, values JSON cannot hold converted by ``_convert``."""
    # orjson first: a quarter of the time of the standard encoder, and the same bytes except
    # for the spelling of some floats (0.00001 for 1e-05: the same number). It writes NaN and
    # the infinities as null, where this module writes "nan", and it refuses some things the
    # standard encoder handles its own way (keys that are not strings, lone surrogates,
    # nesting deeper than 254) and integers over 64 bits, which this module writes as their
    # decimal text: any of those, or any null at all, takes the standard path below.
    try:
        fast = _orjson.dumps(param, default=_convert, option=_ORJSON_OPTIONS)
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        # Perhaps an integer beyond 64 bits, which orjson refuses; nothing else has one.
        return _dumps_standard(_wide_ints(param, set()))
    if b"null" not in fast:
        return fast
    return _dumps_standard(param)


def _dumps_standard(param: dict[str, Any]) -> bytes:
    """``_dumps`` with the standard library's encoder: the reference, and the total path."""
    try:
        if _encode is not None:
            # What json.dumps(param, separators=(",", ":"), ensure_ascii=False,
            # allow_nan=False, default=_convert) does, without building an encoder per call.
            text = "".join(_encode(param, 0))
        else:  # pragma: no cover - CPython always has the C encoder
            text = json.dumps(
                param, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_convert
            )
        return text.encode("utf-8")
    except (ValueError, TypeError, RecursionError, UnicodeEncodeError):
        # NaN, a cycle, a non-string key or a lone surrogate: take the slow, total path.
        clean = _sanitize(param, set())
        return json.dumps(clean, separators=(",", ":"), ensure_ascii=True).encode("ascii")


# Datetimes, dates, times and dataclasses go to ``_convert``, as they do from the standard
# encoder (orjson would write some of them its own way).
_ORJSON_OPTIONS = _orjson.OPT_PASSTHROUGH_DATETIME | _orjson.OPT_PASSTHROUGH_DATACLASS


def _convert(value: object) -> object:
    """JSON for what ``json`` cannot hold."""
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return "base64:" + base64.b64encode(raw).decode("ascii")
    if isinstance(value, set | frozenset):
        return sorted(value, key=_safe_repr)
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        try:
            return dump(mode="json")
        except Exception:
            return _safe_repr(value)
    if isinstance(value, uuid.UUID | decimal.Decimal):
        return str(value)
    return _safe_repr(value)


def _safe_repr(value: object) -> str:
    """``repr`` that cannot raise: a span's data must never break the agent."""
    try:
        return repr(value)
    except Exception:
        return f"<unrepresentable {type(value).__name__}>"


# The C encoder json.dumps builds for each call, built once. No ``markers``: a cycle is caught
# as RecursionError instead of ValueError, and both take the same fallback in _dumps. Without
# markers the encoder keeps no state between calls, so threads may share it.
# A private API: where it is missing (not CPython) or takes other arguments (a TypeError on
# another Python), json.dumps does the work.
_encode: Callable[[object, int], list[str]] | None
try:
    from _json import make_encoder as _make_encoder

    _encode = _make_encoder(
        None, _convert, json.encoder.encode_basestring, None, ":", ",", False, False, False
    )
except (ImportError, TypeError):
    _encode = None


_INT64_MIN, _UINT64_MAX = -(1 << 63), (1 << 64) - 1


def _wide_ints(value: Any, seen: set[int]) -> Any:
    """``value`` with every integer beyond 64 bits (what orjson refuses) as its decimal text:
    JSON numbers that wide are not portable (decoders refuse or round them). ``value`` itself
    when it has none; a cycle is left for the encoder to find."""
    if type(value) is int:
        return value if _INT64_MIN <= value <= _UINT64_MAX else _decimal(value)
    if isinstance(value, dict | list | tuple | set | frozenset) and id(value) not in seen:
        seen.add(id(value))
        try:
            if isinstance(value, dict):
                items = {k: _wide_ints(v, seen) for k, v in value.items()}
                changed = any(items[k] is not v for k, v in value.items())
                return items if changed else value
            converted = [_wide_ints(v, seen) for v in value]
            if all(c is v for c, v in zip(converted, value, strict=True)):
                return value
            return converted if isinstance(value, list | tuple) else type(value)(converted)
        except RecursionError:
            return value
        finally:
            seen.discard(id(value))
    return value


def _decimal(value: int) -> str:
    """``str(value)``, also beyond Python's limit on integer-to-text conversion."""
    try:
        return str(value)
    except ValueError:
        chunk = 10**1000
        sign, value = ("-", -value) if value < 0 else ("", value)
        parts: list[str] = []
        while value >= chunk:
            value, low = divmod(value, chunk)
            parts.append(f"{low:01000d}")
        return sign + str(value) + "".join(reversed(parts))


def _sanitize(value: object, seen: set[int]) -> object:
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if value is None or isinstance(value, bool | int):
        return value
    if id(value) in seen:
        return "<cycle>"
    if isinstance(value, Mapping):
        seen.add(id(value))
        result = {_sanitize(str(k), seen): _sanitize(v, seen) for k, v in value.items()}
        seen.discard(id(value))
        return result
    if isinstance(value, list | tuple):
        seen.add(id(value))
        items = [_sanitize(v, seen) for v in value]
        seen.discard(id(value))
        return items
    converted = _convert(value)
    return _sanitize(converted, seen) if converted is not value else _safe_repr(value)
