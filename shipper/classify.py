"""One place that maps every upload outcome to what the shipper does about it.

=====================================================  ============  ==========================
outcome                                                action        shipper
=====================================================  ============  ==========================
2xx                                                    ACK           mark the batch done
connection error, timeout, 408, 429, 5xx, other 4xx    RETRY         backoff, Retry-After floor
400, 409, 422                                          BISECT        isolate and dead-letter
413                                                    SPLIT         halve; a lone item is dead
401, 403                                               PAUSE         stop all shipping, probe
=====================================================  ============  ==========================

An unexpected 4xx (404, 405, ...) says more about the deployment (a wrong base URL) than about
the spans, so it is retried, never dead-lettered.
"""

from __future__ import annotations

import email.utils
import enum
import time
from collections.abc import Mapping
from dataclasses import dataclass

import httpx
import scale_gp_beta

from spool._text import printable

__all__ = ["Action", "Verdict", "classify", "parse_retry_after"]

_DETAIL_LIMIT = 500
# How far down a chain of `raise ... from` an outcome's cause is looked for.
_CAUSE_DEPTH = 8


class Action(enum.StrEnum):
    ACK = "ack"
    RETRY = "retry"
    BISECT = "bisect"
    SPLIT = "split"
    PAUSE = "pause"


@dataclass(frozen=True, slots=True)
class Verdict:
    """What one upload attempt came to: the action, and the endpoint's words for operators."""

    action: Action
    status: int | None = None
    detail: str = ""
    retry_after: float | None = None

    def describe(self) -> str:
        where = f"HTTP {self.status}" if self.status is not None else "no response"
        return f"{where}: {self.detail}" if self.detail else where


ACKED = Verdict(Action.ACK, 200)

_BY_STATUS = {
    400: Action.BISECT,
    409: Action.BISECT,
    422: Action.BISECT,
    413: Action.SPLIT,
    401: Action.PAUSE,
    403: Action.PAUSE,
}


def classify(outcome: httpx.Response | BaseException, now: float | None = None) -> Verdict:
    """The action for a response or for the exception an upload raised.

    SDK exceptions carry their response; httpx exceptions are transport failures.
    """
    if isinstance(outcome, scale_gp_beta.APIStatusError):
        return _from_response(outcome.response, now)
    if isinstance(outcome, httpx.Response):
        return _from_response(outcome, now)
    if isinstance(outcome, scale_gp_beta.APIConnectionError | httpx.TransportError | OSError):
        return _no_response(outcome)
    raise outcome


def _no_response(exc: BaseException) -> Verdict:
    """A timeout or a connection error, told apart by the innermost cause: the HTTP backend's
    own exception. (httpx-aiohttp maps a refused or dropped connection to a connect timeout;
    an operator needs to read "connection refused".)"""
    cause = exc
    for _ in range(_CAUSE_DEPTH):
        if cause.__cause__ is None:
            break
        cause = cause.__cause__
    if isinstance(cause, TimeoutError | httpx.TimeoutException | scale_gp_beta.APITimeoutError):
        return Verdict(Action.RETRY, None, f"timeout: {_text(cause)}")
    return Verdict(Action.RETRY, None, f"connection error: {_text(cause)}")


def _from_response(response: httpx.Response, now: float | None) -> Verdict:
    status = response.status_code
    if 200 <= status < 300:
        return ACKED
    action = _BY_STATUS.get(status, Action.RETRY)
    retry_after = parse_retry_after(response.headers, now)
    return Verdict(action, status, _detail(response), retry_after)


def _detail(response: httpx.Response) -> str:
    """What the endpoint said, as printable text: it is logged and stored as the last error."""
    return printable(_said(response))


def _said(response: httpx.Response) -> str:
    try:
        body = response.json()
    except (ValueError, httpx.ResponseNotRead):
        try:
            return response.text[:_DETAIL_LIMIT].strip()
        except httpx.ResponseNotRead:
            return ""
    if isinstance(body, Mapping):
        for key in ("detail", "message", "error"):
            if key in body:
                value = body[key]
                return (value if isinstance(value, str) else repr(value))[:_DETAIL_LIMIT]
    return repr(body)[:_DETAIL_LIMIT]


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    raw = headers.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _text(exc: BaseException) -> str:
    return printable(str(exc) or type(exc).__name__)
