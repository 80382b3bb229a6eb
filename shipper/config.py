"""Shipper configuration: parsed once into a frozen value, from arguments or the environment.

Credentials and endpoint use the scale-gp-beta SDK's own variables; the shipper's tunables
have ``SPOOL_SHIP_*`` variables (see docs/shipping.md for what each does):

==================================  ==================  =======================
variable                            option              default
==================================  ==================  =======================
``SGP_API_KEY``                     ``api_key``         (required to ship)
``SGP_ACCOUNT_ID``                  ``account_id``      (required to ship)
``SGP_CLIENT_BASE_URL``             ``base_url``        the SDK's default
``SPOOL_SHIP_BATCH_SIZE``           ``batch_size``      50 (1 to 1000)
``SPOOL_SHIP_BATCH_MAX_BYTES``      ``batch_max_bytes`` 4 MiB
``SPOOL_SHIP_LINGER``               ``linger``          0.5 s
``SPOOL_SHIP_START_DELAY``          ``start_delay``     5 s
``SPOOL_SHIP_CONCURRENCY``          ``concurrency``     32 (the most in flight)
``SPOOL_SHIP_LEASE``                ``lease_seconds``   60 s
``SPOOL_SHIP_REQUEST_TIMEOUT``      ``request_timeout`` 30 s
``SPOOL_SHIP_BACKOFF_INITIAL``      ``backoff_initial`` 0.4 s
``SPOOL_SHIP_BACKOFF_MAX``          ``backoff_max``     20 s
``SPOOL_SHIP_RETRY_AFTER_CAP``      ``retry_after_cap`` 300 s
``SPOOL_SHIP_MAX_AGE``              ``max_age``         604800 s (7 days)
``SPOOL_SHIP_PRUNE_INTERVAL``       ``prune_interval``  60 s
``SPOOL_SHIP_CHECKPOINT_INTERVAL``  ``checkpoint_interval``  30 s
``SPOOL_SHIP_POLL_INTERVAL``        ``poll_interval``   0.25 s
==================================  ==================  =======================
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, TypeVar

__all__ = [
    "ENV_ACCOUNT_ID",
    "ENV_API_KEY",
    "ENV_BASE_URL",
    "ShipperConfig",
]

T = TypeVar("T")

ENV_API_KEY = "SGP_API_KEY"
ENV_ACCOUNT_ID = "SGP_ACCOUNT_ID"
ENV_BASE_URL = "SGP_CLIENT_BASE_URL"

MAX_BATCH_SIZE = 1000
MIN_BATCH_MAX_BYTES = 1024

# option name -> (environment variable, parser)
_TUNABLES: dict[str, tuple[str, Callable[[str], Any]]] = {
    "batch_size": ("SPOOL_SHIP_BATCH_SIZE", int),
    "batch_max_bytes": ("SPOOL_SHIP_BATCH_MAX_BYTES", int),
    "linger": ("SPOOL_SHIP_LINGER", float),
    "start_delay": ("SPOOL_SHIP_START_DELAY", float),
    "concurrency": ("SPOOL_SHIP_CONCURRENCY", int),
    "lease_seconds": ("SPOOL_SHIP_LEASE", float),
    "request_timeout": ("SPOOL_SHIP_REQUEST_TIMEOUT", float),
    "backoff_initial": ("SPOOL_SHIP_BACKOFF_INITIAL", float),
    "backoff_max": ("SPOOL_SHIP_BACKOFF_MAX", float),
    "retry_after_cap": ("SPOOL_SHIP_RETRY_AFTER_CAP", float),
    "max_age": ("SPOOL_SHIP_MAX_AGE", float),
    "prune_interval": ("SPOOL_SHIP_PRUNE_INTERVAL", float),
    "checkpoint_interval": ("SPOOL_SHIP_CHECKPOINT_INTERVAL", float),
    "poll_interval": ("SPOOL_SHIP_POLL_INTERVAL", float),
}


def base_url_problem(url: str) -> str | None:
    """What makes ``url`` one no request could go to, or None. Such a URL is a configuration
    error: retrying it as a connection error would only hide the typo.

    >>> base_url_problem("https://api.egp.scale.com") is None
    True
    >>> base_url_problem("htps//typo.example")
    'is not an http(s) URL with a host, e.g. https://api.egp.scale.com'
    """
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        return f"is not a URL ({exc})"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "is not an http(s) URL with a host, e.g. https://api.egp.scale.com"
    return None


@dataclass(frozen=True, slots=True)
class ShipperConfig:
    """Where and how to ship.

    >>> ShipperConfig(api_key="k", account_id="a", base_url="http://127.0.0.1:8000").batch_size
    50
    """

    api_key: str | None = field(default=None, repr=False)
    account_id: str | None = None
    base_url: str | None = None
    batch_size: int = 50
    batch_max_bytes: int = 4 * 1024 * 1024
    """A batch's stored payloads add up to at most this (a lone larger event goes alone), so a
    batch of large spans is split before the endpoint answers 413."""
    linger: float = 0.5
    start_delay: float = 5.0
    """A span's start is claimable only once it is this old: a span that ends sooner ships
    once, its end superseding the start; longer spans still show up in progress."""
    concurrency: int = 32
    """The most requests in flight; the adaptive controller (shipper.concurrency) picks how
    many below it, from round-trip times and back-pressure."""
    lease_seconds: float = 60.0
    request_timeout: float = 30.0
    backoff_initial: float = 0.4
    backoff_max: float = 20.0
    retry_after_cap: float = 300.0
    max_age: float = 7 * 86_400.0
    prune_interval: float = 60.0
    checkpoint_interval: float = 30.0
    poll_interval: float = 0.25
    """How often other processes' appends are looked for (one ``PRAGMA data_version``)."""

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= MAX_BATCH_SIZE:
            raise ValueError(f"batch_size must be 1 to {MAX_BATCH_SIZE}, got {self.batch_size}")
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {self.concurrency}")
        if self.batch_max_bytes < MIN_BATCH_MAX_BYTES:
            raise ValueError(
                f"batch_max_bytes must be at least {MIN_BATCH_MAX_BYTES} bytes, "
                f"got {self.batch_max_bytes}"
            )
        for name in (
            "linger",
            "start_delay",
            "backoff_initial",
            "retry_after_cap",
            "poll_interval",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.backoff_max < self.backoff_initial:
            raise ValueError("backoff_max must be at least backoff_initial")
        for name in ("lease_seconds", "request_timeout", "max_age"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.base_url is not None and (problem := base_url_problem(self.base_url)):
            raise ValueError(f"base_url={self.base_url!r} {problem}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> ShipperConfig:
        """Read credentials, endpoint and tunables from ``env``; ``overrides`` win."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {
            "api_key": env.get(ENV_API_KEY) or None,
            "account_id": env.get(ENV_ACCOUNT_ID) or None,
            "base_url": env.get(ENV_BASE_URL) or None,
        }
        for name, (variable, parse) in _TUNABLES.items():
            raw = env.get(variable)
            if raw:
                try:
                    values[name] = parse(raw.strip())
                except ValueError:
                    raise ValueError(f"{variable}={raw!r} is not a valid {name}") from None
        known = {f.name for f in fields(cls)}
        unknown = set(overrides) - known
        if unknown:
            raise TypeError(f"unknown shipper option(s): {', '.join(sorted(unknown))}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        url = values["base_url"]
        if overrides.get("base_url") is None and url and (problem := base_url_problem(url)):
            raise ValueError(f"{ENV_BASE_URL}={url!r} {problem}")
        return cls(**values)

    def with_options(self, **changes: Any) -> ShipperConfig:
        return replace(self, **changes)

    def redacted(self) -> dict[str, object]:
        """Every option, with the API key masked: safe for logs."""
        out: dict[str, object] = {f.name: getattr(self, f.name) for f in fields(self)}
        if self.api_key:
            out["api_key"] = "***"
        return out
