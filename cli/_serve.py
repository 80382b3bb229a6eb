"""``run --metrics-addr``: ``/metrics`` (Prometheus, through prometheus_client), ``/healthz``
and ``/readyz``, served from a thread beside the ship loop.

==========  ==================================================================================
path        answer
==========  ==================================================================================
/metrics    the families of ``status --format prometheus``, read from the spool at each scrape,
            plus what this shipper counted and has not written to the spool yet
/healthz    200 while the ship loop runs and made progress (claimed, looked for work, or sent a
            request) within its stall limit; 503 otherwise
/readyz     200 when the spool opens and its damage check passes; 503 with the reason otherwise
==========  ==================================================================================
"""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

__all__ = ["Check", "MetricsServer", "parse_addr"]

Check = Callable[[], tuple[bool, str]]
"""A probe: (healthy, one line saying why)."""


def parse_addr(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9464`` for IPv6; ``:9464`` for every interface)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:9464)")
    host = host.removeprefix("[").removesuffix("]")
    return host or "0.0.0.0", int(port)


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Probes every few seconds are not worth a log line each."""


@dataclass(slots=True)
class _App:
    metrics: Callable[..., Iterable[bytes]]
    health: Check
    ready: Check

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = environ.get("PATH_INFO", "")
        probe = {"/healthz": self.health, "/readyz": self.ready}.get(path)
        if probe is None:
            return self.metrics(environ, start_response)
        try:
            ok, why = probe()
        except Exception as exc:  # a probe that fails is a failed probe, not a dead server
            ok, why = False, f"probe failed: {exc}"
        start_response(
            "200 OK" if ok else "503 Service Unavailable",
            [("Content-Type", "text/plain; charset=utf-8")],
        )
        return [f"{'ok' if ok else 'fail'}: {why}\n".encode()]


class MetricsServer:
    """An HTTP server on ``(host, port)`` in a daemon thread; :meth:`close` stops it."""

    def __init__(
        self, addr: tuple[str, int], registry: CollectorRegistry, health: Check, ready: Check
    ) -> None:
        app = _App(make_wsgi_app(registry), health, ready)
        server_class = _Server6 if ":" in addr[0] else _Server
        self._server = make_server(
            addr[0], addr[1], app, server_class=server_class, handler_class=_QuietHandler
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="spool-ship-metrics", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
