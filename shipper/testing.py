"""A real HTTP fake of Scale GP's ``PUT /v5/spans/batch``, for tests, demos and benchmarks.

`FakeSpanServer` listens on 127.0.0.1 (HTTP/1.1, keep-alive, a thread per connection) and answers
as the SDK documents the endpoint: upsert keyed by ``(trace_id, id)`` (a completed span is kept
over an in-progress one, otherwise the later wins; items without ``id`` get a uuid); 422 for a
body without an ``items`` list, more than 1000 items, a missing ``name``/``trace_id``/
``start_timestamp``, an ``end_timestamp`` before its ``start_timestamp``, or an ``id``/
``trace_id``/``parent_id``/``group_id`` over 256 characters; 400 naming the field for a NUL byte,
invalid UTF-8 or over 256 UTF-8 bytes in one of those four; 401 (or 403) for a wrong
``x-api-key``. Error bodies are ``{"detail": "..."}``; a 200 is a small ``APIListSpan``.

Faults are set on ``server.faults`` (`Faults`); records are read from the server::

    from scale_gp_beta import SGPClient, InternalServerError
    from shipper.testing import FakeSpanServer

    span = {"id": "s1", "trace_id": "t1", "name": "llm", "start_timestamp": "2025-01-01T00:00:00Z"}
    with FakeSpanServer(api_key="k") as server, SGPClient(
        base_url=server.base_url, api_key="k", account_id="acct", max_retries=0
    ) as client:
        server.faults.fail_next(1, status=503, retry_after=0.01)
        try:
            client.spans.upsert_batch(items=[span])
        except InternalServerError:
            client.spans.upsert_batch(items=[span])
        assert list(server.spans()) == [("t1", "s1")] and server.duplicates() == 0

Another process steers the same server through a JSON control API that needs no key and is
never faulted or hung:

- ``POST /_fake/faults`` with any of ``{"clear": true, "fail_next": {"n": 3, "status": 503,
  "retry_after": 0.1}, "drop_next": {"n": 1, "after_store": false}, "random": {"fail_rate": 0.3,
  "status": 503, "retry_after": 0.05, "drop_rate": 0.1, "seed": 7}, "latency": 0.01 | [lo, hi],
  "refuse": {"ids": ["span-1"], "status": 409}, "max_body_bytes": 65536 | null, "hang": bool,
  "fail_auth": 401 | 403 | null, "trickle": 0.05}`` (``clear`` applies first); a bad spec is a
  400.
- ``GET /_fake/stats`` (`ServerStats`), ``/_fake/requests``, ``/_fake/arrivals``,
  ``/_fake/spans``; ``POST /_fake/reset`` clears records and faults.

``python -m shipper.testing --port 8123 --fail-rate 0.3 --retry-after 0.05`` serves in the
foreground, prints ``SGP_CLIENT_BASE_URL=http://127.0.0.1:8123``, and on SIGTERM or SIGINT stops
and prints the final stats as one JSON line (``--help`` lists the other faults).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import random
import signal
import socket
import sys
import threading
import time
import urllib.parse
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .upload import BATCH_PATH

__all__ = [
    "BATCH_PATH",
    "Arrival",
    "FakeSpanServer",
    "Faults",
    "RequestRecord",
    "ServerStats",
    "SpanKind",
    "main",
]

MAX_ITEMS = 1000
MAX_ID_LENGTH = 256  # characters (422) and UTF-8 bytes (400)
ID_FIELDS = ("id", "trace_id", "parent_id", "group_id")
REQUIRED_FIELDS = ("name", "trace_id", "start_timestamp")
UNAVAILABLE = "service unavailable"
_Z95 = 1.6448536269514722  # the standard normal's 95th percentile

Item = dict[str, Any]
_Answer = tuple[int, object, float | None]  # status, JSON body, Retry-After seconds
ItemRule = Callable[[Item], bool]


class SpanKind(StrEnum):
    """Which event an arrival delivered: an in-progress span or a completed one."""

    START = "start"
    END = "end"


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One batch request: arrival index, status answered (None: dropped), items, arrival time."""

    index: int
    status: int | None
    item_count: int
    at: float  # time.monotonic() when the request arrived


@dataclass(frozen=True, slots=True)
class Arrival:
    """One accepted item, in arrival order."""

    trace_id: str
    span_id: str
    kind: SpanKind
    item: Item


@dataclass(frozen=True, slots=True)
class ServerStats:
    """Counters over the batch requests seen since start or the last reset."""

    requests: int  # received, including those still in progress
    in_flight: int
    by_status: Mapping[int, int]
    dropped: int  # connections closed without an answer
    connections: int  # TCP connections accepted (keep-alive reuses them)
    items_accepted: int
    spans: int
    completed: int
    duplicates: int
    order_violations: int


@dataclass(frozen=True, slots=True)
class _Failure:
    status: int
    retry_after: float | None
    detail: str


@dataclass(frozen=True, slots=True)
class _Drop:
    after_store: bool


@dataclass(frozen=True, slots=True)
class _Refusal:
    rule: ItemRule
    status: int
    detail: str


@dataclass(frozen=True, slots=True)
class _Config:
    fail_rate: float = 0.0
    random_failure: _Failure = _Failure(503, None, UNAVAILABLE)
    drop_rate: float = 0.0
    latency: tuple[float, float] = (0.0, 0.0)
    latency_sigma: float = 0.0  # > 0: latency[0] is the median of a lognormal
    capacity: tuple[int, _Failure] | None = None  # more batch requests in flight are refused
    refusals: tuple[_Refusal, ...] = ()
    max_body_bytes: int | None = None
    auth_failure: int | None = None
    trickle: float = 0.0


class Faults:
    """Thread-safe fault switches, read by every batch request; `clear()` turns them all off."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._gate = threading.Event()  # cleared while hanging
        self._config = _Config()  # replaced whole, so a request reads one consistent snapshot
        self._script: deque[_Failure | _Drop] = deque()
        self._rng = random.Random(0)
        self._gate.set()

    def clear(self) -> None:
        with self._lock:
            self._config, self._script, self._rng = _Config(), deque(), random.Random(0)
        self._gate.set()

    def fail_next(
        self,
        n: int,
        status: int = 503,
        *,
        retry_after: float | None = None,
        detail: str = UNAVAILABLE,
    ) -> None:
        """Answer the next ``n`` requests with ``status`` (and ``Retry-After`` when given)."""
        with self._lock:
            self._script.extend([_Failure(status, retry_after, detail)] * n)

    def drop_next(self, n: int, *, after_store: bool = False) -> None:
        """Close the next ``n`` connections without an answer, before or after storing the batch."""
        with self._lock:
            self._script.extend([_Drop(after_store)] * n)

    def set_random(
        self,
        *,
        fail_rate: float = 0.0,
        status: int = 503,
        retry_after: float | None = None,
        drop_rate: float = 0.0,
        seed: int = 0,
        detail: str = UNAVAILABLE,
    ) -> None:
        """Drop a fraction of requests (before storing) and answer a fraction with ``status``."""
        if not (0.0 <= fail_rate <= 1.0 and 0.0 <= drop_rate <= 1.0):
            raise ValueError("fail_rate and drop_rate must be within [0, 1]")
        failure = _Failure(status, retry_after, detail)
        with self._lock:
            self._rng = random.Random(seed)
            self._update(fail_rate=fail_rate, drop_rate=drop_rate, random_failure=failure)

    def set_capacity(
        self,
        limit: int | None,
        *,
        status: int = 429,
        retry_after: float | None = None,
        detail: str = "too many requests",
    ) -> None:
        """Answer ``status`` at once to a batch request arriving while ``limit`` others are in
        flight: a rate limiter in front of a backend that serves ``limit`` at a time. None: no
        limit."""
        if limit is not None and limit < 1:
            raise ValueError("capacity must be at least 1")
        failure = _Failure(status, retry_after, detail)
        self._update(capacity=None if limit is None else (limit, failure))

    def set_latency(
        self, seconds: float | tuple[float, float], *, p95: float | None = None
    ) -> None:
        """Delay answers by ``seconds``, or uniformly within ``(low, high)``; 0 turns it off.

        With ``p95``, ``seconds`` is the median of a lognormal whose 95th percentile is ``p95``
        (a real backend's long tail: ``set_latency(0.15, p95=0.33)``).
        """
        low, high = seconds if isinstance(seconds, tuple) else (seconds, seconds)
        if not 0.0 <= low <= high:
            raise ValueError("latency must satisfy 0 <= low <= high")
        sigma = 0.0
        if p95 is not None:
            if low != high or not 0.0 < low <= p95:
                raise ValueError("a lognormal latency needs 0 < median <= p95")
            sigma = math.log(p95 / low) / _Z95
        self._update(latency=(float(low), float(high)), latency_sigma=sigma)

    def refuse(
        self,
        rule: ItemRule | Iterable[str],
        *,
        status: int = 409,
        detail: str = "batch refused: forms a cycle or crosses traces",
    ) -> None:
        """Refuse whole any batch with an item matching ``rule`` (a predicate, or span ids)."""
        if callable(rule):
            predicate = rule
        else:
            ids = frozenset([rule] if isinstance(rule, str) else rule)
            predicate = lambda item: item.get("id") in ids  # noqa: E731
        with self._lock:
            self._update(refusals=(*self._config.refusals, _Refusal(predicate, status, detail)))

    def set_max_body_bytes(self, limit: int | None) -> None:
        """Answer 413 to bodies larger than ``limit`` bytes; None: no limit."""
        self._update(max_body_bytes=limit)

    def trickle(self, seconds_per_byte: float) -> None:
        """Send each answer a byte at a time, ``seconds_per_byte`` apart (a slow or stalled
        proxy: no single read waits long, the whole answer does); 0 turns it off."""
        if seconds_per_byte < 0:
            raise ValueError("seconds_per_byte must not be negative")
        self._update(trickle=float(seconds_per_byte))

    def hang(self) -> None:
        """Hold every batch request until `unhang()` or the server stops (which drops them)."""
        self._gate.clear()

    def unhang(self) -> None:
        self._gate.set()

    def fail_auth(self, status: int | None = 401) -> None:
        """Answer every request ``status`` as if its key were revoked; None restores normal auth."""
        self._update(auth_failure=status)

    def configure(self, spec: Mapping[str, Any]) -> None:
        """Apply a control-API fault spec (see the module docstring); raises on a bad spec."""
        actions: dict[str, Callable[[Any], object]] = {
            "clear": lambda on: self.clear() if on else None,
            "fail_next": lambda kwargs: self.fail_next(**kwargs),
            "drop_next": lambda kwargs: self.drop_next(**kwargs),
            "random": lambda kwargs: self.set_random(**kwargs),
            "latency": lambda s: self.set_latency(tuple(s) if isinstance(s, list) else s),
            "refuse": lambda kwargs: self.refuse(
                [str(i) for i in kwargs["ids"]], **{k: v for k, v in kwargs.items() if k != "ids"}
            ),
            "max_body_bytes": self.set_max_body_bytes,
            "hang": lambda on: self.hang() if on else self.unhang(),
            "trickle": self.trickle,
            "fail_auth": self.fail_auth,
        }
        unknown = set(spec) - set(actions)
        if unknown:
            raise ValueError(f"unknown fault keys: {sorted(unknown)}")
        for key in sorted(spec, key=lambda key: key != "clear"):  # clear first, then the rest
            actions[key](spec[key])

    def _update(self, **changes: Any) -> None:
        with self._lock:
            self._config = replace(self._config, **changes)

    def _draw(self) -> tuple[_Config, float, _Failure | _Drop | None]:
        with self._lock:
            config = self._config
            low, high = config.latency
            if config.latency_sigma:
                delay = self._rng.lognormvariate(math.log(low), config.latency_sigma)
            else:
                delay = low if low == high else self._rng.uniform(low, high)
            if self._script:
                return config, delay, self._script.popleft()
            if config.drop_rate and self._rng.random() < config.drop_rate:
                return config, delay, _Drop(after_store=False)
            if config.fail_rate and self._rng.random() < config.fail_rate:
                return config, delay, config.random_failure
            return config, delay, None


class FakeSpanServer:
    """The fake endpoint; a context manager that starts on enter and stops on exit.

    ``api_key``: when set, requests whose ``x-api-key`` differs get ``auth_status`` (401 or 403).
    ``record=False`` keeps counters only (no spans, arrivals or duplicate tracking), for long
    benchmarks. Every record method is safe to call while requests are being served.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        auth_status: int = 401,
        port: int = 0,
        record: bool = True,
    ) -> None:
        self.api_key, self.auth_status, self.record = api_key, auth_status, record
        self.faults = Faults()
        self._port = port
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._cond = threading.Condition(threading.RLock())
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._in_flight = 0
        self._reset_records()

    def _reset_records(self) -> None:
        with self._cond:
            self._received = self._dropped = self._opened = self._accepted = 0
            self._requests: list[RequestRecord] = []
            self._by_status: Counter[int] = Counter()
            self._spans: dict[tuple[str, str], Item] = {}
            self._arrivals: list[tuple[str, str, SpanKind, Item]] = []
            self._seen: set[tuple[str, str, SpanKind]] = set()
            self._duplicates = 0
            self._ended: set[tuple[str, str]] = set()
            self._violations: list[tuple[str, str]] = []

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FakeSpanServer:
        if self._httpd is not None:
            raise RuntimeError("FakeSpanServer is already running")
        self._stopping.clear()
        self._httpd = _HTTPServer(("127.0.0.1", self._port), _Handler)
        self._httpd.fake = self
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            args=(0.01,),  # the poll interval bounds how long stop() waits for the accept loop
            name="fake-span-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, drop hung and idle connections, and wait for their threads."""
        httpd, thread = self._httpd, self._thread
        if httpd is None or thread is None:
            return
        self._httpd = self._thread = None
        httpd.shutdown()
        httpd.server_close()
        with self._cond:
            self._stopping.set()
            connections = list(self._connections.items())
        self.faults._gate.set()
        for sock, _ in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for _, handler in connections:
            handler.join(timeout=5.0)
        thread.join()

    def __enter__(self) -> FakeSpanServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("FakeSpanServer is not running")
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``, for ``base_url=`` or ``SGP_CLIENT_BASE_URL``."""
        return f"http://127.0.0.1:{self.port}"

    def reset(self) -> None:
        """Clear the faults and every record."""
        self.faults.clear()
        self._reset_records()

    # -- records -----------------------------------------------------------------------------

    @property
    def request_count(self) -> int:
        """Batch requests received, including those still in progress."""
        with self._cond:
            return self._received

    def requests(self) -> list[RequestRecord]:
        """Finished batch requests, in the order they finished."""
        with self._cond:
            return list(self._requests)

    def arrivals(self) -> list[Arrival]:
        with self._cond:
            return [Arrival(*arrival) for arrival in self._arrivals]

    def spans(self) -> dict[tuple[str, str], Item]:
        """Stored spans keyed by ``(trace_id, id)``."""
        with self._cond:
            return dict(self._spans)

    def completed_ids(self) -> set[str]:
        with self._cond:
            return {key[1] for key, item in self._spans.items() if "end_timestamp" in item}

    def duplicates(self) -> int:
        """Arrivals that repeat an earlier ``(trace_id, id, kind)``: one sent 3 times counts 2."""
        with self._cond:
            return self._duplicates

    def order_violations(self) -> list[tuple[str, str]]:
        """``(trace_id, id)`` of spans whose start arrived after their end."""
        with self._cond:
            return list(self._violations)

    def stats(self) -> ServerStats:
        with self._cond:
            return ServerStats(
                requests=self._received,
                in_flight=self._in_flight,
                by_status=dict(self._by_status),
                dropped=self._dropped,
                connections=self._opened,
                items_accepted=self._accepted,
                spans=len(self._spans),
                completed=sum("end_timestamp" in item for item in self._spans.values()),
                duplicates=self.duplicates(),
                order_violations=len(self._violations),
            )

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Wait until ``predicate()`` holds, re-checked as requests arrive and finish."""
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    # -- called by the handler threads -------------------------------------------------------

    def _opened_connection(self, sock: socket.socket) -> None:
        with self._cond:
            if self._stopping.is_set():
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                return
            self._opened += 1
            self._connections[sock] = threading.current_thread()

    def _closed_connection(self, sock: socket.socket) -> None:
        with self._cond:
            self._connections.pop(sock, None)

    def _arrive(self) -> int:
        with self._cond:
            self._received += 1
            self._in_flight += 1
            self._cond.notify_all()
            return self._received - 1

    def _depart(self, index: int, at: float, status: int | None, item_count: int) -> None:
        with self._cond:
            self._in_flight -= 1
            self._requests.append(RequestRecord(index, status, item_count, at))
            if status is None:
                self._dropped += 1
            else:
                self._by_status[status] += 1
            self._cond.notify_all()

    def _store(self, items: list[Item]) -> list[Item]:
        with self._cond:
            self._accepted += len(items)
            for item in items:
                if "id" not in item:
                    item["id"] = str(uuid.uuid4())
                if not self.record:
                    continue
                key = (item["trace_id"], item["id"])
                kind = SpanKind.END if "end_timestamp" in item else SpanKind.START
                event = (*key, kind)
                self._arrivals.append((*event, item))
                if event in self._seen:
                    self._duplicates += 1
                else:
                    self._seen.add(event)
                if kind is SpanKind.END:
                    self._ended.add(key)
                elif key in self._ended:
                    self._violations.append(key)
                stored = self._spans.get(key)
                if stored is None or kind is SpanKind.END or "end_timestamp" not in stored:
                    self._spans[key] = item
        return [{"id": item["id"], "trace_id": item["trace_id"]} for item in items]


class _HTTPServer(ThreadingHTTPServer):
    fake: FakeSpanServer
    request_queue_size = 128  # the default 5 drops SYNs when a benchmark opens many connections

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hung up (timeout, stop) is expected here; anything else is a bug.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.fake._opened_connection(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.fake._closed_connection(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_PUT(self) -> None:
        body = self._read_body()
        # The absolute form ("PUT http://host/v5/spans/batch") is what a proxy receives: the
        # fake can stand in for one, to prove that the shipper honours HTTP_PROXY.
        if urllib.parse.urlsplit(self.path).path != BATCH_PATH:
            self._refuse_path()
            return
        fake = self.server.fake
        at, index = time.monotonic(), fake._arrive()
        try:
            payload: object = json.loads(body)
        except ValueError:
            payload = None
        items = payload.get("items") if isinstance(payload, dict) else None
        answer: _Answer | None = None
        try:
            answer = self._answer_batch(fake, body, payload)
        finally:  # recorded before answering: a client holding its answer can read the record
            status = answer[0] if answer else None
            fake._depart(index, at, status, len(items) if isinstance(items, list) else 0)
        if answer is None:
            self._drop()
        else:
            self._send(*answer)

    def _answer_batch(self, fake: FakeSpanServer, body: bytes, payload: object) -> _Answer | None:
        """Status, body and Retry-After for one batch request; None drops the connection."""
        faults = fake.faults
        faults._gate.wait()
        config, delay, scripted = faults._draw()
        if config.capacity is not None and fake._in_flight > config.capacity[0]:
            over = config.capacity[1]
            return over.status, {"detail": over.detail}, over.retry_after
        if fake._stopping.is_set() or (delay and fake._stopping.wait(delay)):
            return None
        if isinstance(scripted, _Failure):
            return scripted.status, {"detail": scripted.detail}, scripted.retry_after
        if isinstance(scripted, _Drop) and not scripted.after_store:
            return None
        auth_status = config.auth_failure
        if auth_status is None and fake.api_key is not None:
            auth_status = (
                None if self.headers.get("x-api-key") == fake.api_key else fake.auth_status
            )
        if auth_status is not None:
            return auth_status, {"detail": _AUTH_DETAILS.get(auth_status, "denied")}, None
        limit = config.max_body_bytes
        if limit is not None and len(body) > limit:
            detail = f"request body of {len(body)} bytes exceeds the limit of {limit}"
            return 413, {"detail": detail}, None
        checked = _check_batch(payload)
        if isinstance(checked, tuple):
            return checked[0], {"detail": checked[1]}, None
        for refusal in config.refusals:
            ids = [
                str(it.get("id", f"items[{i}]")) for i, it in enumerate(checked) if refusal.rule(it)
            ]
            if ids:
                return refusal.status, {"detail": f"{refusal.detail}: {', '.join(ids)}"}, None
        stored = fake._store(checked)
        return (
            None
            if isinstance(scripted, _Drop)
            else (200, {"object": "list", "items": stored}, None)
        )

    def do_GET(self) -> None:
        self._read_body()
        fake = self.server.fake
        reads: dict[str, Callable[[], object]] = {
            "/_fake/stats": lambda: asdict(fake.stats()),
            "/_fake/requests": lambda: [asdict(r) for r in fake.requests()],
            "/_fake/arrivals": lambda: [asdict(a) for a in fake.arrivals()],
            "/_fake/spans": lambda: list(fake.spans().values()),
        }
        read = reads.get(self.path.partition("?")[0])
        if read is None:
            self._refuse_path()
        else:
            self._send(200, read())

    def do_POST(self) -> None:
        body = self._read_body()
        fake = self.server.fake
        if self.path == "/_fake/reset":
            fake.reset()
            self._send(200, {"ok": True})
        elif self.path == "/_fake/faults":
            try:
                spec = json.loads(body or b"{}")
                fake.faults.configure(spec)
            except (TypeError, ValueError, KeyError, AttributeError) as exc:
                self._send(400, {"detail": f"bad fault spec: {exc}"})
            else:
                self._send(200, {"ok": True})
        else:
            self._refuse_path()

    def _refuse_path(self) -> None:
        status = 405 if self.path.partition("?")[0] == BATCH_PATH else 404
        self._send(status, {"detail": self.responses[status][0]})

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True  # chunked bodies are not parsed; the stream is unusable
            return b""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, status: int, payload: object, retry_after: float | None = None) -> None:
        body = json.dumps(payload, separators=(",", ":")).encode()
        reason = self.responses.get(status, ("",))[0]
        head = f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        head += f"Content-Length: {len(body)}\r\n"
        if retry_after is not None:
            seconds = int(retry_after) if retry_after == int(retry_after) else retry_after
            head += f"Retry-After: {seconds}\r\n"
        if self.close_connection:
            head += "Connection: close\r\n"
        answer = head.encode("latin-1") + b"\r\n" + body
        fake = self.server.fake
        on_batch = urllib.parse.urlsplit(self.path).path == BATCH_PATH
        interval = fake.faults._config.trickle if on_batch else 0.0
        if not interval:
            # One write: headers and body in separate small segments would meet Nagle + delayed
            # ACK.
            self.wfile.write(answer)
            return
        for index in range(len(answer)):
            if fake._stopping.wait(interval):
                self._drop()
                return
            self.wfile.write(answer[index : index + 1])
            self.wfile.flush()

    def _drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


_AUTH_DETAILS = {401: "Invalid API key", 403: "API key is not allowed for this account"}


def _check_batch(payload: object) -> list[Item] | tuple[int, str]:
    """The batch's items, or the status and body refusing it: any 422 before the first 400."""
    items = payload.get("items") if isinstance(payload, dict) else None
    if not isinstance(items, list):
        return 422, "body must be a JSON object with an 'items' list"
    if len(items) > MAX_ITEMS:
        return 422, f"batch of {len(items)} spans exceeds the limit of {MAX_ITEMS}"
    refusal: tuple[int, str] | None = None
    for index, item in enumerate(items):
        problem = _item_problem(item)
        if problem is not None and (problem[0] == 422 or refusal is None):
            refusal = problem[0], f"{_label(index, item)}: {problem[1]}"
            if problem[0] == 422:
                break
    return items if refusal is None else refusal


def _item_problem(item: object) -> tuple[int, str] | None:
    """Why the endpoint refuses one item: 422 (validation) first, else 400 (identity bytes)."""
    if not isinstance(item, dict):
        return 422, "must be an object"
    for name in REQUIRED_FIELDS:
        if name not in item:
            return 422, f"field required: {name}"
    if not isinstance(item["name"], str):
        return 422, "name must be a string"
    for name in ("name", "trace_id"):
        if item[name] == "":
            return 422, f"{name} must not be empty"
    encoding: tuple[int, str] | None = None
    for name in ID_FIELDS:
        value = item.get(name, "")
        if not isinstance(value, str):
            return 422, f"{name} must be a string"
        if len(value) > MAX_ID_LENGTH:
            return 422, f"{name} is longer than {MAX_ID_LENGTH} characters"
        if encoding is not None or (value.isascii() and "\x00" not in value):
            continue
        if "\x00" in value:
            encoding = 400, f"{name} contains a NUL byte"
        else:
            try:
                size = len(value.encode())
            except UnicodeEncodeError:
                size, encoding = 0, (400, f"{name} is not valid UTF-8")
            if size > MAX_ID_LENGTH:
                encoding = 400, f"{name} is {size} bytes in UTF-8, more than {MAX_ID_LENGTH}"
    start = _timestamp(item["start_timestamp"])
    if start is None:
        return 422, "start_timestamp must be an ISO-8601 datetime"
    if "end_timestamp" in item:
        end = _timestamp(item["end_timestamp"])
        if end is None:
            return 422, "end_timestamp must be an ISO-8601 datetime"
        if end < start:
            return 422, "end_timestamp precedes start_timestamp"
    return encoding


def _timestamp(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _label(index: int, item: object) -> str:
    span_id = item.get("id") if isinstance(item, dict) else None
    return f"items[{index}]" if span_id is None else f"items[{index}] (id {span_id!r})"


def _latency_arg(text: str) -> float | tuple[float, float]:
    low, _, high = text.partition(",")
    return (float(low), float(high)) if high else float(low)


def main(argv: Sequence[str] | None = None) -> int:
    """Run a `FakeSpanServer` in the foreground until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m shipper.testing", description=main.__doc__)
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--api-key", help="require this x-api-key")
    parser.add_argument("--auth-status", type=int, choices=(401, 403), default=401)
    parser.add_argument(
        "--fail-rate", type=float, default=0.0, help="fraction answered with an error"
    )
    parser.add_argument("--fail-status", type=int, default=503)
    parser.add_argument("--retry-after", type=float, help="seconds, sent with random failures")
    parser.add_argument("--drop-rate", type=float, default=0.0, help="fraction of requests dropped")
    parser.add_argument(
        "--capacity", type=int, help="N: refuse batch requests beyond N in flight (429)"
    )
    parser.add_argument("--latency", type=_latency_arg, default=0.0, help="SECONDS or LOW,HIGH")
    parser.add_argument(
        "--latency-p95", type=float, help="SECONDS: --latency is then a lognormal's median"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-body-bytes", type=int)
    parser.add_argument("--no-record", action="store_true", help="keep counters only")
    args = parser.parse_args(argv)

    # Recorded items survive the young GC generations and make each collection walk them;
    # a larger first threshold keeps ~2,000 batches/s affordable in this dedicated process.
    gc.set_threshold(50_000, 20, 20)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    server = FakeSpanServer(
        api_key=args.api_key,
        auth_status=args.auth_status,
        port=args.port,
        record=not args.no_record,
    )
    server.faults.set_random(
        fail_rate=args.fail_rate,
        status=args.fail_status,
        retry_after=args.retry_after,
        drop_rate=args.drop_rate,
        seed=args.seed,
    )
    server.faults.set_latency(args.latency, p95=args.latency_p95)
    server.faults.set_capacity(args.capacity, retry_after=args.retry_after)
    server.faults.set_max_body_bytes(args.max_body_bytes)
    with server:
        print(f"SGP_CLIENT_BASE_URL={server.base_url}", flush=True)
        stop.wait()
    print(json.dumps(asdict(server.stats())), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
