"""The upload path: what goes on the wire, and tenacity as the single retry layer.

Every request goes through the shipper's default ``SGPUploader`` (the real scale-gp-beta
client) to a real HTTP server on 127.0.0.1. Sleeps are injected and recorded, never waited.
"""

from __future__ import annotations

import logging
import socket
import threading
import warnings
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from conftest import (
    SHIP_ACCOUNT,
    SHIP_KEY,
    RecordedSleeps,
    run_async,
    span_events,
)

from shipper import (
    DrainResult,
    Shipper,
    ShipperConfig,
    ShipperConfigError,
    StopReason,
    _http,
    batch_body,
)
from shipper.testing import FakeSpanServer
from spool import EventKind, EventRecord, EventState, NewEvent, Spool, SpoolConfig

END = EventKind.END


class _Capture(BaseHTTPRequestHandler):
    """Keeps each request's raw body and headers; answers like a successful upsert."""

    protocol_version = "HTTP/1.1"
    server: CaptureServer

    def do_PUT(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.seen.append((self.path, dict(self.headers.items()), body))
        answer = b'{"object":"list","items":[]}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: object) -> None:
        return


class CaptureServer(ThreadingHTTPServer):
    seen: list[tuple[str, dict[str, str], bytes]]


@pytest.fixture
def capture() -> Iterator[CaptureServer]:
    """A loopback server that records bodies exactly as they arrived on the socket."""
    server = CaptureServer(("127.0.0.1", 0), _Capture)
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def drain(
    spool: SpoolConfig, config: ShipperConfig, sleeps: RecordedSleeps | None = None
) -> DrainResult:
    async def main() -> DrainResult:
        async with Shipper(spool, config, sleep=sleeps) as shipper:
            return await shipper.drain(timeout=30)

    return run_async(main())


def spooled(tmp_path: Path, span_ids: list[str]) -> SpoolConfig:
    """A spool under ``tmp_path`` holding an END event for each of ``span_ids``."""
    spool = SpoolConfig(path=tmp_path / "spool.db")
    with Spool.open(spool) as opened:
        opened.append(span_events(span_ids, END))
    return spool


def records(spool: SpoolConfig) -> list[EventRecord]:
    with Spool.open(spool) as opened:
        return list(opened.export(list(EventState)))


# -- the body ----------------------------------------------------------------------------------

# Valid JSON that a re-serializer would change: spacing, key order, escapes, raw UTF-8, a
# float with more digits than a double, a duplicate-free but unusual nesting.
ODD_PAYLOADS = [
    b'{ "trace_id" : "t-1", "id":"a", "name":"caf\\u00e9",'
    b' "start_timestamp":"2024-05-01T12:00:00Z", "end_timestamp":"2024-05-01T12:00:01Z"}',
    '{"name":"café ☕","id":"b","trace_id":"t-1","start_timestamp":"2024-05-01T12:00:00Z",'
    '"end_timestamp":"2024-05-01T12:00:01Z","metadata":{"x":1.00000000000000000001}}'.encode(),
    b'{"name":"c","id":"c","trace_id":"t-1","start_timestamp":"2024-05-01T12:00:00.000000+00:00",'
    b'"end_timestamp":"2024-05-01T12:00:01Z","input":{"list":[1,2,{"deep":null}]}}',
]


def test_the_body_on_the_wire_is_the_stored_payloads_joined_byte_for_byte(
    tmp_path: Path, capture: CaptureServer
) -> None:
    spool = SpoolConfig(path=tmp_path / "spool.db")
    with Spool.open(spool) as opened:
        opened.append(
            [NewEvent(s, "t-1", END, p) for s, p in zip("abc", ODD_PAYLOADS, strict=True)]
        )
    config = ShipperConfig(
        api_key=SHIP_KEY,
        account_id=SHIP_ACCOUNT,
        base_url=f"http://127.0.0.1:{capture.server_address[1]}",
        linger=0,
        batch_size=1,
        concurrency=1,
    )

    result = drain(spool, config)

    assert result.exit_code == 0
    # Three batches, three requests, each body exactly the stored payloads.
    assert [body for _, _, body in capture.seen] == [
        b'{"items":[' + payload + b"]}" for payload in ODD_PAYLOADS
    ]
    assert capture.seen[1][2] == batch_body(ODD_PAYLOADS[1:2])
    for path, headers, _ in capture.seen:
        assert path == "/v5/spans/batch"
        lower = {k.lower(): v for k, v in headers.items()}
        assert lower["content-type"] == "application/json"
        assert lower["x-api-key"] == SHIP_KEY
        assert lower["x-selected-account-id"] == SHIP_ACCOUNT


def test_batches_keep_spool_order_and_the_fake_stores_what_was_sent(
    tmp_path: Path, span_server: FakeSpanServer, ship_config: ShipperConfig
) -> None:
    spool = SpoolConfig(path=tmp_path / "spool.db")
    ids = [f"s{i:03}" for i in range(120)]
    with Spool.open(spool) as opened:
        opened.append(span_events(ids, END))

    result = drain(spool, ship_config.with_options(batch_size=50, concurrency=1))

    assert result.exit_code == 0
    assert result.shipped == 120
    assert [r.item_count for r in span_server.requests()] == [50, 50, 20]
    assert [a.span_id for a in span_server.arrivals()] == ids


def test_uploads_keep_one_connection_alive(
    tmp_path: Path, span_server: FakeSpanServer, ship_config: ShipperConfig
) -> None:
    """The endpoint answers every batch with the stored spans (some 25 kB here), as the real
    one does; the SDK's first request and the later ones share one keep-alive connection."""
    spool = spooled(tmp_path, [f"s{i:03}" for i in range(200)])

    result = drain(spool, ship_config.with_options(batch_size=50, concurrency=1))

    assert (result.exit_code, result.shipped) == (0, 200)
    stats = span_server.stats()
    assert (stats.requests, stats.connections) == (4, 1)


# -- one retry layer -----------------------------------------------------------------------------


def test_sdk_retries_are_off_each_503_costs_one_request_per_tenacity_attempt(
    tmp_path: Path, span_server: FakeSpanServer, ship_config: ShipperConfig
) -> None:
    spool = spooled(tmp_path, ["a", "b"])
    span_server.faults.fail_next(3, status=503)
    sleeps = RecordedSleeps()

    result = drain(spool, ship_config, sleeps)

    assert result.exit_code == 0
    # The SDK's own retries (2 by default, with its own sleeps) would absorb the 503s silently:
    # here every failure is one request and one tenacity wait.
    assert span_server.request_count == 4
    assert span_server.stats().by_status == {503: 3, 200: 1}
    assert len(sleeps.waits) == 3
    assert [r.attempts for r in records(spool)] == [3, 3]
    assert all(r.last_error == "HTTP 503: service unavailable" for r in records(spool))


def test_dropped_connections_cost_one_request_each(
    tmp_path: Path, span_server: FakeSpanServer, ship_config: ShipperConfig
) -> None:
    spool = spooled(tmp_path, ["a"])
    span_server.faults.drop_next(2)
    sleeps = RecordedSleeps()

    result = drain(spool, ship_config, sleeps)

    assert result.exit_code == 0
    assert span_server.request_count == 3
    assert span_server.stats().dropped == 2
    assert len(sleeps.waits) == 2
    (record,) = records(spool)
    assert record.attempts == 2
    assert record.last_error is not None
    assert record.last_error.startswith("no response: connection error")


def test_an_unanswered_request_times_out_and_is_recorded_as_a_timeout(
    tmp_path: Path, span_server: FakeSpanServer, ship_config: ShipperConfig
) -> None:
    spool = spooled(tmp_path, ["a"])
    span_server.faults.hang()

    result = drain(spool, ship_config.with_options(request_timeout=0.2), RecordedSleeps())

    assert (result.exit_code, result.reason) == (1, StopReason.UNREACHABLE)
    assert result.detail is not None
    assert result.detail.startswith("no response: timeout: "), result.detail
    (record,) = records(spool)
    assert record.state is EventState.PENDING
    assert record.last_error == result.detail


def test_a_refused_connection_is_recorded_as_a_connection_error(tmp_path: Path) -> None:
    """Not as a timeout: httpx-aiohttp maps a refused connection to ConnectTimeout; classify
    reads the cause, and the operator reads what happened."""
    spool = spooled(tmp_path, ["a"])
    with socket.socket() as unbound:
        unbound.bind(("127.0.0.1", 0))
        port = unbound.getsockname()[1]
    config = ShipperConfig(
        api_key=SHIP_KEY, account_id=SHIP_ACCOUNT, base_url=f"http://127.0.0.1:{port}"
    )

    result = drain(spool, config, RecordedSleeps())

    assert (result.exit_code, result.reason) == (1, StopReason.UNREACHABLE)
    assert result.detail is not None
    assert result.detail.startswith("no response: connection error: "), result.detail
    assert "refused" in result.detail.lower() or "connect call failed" in result.detail.lower()


@pytest.mark.parametrize("proxied", [False, True], ids=["direct", "proxied"])
def test_aiohttp_carries_every_upload_directly_and_through_the_proxy_from_the_environment(
    tmp_path: Path, span_server: FakeSpanServer, monkeypatch: pytest.MonkeyPatch, *, proxied: bool
) -> None:
    """Proxied: HTTP_PROXY names the fake endpoint, which answers the absolute-form request a
    proxy receives; the base URL's host does not resolve, so only the proxy can have delivered.

    shipper._http puts aiohttp's transport under httpx by overriding httpx's private
    ``AsyncClient._init_transport`` and ``_init_proxy_transport`` (pyproject.toml bounds
    httpx). Were httpx to stop calling them, its own transport would carry the uploads
    silently, at a third more CPU per upload: the count of requests aiohttp sent fails here."""
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    base_url = span_server.base_url
    if proxied:
        monkeypatch.setenv("HTTP_PROXY", span_server.base_url)
        base_url = "http://spans.example.invalid"
    else:
        monkeypatch.delenv("HTTP_PROXY", raising=False)
        monkeypatch.delenv("http_proxy", raising=False)
    through_aiohttp: list[httpx.URL] = []
    send = _http._Transport.handle_async_request

    async def counted(transport: _http._Transport, request: httpx.Request) -> httpx.Response:
        through_aiohttp.append(request.url)
        return await send(transport, request)

    monkeypatch.setattr(_http._Transport, "handle_async_request", counted)
    spool = spooled(tmp_path, ["a", "b", "c"])
    config = ShipperConfig(
        api_key=SHIP_KEY, account_id=SHIP_ACCOUNT, base_url=base_url, batch_size=1, linger=0
    )

    result = drain(spool, config, RecordedSleeps())

    assert result.exit_code == 0, result
    assert span_server.completed_ids() == {"a", "b", "c"}
    assert span_server.request_count == 3
    assert [str(url) for url in through_aiohttp] == [f"{base_url}/v5/spans/batch"] * 3


def test_what_the_endpoint_and_the_span_say_cannot_forge_a_log_line(
    tmp_path: Path,
    span_server: FakeSpanServer,
    ship_config: ShipperConfig,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An endpoint's detail and a span's id reach the log and the stored last error: newlines
    and escape sequences in them are shown escaped, never written raw."""
    forged = "\n2026-12-03 21:00:00 INFO shipper shipped n=50\x1b[2K"
    spool = spooled(tmp_path, ["span" + forged])
    span_server.faults.fail_next(1, status=422, detail="refused" + forged)

    with caplog.at_level(logging.INFO, logger="shipper"):
        result = drain(spool, ship_config, RecordedSleeps())

    assert (result.exit_code, result.dead_lettered) == (2, 1)  # 2: some dead
    (record,) = records(spool)
    escaped = "\\x0a2026-12-03 21:00:00 INFO shipper shipped n=50\\x1b[2K"
    assert record.last_error == "HTTP 422: refused" + escaped
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("shipper")]
    assert any(f"span_id=span{escaped}" in line for line in lines), lines
    assert not [line for line in lines if "\n" in line or "\x1b" in line]


@pytest.mark.parametrize(
    ("retry_after", "cap", "expected"),
    [
        (3, 300.0, 3.0),  # Retry-After is a floor above the backoff
        (3, 1.5, 1.5),  # and capped by retry_after_cap
        (120, 300.0, 120.0),
    ],
)
def test_retry_after_is_a_floor_and_is_capped(
    tmp_path: Path,
    span_server: FakeSpanServer,
    ship_config: ShipperConfig,
    *,
    retry_after: float,
    cap: float,
    expected: float,
) -> None:
    spool = spooled(tmp_path, ["a"])
    span_server.faults.fail_next(1, status=503, retry_after=retry_after)
    sleeps = RecordedSleeps()
    config = ship_config.with_options(backoff_initial=0.01, backoff_max=0.05, retry_after_cap=cap)

    assert drain(spool, config, sleeps).exit_code == 0
    assert sleeps.waits == [expected]


@pytest.mark.parametrize("status", [429, 503])
def test_a_short_retry_after_does_not_shorten_the_backoff(
    tmp_path: Path, span_server: FakeSpanServer, ship_config: ShipperConfig, status: int
) -> None:
    spool = spooled(tmp_path, ["a"])
    span_server.faults.fail_next(1, status=status, retry_after=1)
    sleeps = RecordedSleeps()
    config = ship_config.with_options(backoff_initial=2.0, backoff_max=10.0)

    assert drain(spool, config, sleeps).exit_code == 0
    (wait,) = sleeps.waits
    assert 2.0 <= wait <= 4.0


def test_backoff_grows_from_initial_to_max_with_jitter(
    tmp_path: Path, span_server: FakeSpanServer, ship_config: ShipperConfig
) -> None:
    spool = spooled(tmp_path, ["a"])
    failures = 7  # one short of the drain's patience
    span_server.faults.fail_next(failures, status=502)
    sleeps = RecordedSleeps()
    initial, maximum = 1.0, 10.0
    config = ship_config.with_options(backoff_initial=initial, backoff_max=maximum)

    assert drain(spool, config, sleeps).exit_code == 0

    assert len(sleeps.waits) == failures
    for attempt, wait in enumerate(sleeps.waits, start=1):
        base = initial * 2 ** (attempt - 1)
        assert min(base, maximum) <= wait <= min(base + initial, maximum), (attempt, wait)
    assert sleeps.waits == sorted(sleeps.waits)
    assert sleeps.waits[-3:] == [maximum] * 3
    # Jitter: the uncapped waits are not the bare powers of two.
    assert all(wait != initial * 2**n for n, wait in enumerate(sleeps.waits[:3]))


def test_a_shipper_is_built_without_warnings(tmp_path: Path, ship_config: ShipperConfig) -> None:
    # filterwarnings=error turns any warning into a failure; checked on its own so a
    # deprecation in a dependency shows up here by name, not as every other test failing.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Shipper(SpoolConfig(path=tmp_path / "spool.db"), ship_config)
    assert [str(w.message) for w in caught] == []


def test_missing_credentials_are_a_clear_error(tmp_path: Path) -> None:
    spool = SpoolConfig(path=tmp_path / "spool.db")

    async def main() -> None:
        async with Shipper(spool, ShipperConfig(account_id="a", base_url="http://127.0.0.1:9")):
            pass

    with pytest.raises(ShipperConfigError, match="SGP_API_KEY"):
        run_async(main())
