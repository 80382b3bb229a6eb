"""``classify()``: every row of DESIGN.md's outcome table, on plain httpx responses and on the
exceptions the real SDK raises (through ``httpx.MockTransport``: a narrow unit test of the
boundary; the loop's tests speak to a real server)."""

from __future__ import annotations

import email.utils

import httpx
import pytest
import scale_gp_beta

from shipper import Action, Verdict, classify, parse_retry_after

URL = "http://127.0.0.1:9/v5/spans/batch"
NOW = 1_714_564_800.0  # 2024-05-01T12:00:00Z


def response(
    status: int, body: object = None, headers: dict[str, str] | None = None
) -> httpx.Response:
    request = httpx.Request("PUT", URL)
    if body is None:
        return httpx.Response(status, headers=headers, request=request)
    if isinstance(body, bytes):
        return httpx.Response(status, headers=headers, content=body, request=request)
    return httpx.Response(status, headers=headers, json=body, request=request)


TABLE = [
    (200, Action.ACK),
    (201, Action.ACK),
    (204, Action.ACK),
    (408, Action.RETRY),
    (429, Action.RETRY),
    (500, Action.RETRY),
    (502, Action.RETRY),
    (503, Action.RETRY),
    (504, Action.RETRY),
    (400, Action.BISECT),
    (409, Action.BISECT),
    (422, Action.BISECT),
    (413, Action.SPLIT),
    (401, Action.PAUSE),
    (403, Action.PAUSE),
    (404, Action.RETRY),  # a wrong base URL says nothing about the spans: never dead-letter
    (405, Action.RETRY),
]


@pytest.mark.parametrize(("status", "action"), TABLE)
def test_each_status_maps_to_its_action_with_the_endpoints_detail(
    status: int, action: Action
) -> None:
    verdict = classify(response(status, {"detail": f"because {status}"}), NOW)

    assert verdict.action is action
    assert verdict.status == (200 if action is Action.ACK else status)
    if action is not Action.ACK:
        assert verdict.detail == f"because {status}"
        assert verdict.describe() == f"HTTP {status}: because {status}"
        assert verdict.retry_after is None


@pytest.mark.parametrize(
    "body",
    [
        {"detail": "refused\n2026-12-03 INFO shipper forged\x1b[2J\u202e"},
        "refused\n2026-12-03 INFO shipper forged\x1b[2J\u202e".encode(),
    ],
    ids=["json", "text"],
)
def test_the_endpoints_detail_is_kept_printable(body: object) -> None:
    """It is logged and stored as the last error: a newline in it could forge a log line, an
    escape sequence rewrite the terminal of whoever reads it."""
    verdict = classify(response(422, body))

    assert verdict.detail == "refused\\x0a2026-12-03 INFO shipper forged\\x1b[2J\\u202e"


def test_detail_falls_back_to_message_error_and_plain_text() -> None:
    assert classify(response(409, {"message": "cycle"})).detail == "cycle"
    assert classify(response(409, {"error": "cycle"})).detail == "cycle"
    assert classify(response(422, {"detail": [{"loc": ["items", 0]}]})).detail == (
        "[{'loc': ['items', 0]}]"
    )
    assert classify(response(502, b"<html>bad gateway</html>")).detail == (
        "<html>bad gateway</html>"
    )
    assert classify(response(503)).detail == ""
    assert classify(response(503)).describe() == "HTTP 503"


def test_detail_is_bounded() -> None:
    verdict = classify(response(400, {"detail": "x" * 10_000}))
    assert verdict.action is Action.BISECT
    assert 0 < len(verdict.detail) <= 500


@pytest.mark.parametrize("status", [503, 429, 408, 500])
def test_retry_after_in_seconds(status: int) -> None:
    verdict = classify(response(status, {"detail": "busy"}, {"Retry-After": "7"}), NOW)
    assert verdict.action is Action.RETRY
    assert verdict.retry_after == 7.0


def test_retry_after_as_an_http_date_is_measured_from_now() -> None:
    date = email.utils.formatdate(NOW + 30, usegmt=True)
    verdict = classify(response(503, {"detail": "busy"}, {"Retry-After": date}), NOW)
    assert verdict.retry_after == pytest.approx(30.0)
    # A date in the past means "now", never a negative wait.
    assert classify(response(503, None, {"Retry-After": date}), NOW + 100).retry_after == 0.0


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [("0", 0.0), ("1.5", 1.5), (" 12 ", 12.0), ("-3", 0.0), ("soon", None), ("", None)],
)
def test_parse_retry_after(raw: str, seconds: float | None) -> None:
    assert parse_retry_after(httpx.Headers({"Retry-After": raw}), NOW) == seconds
    assert parse_retry_after(httpx.Headers({}), NOW) is None


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ConnectError("connection refused"),
        httpx.RemoteProtocolError("peer closed connection"),
        ConnectionResetError("reset by peer"),
    ],
)
def test_connection_errors_are_retried(exc: Exception) -> None:
    verdict = classify(exc)
    assert verdict == Verdict(Action.RETRY, None, f"connection error: {exc}")
    assert verdict.describe() == f"no response: connection error: {exc}"


@pytest.mark.parametrize(
    "exc", [httpx.ReadTimeout("read timed out"), httpx.ConnectTimeout("connect timed out")]
)
def test_timeouts_are_retried(exc: Exception) -> None:
    verdict = classify(exc)
    assert verdict.action is Action.RETRY
    assert verdict.status is None
    assert verdict.detail == f"timeout: {exc}"


def test_programming_errors_are_not_swallowed() -> None:
    with pytest.raises(KeyError):
        classify(KeyError("a bug"))


# -- the SDK's own exceptions, raised by a real AsyncSGPClient ------------------------------------


def sdk_client(handler: httpx.MockTransport) -> scale_gp_beta.SGPClient:
    return scale_gp_beta.SGPClient(
        api_key="k",
        account_id="a",
        base_url="http://127.0.0.1:9",
        max_retries=0,
        http_client=httpx.Client(transport=handler),
    )


def sdk_raise(answer: httpx.Response | Exception) -> BaseException:
    def handle(request: httpx.Request) -> httpx.Response:
        if isinstance(answer, Exception):
            raise answer
        return httpx.Response(
            answer.status_code, headers=answer.headers, content=answer.content, request=request
        )

    with sdk_client(httpx.MockTransport(handle)) as client:
        try:
            client.spans.upsert_batch(items=[])
        except Exception as exc:  # the SDK's exception is the subject here
            return exc
    raise AssertionError("the SDK did not raise")


@pytest.mark.parametrize(("status", "action"), [row for row in TABLE if row[0] >= 300])
def test_sdk_status_errors_carry_their_response(status: int, action: Action) -> None:
    exc = sdk_raise(response(status, {"detail": f"sdk {status}"}, {"Retry-After": "2"}))

    assert isinstance(exc, scale_gp_beta.APIStatusError)
    verdict = classify(exc, NOW)
    assert verdict.action is action
    assert verdict.status == status
    assert verdict.detail == f"sdk {status}"
    assert verdict.retry_after == 2.0


def test_sdk_connection_error_is_retried() -> None:
    exc = sdk_raise(httpx.ConnectError("connection refused"))

    assert isinstance(exc, scale_gp_beta.APIConnectionError)
    assert not isinstance(exc, scale_gp_beta.APITimeoutError)
    verdict = classify(exc)
    assert verdict.action is Action.RETRY
    assert verdict.status is None
    assert verdict.detail.startswith("connection error: ")


def test_sdk_timeout_is_retried() -> None:
    exc = sdk_raise(httpx.ReadTimeout("read timed out"))

    assert isinstance(exc, scale_gp_beta.APITimeoutError)
    verdict = classify(exc)
    assert verdict.action is Action.RETRY
    assert verdict.status is None
    assert verdict.detail.startswith("timeout: ")
