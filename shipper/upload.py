"""The upload seam: one request per batch, body built from the stored JSON.

:class:`SGPUploader` sends through the scale-gp-beta SDK's public client path,
``AsyncSGPClient.put`` with ``max_retries=0`` on every request; tests and users may pass any
object with the :class:`Uploader` shape instead.

Until 2026-12-03 requests after the first went straight to the transport (three private
attributes of the SDK and httpx). It saved a quarter of the client's CPU per event, but with
the endpoint 150 ms away it made no more events/s than this path on a quiet machine (1.00x),
so it went: docs/performance.md, "The upload path", has the runs; ``bench/ship.py --latency``
still measures it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar

import httpx
import scale_gp_beta

from ._errors import ShipperConfigError
from ._http import http_client
from .config import ENV_ACCOUNT_ID, ENV_API_KEY, ShipperConfig

__all__ = ["BATCH_PATH", "SGPUploader", "Uploader", "batch_body", "split_batches"]

BATCH_PATH = "/v5/spans/batch"
_BODY_OPEN, _BODY_CLOSE = b'{"items":[', b"]}"
_OPTIONS: scale_gp_beta.RequestOptions = {"headers": {"Content-Type": "application/json"}}


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
        http = http_client(
            timeout=httpx.Timeout(
                config.request_timeout, connect=min(10.0, config.request_timeout)
            ),
            limits=httpx.Limits(max_connections=config.concurrency + 2),
        )
        try:
            self._client = scale_gp_beta.AsyncSGPClient(
                api_key=config.api_key,
                account_id=config.account_id,
                base_url=config.base_url,
                max_retries=0,
                timeout=config.request_timeout,
                http_client=http,
            )
        except scale_gp_beta.SGPClientError as exc:
            raise ShipperConfigError(f"cannot ship: {exc}") from exc

    @property
    def base_url(self) -> str:
        return str(self._client.base_url)

    async def upload(self, body: bytes) -> None:
        await self._client.put(BATCH_PATH, cast_to=httpx.Response, content=body, options=_OPTIONS)

    async def aclose(self) -> None:
        await self._client.close()
