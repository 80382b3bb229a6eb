"""The upload seam: one request per batch, body built from the stored JSON.

:class:`SGPUploader` sends through the scale-gp-beta SDK (``AsyncSGPClient``, retries off);
tests and users may pass any object with the :class:`Uploader` shape instead.

After the first request, requests go straight to the transport, built from that first one
(three private attributes: the SDK's ``_make_status_error_from_response`` and
``_idempotency_header``, httpx's ``AsyncClient._transport_for_url``; pyproject.toml bounds both
libraries). Measured against the SDK's public ``put`` on every request: a quarter less client
CPU per event; with the endpoint 150 ms away 1.09x to 1.54x the events/s on a CPU-starved
machine but 0.92x on the least loaded run; without it the loopback goals were missed (0.47x
raw httpx, 4.85x the SDK, against 0.58x and 6.75x). docs/performance.md, "The upload path",
has every run. Every test that ships goes through it, so a rename upstream fails them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import httpx
import scale_gp_beta

from ._errors import ShipperConfigError
from ._http import http_client
from .config import ENV_ACCOUNT_ID, ENV_API_KEY, ShipperConfig

__all__ = ["BATCH_PATH", "SGPUploader", "Uploader", "batch_body", "split_batches"]

BATCH_PATH = "/v5/spans/batch"


@dataclass(frozen=True, slots=True)
class _Template:
    """The parts of the SDK's batch request that are the same for every batch."""

    url: httpx.URL
    headers: list[tuple[bytes, bytes]]
    extensions: dict[str, Any]
    transport: httpx.AsyncBaseTransport  # the client's, or its proxy's, for this URL


_BODY_OPEN, _BODY_CLOSE = b'{"items":[', b"]}"


def batch_body(payloads: Sequence[bytes]) -> bytes:
    """The request body for stored span payloads, byte for byte as they were spooled."""
    return _BODY_OPEN + b",".join(payloads) + _BODY_CLOSE


class _Stored(Protocol):
    @property
    def payload(self) -> bytes: ...


E = TypeVar("E", bound=_Stored)


def split_batches(events: Sequence[E], size: int, max_bytes: int) -> list[list[E]]:
    """``events`` in order, cut into batches of at most ``size`` events whose
    :func:`batch_body` is at most ``max_bytes`` long; an event too large for any batch goes
    alone (the endpoint's 413 then dead-letters it).

    >>> from types import SimpleNamespace as Event
    >>> events = [Event(payload=b"x" * n) for n in (40, 40, 40, 200, 10)]
    >>> [[len(e.payload) for e in batch] for batch in split_batches(events, 50, 100)]
    [[40, 40], [40], [200], [10]]
    """
    batches: list[list[E]] = []
    batch: list[E] = []
    length = 0
    for event in events:
        # The body grows by the payload, plus a comma after the first.
        grown = length + len(event.payload) + (1 if batch else len(_BODY_OPEN + _BODY_CLOSE))
        if batch and (len(batch) == size or grown > max_bytes):
            batches.append(batch)
            batch = []
            grown = len(event.payload) + len(_BODY_OPEN + _BODY_CLOSE)
        batch.append(event)
        length = grown
    if batch:
        batches.append(batch)
    return batches


class Uploader(Protocol):
    """Sends one batch. Returns on 2xx; raises the SDK's or httpx's exception otherwise."""

    async def upload(self, body: bytes) -> None: ...

    async def aclose(self) -> None: ...


class SGPUploader:
    """``PUT /v5/spans/batch`` through ``scale_gp_beta.AsyncSGPClient`` with ``max_retries=0``:
    tenacity in the shipper is the only retry layer."""

    def __init__(self, config: ShipperConfig) -> None:
        missing = [
            name
            for name, value in ((ENV_API_KEY, config.api_key), (ENV_ACCOUNT_ID, config.account_id))
            if not value
        ]
        if missing:
            raise ShipperConfigError(
                f"cannot ship: {' and '.join(missing)} not set (pass them or set the variables)"
            )
        self._http = http_client(
            timeout=httpx.Timeout(
                config.request_timeout, connect=min(10.0, config.request_timeout)
            ),
            limits=httpx.Limits(max_connections=config.concurrency + 2),
        )
        self._http.event_hooks = {"request": [self._keep_template]}
        try:
            self._client = scale_gp_beta.AsyncSGPClient(
                api_key=config.api_key,
                account_id=config.account_id,
                base_url=config.base_url,
                max_retries=0,
                timeout=config.request_timeout,
                http_client=self._http,
            )
        except scale_gp_beta.SGPClientError as exc:
            raise ShipperConfigError(f"cannot ship: {exc}") from exc
        self._options: dict[str, object] = {"headers": {"Content-Type": "application/json"}}
        self._template: _Template | None = None

    @property
    def base_url(self) -> str:
        return str(self._client.base_url)

    async def upload(self, body: bytes) -> None:
        template = self._template
        if template is None:
            await self._client.put(
                BATCH_PATH,
                cast_to=httpx.Response,
                content=body,
                options=self._options,  # type: ignore[arg-type]
            )
            return
        # What the SDK's request path does with retries off, minus the per-call work that
        # comes out the same every time (options, headers) and httpx's client layer (auth,
        # redirects, cookie extraction, event hooks), which this API does not use.
        request = httpx.Request(
            "PUT",
            template.url,
            content=body,
            headers=template.headers,
            extensions=template.extensions,
        )
        try:
            response = await template.transport.handle_async_request(request)
            try:
                if response.is_success and isinstance(response.stream, httpx.AsyncByteStream):
                    # Read to the end, so the connection is kept for the next request; the
                    # body itself is not needed (httpx's decoding layers are skipped).
                    async for _ in response.stream:
                        pass
                else:
                    await response.aread()  # the endpoint's detail, for classify()
            finally:
                await response.aclose()
        except httpx.TimeoutException as exc:
            raise scale_gp_beta.APITimeoutError(request=request) from exc
        except Exception as exc:
            raise scale_gp_beta.APIConnectionError(request=request) from exc
        if not response.is_success:
            raise self._client._make_status_error_from_response(response) from None

    async def _keep_template(self, request: httpx.Request) -> None:
        """Keep the first request the SDK sends: every later one differs only in its body. Not
        when the SDK sends a per-request idempotency key: then every request takes its path."""
        if self._template is None and self._client._idempotency_header is None:
            headers = [(k, v) for k, v in request.headers.raw if k.lower() != b"content-length"]
            transport = self._http._transport_for_url(request.url)
            self._template = _Template(request.url, headers, dict(request.extensions), transport)
            self._http.event_hooks = {"request": [], "response": []}

    async def aclose(self) -> None:
        await self._client.close()
