"""The HTTP client under the SDK: httpx's API on aiohttp's transport.

scale-gp-beta offers aiohttp as its async backend ("for improved concurrency performance",
the ``scale-gp-beta[aiohttp]`` extra, through ``httpx-aiohttp``). Under the shipper it costs
about a third less CPU per upload than httpx's own httpcore/anyio stack, and shipping is
CPU-bound (docs/performance.md). Proxies from the environment still apply: httpx mounts a
transport of the same kind for each.

One change to aiohttp's behaviour: it sends an idempotent request (our ``PUT``) again, at once,
when the keep-alive connection it reused drops. tenacity is the shipper's one retry layer, so
that resend is off: every attempt is counted, persisted and backed off like any other.
"""

from __future__ import annotations

import ssl
from typing import Any

import aiohttp
import httpx
import httpx_aiohttp
from httpx._types import CertTypes
from typing_extensions import override

__all__ = ["http_client"]

_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)  # httpx's default


class _Transport(httpx_aiohttp.AiohttpTransport):
    def get_client(self) -> aiohttp.ClientSession:
        session = super().get_client()
        # No public switch; aiohttp's own test client (test_utils) sets it the same way.
        # Measured: without it two dropped connections cost one tenacity attempt, not two
        # (tests/test_shipper_upload.py::test_dropped_connections_cost_one_request_each, which
        # fails if aiohttp renames it; pyproject.toml bounds aiohttp below 3.15).
        session._retry_connection = False
        return session


class _Client(httpx_aiohttp.HttpxAiohttpClient):
    """Builds :class:`_Transport` wherever httpx-aiohttp would build its own."""

    @override
    def _init_transport(
        self,
        verify: ssl.SSLContext | str | bool = True,
        cert: CertTypes | None = None,
        trust_env: bool = True,
        http1: bool = True,
        http2: bool = False,
        limits: httpx.Limits = _LIMITS,
        transport: httpx.AsyncBaseTransport | None = None,
        **_: Any,
    ) -> httpx.AsyncBaseTransport:
        if transport is not None:
            return transport
        return _Transport(verify, cert, trust_env, http1, http2, limits)

    @override
    def _init_proxy_transport(
        self,
        proxy: httpx.Proxy,
        verify: ssl.SSLContext | str | bool = True,
        cert: CertTypes | None = None,
        trust_env: bool = True,
        http1: bool = True,
        http2: bool = False,
        limits: httpx.Limits = _LIMITS,
        **_: Any,
    ) -> httpx.AsyncBaseTransport:
        return _Transport(verify, cert, trust_env, http1, http2, limits, proxy=proxy)


def http_client(timeout: httpx.Timeout, limits: httpx.Limits) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` for ``AsyncSGPClient(http_client=...)`` on aiohttp."""
    return _Client(timeout=timeout, limits=limits)
