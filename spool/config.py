"""Spool configuration: parsed once, from arguments or the environment, into a frozen value.

Every option has a documented environment variable (see docs/configuration.md):

============================  ====================  =========================================
variable                      option                default
============================  ====================  =========================================
``SPOOL_SHIP_PATH``           ``path``              ``$XDG_STATE_HOME/spool-ship/spool.db``
``SPOOL_SHIP_MAX_BYTES``      ``max_bytes``         the limit stored in the spool, else 1 GiB
``SPOOL_SHIP_FULL_POLICY``    ``full_policy``       ``refuse``
``SPOOL_SHIP_SYNCHRONOUS``    ``synchronous``       ``NORMAL``
``SPOOL_SHIP_BUSY_TIMEOUT``   ``busy_timeout``      30 s
``SPOOL_SHIP_RETENTION``      ``retention``         86400 s (done rows kept a day)
``SPOOL_SHIP_MAX_EVENT_BYTES``  ``max_event_bytes``   1 MiB
``SPOOL_SHIP_RESERVE_BYTES``  ``reserve_bytes``     8 MiB (disk kept for shipping; 0: none)
============================  ====================  =========================================

Sizes take units: ``1GiB``, ``500MB``, ``64KiB``, or plain bytes (:func:`parse_size`).
"""

from __future__ import annotations

import enum
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

__all__ = [
    "ENV_BUSY_TIMEOUT",
    "ENV_FULL_POLICY",
    "ENV_MAX_BYTES",
    "ENV_MAX_EVENT_BYTES",
    "ENV_PATH",
    "ENV_RESERVE_BYTES",
    "ENV_RETENTION",
    "ENV_SYNCHRONOUS",
    "FullPolicy",
    "SpoolConfig",
    "Synchronous",
    "default_spool_path",
    "parse_size",
]

ENV_PATH = "SPOOL_SHIP_PATH"
ENV_MAX_BYTES = "SPOOL_SHIP_MAX_BYTES"
ENV_FULL_POLICY = "SPOOL_SHIP_FULL_POLICY"
ENV_SYNCHRONOUS = "SPOOL_SHIP_SYNCHRONOUS"
ENV_BUSY_TIMEOUT = "SPOOL_SHIP_BUSY_TIMEOUT"
ENV_RETENTION = "SPOOL_SHIP_RETENTION"
ENV_MAX_EVENT_BYTES = "SPOOL_SHIP_MAX_EVENT_BYTES"
ENV_RESERVE_BYTES = "SPOOL_SHIP_RESERVE_BYTES"

T = TypeVar("T")

GIB = 1 << 30
MIB = 1 << 20
DEFAULT_MAX_BYTES = GIB

_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]i?b|b)?", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1,
    **{f"{p}b": 1000**i for i, p in enumerate("kmgt", 1)},
    **{f"{p}ib": 1024**i for i, p in enumerate("kmgt", 1)},
}


def parse_size(text: str | int) -> int:
    """Bytes in ``text``: ``1048576``, ``1MiB``, ``500MB``, ``64 KiB``, ``1.5GiB``.

    ``KiB``/``MiB``/``GiB``/``TiB`` are powers of 1024, ``kB``/``MB``/``GB``/``TB`` of 1000.

    >>> parse_size("1MiB"), parse_size("500MB")
    (1048576, 500000000)
    """
    raw = str(text).strip()
    match = _SIZE.fullmatch(raw)
    if match is None:
        raise ValueError(
            f"{text!r} is not a size; use bytes or a number with a unit: 1048576, 64KiB, 1MiB, "
            "500MB, 1GiB"
        )
    number, unit = match.groups()
    size = float(number) * _SIZE_UNITS[(unit or "b").lower()]
    if not math.isfinite(size) or size != int(size):
        raise ValueError(f"{text!r} is not a whole number of bytes")
    return int(size)


class Synchronous(enum.StrEnum):
    """SQLite's ``synchronous`` setting for the spool.

    NORMAL survives a crash of the process (SIGKILL, OOM); a power cut or kernel crash may
    lose the last commits. FULL also survives those, at the cost of an fsync per commit.
    """

    NORMAL = "NORMAL"
    FULL = "FULL"


class FullPolicy(enum.StrEnum):
    """What an append does when the spool is at ``max_bytes`` after done rows were pruned."""

    REFUSE = "refuse"
    """Keep what is spooled; refuse the new event and count it as dropped (``spool_full``)."""
    DROP_OLDEST = "drop_oldest"
    """Make room by deleting the oldest pending events, counted as dropped (``evicted``)."""


def default_spool_path() -> Path:
    """The per-user spool: ``$XDG_STATE_HOME/spool-ship/spool.db`` (``~/.local/state``)."""
    state_home = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state_home) / "spool-ship" / "spool.db"


@dataclass(frozen=True, slots=True)
class SpoolConfig:
    """How a spool is opened and bounded.

    >>> SpoolConfig(path=Path("/tmp/agent.db"), max_bytes=64 * MIB).synchronous
    <Synchronous.NORMAL: 'NORMAL'>
    """

    path: Path
    max_bytes: int | None = None
    """The size limit. ``None``: the limit stored in the spool, else 1 GiB. A number is stored
    in the spool when it is opened for writing, and every process then enforces it."""
    full_policy: FullPolicy = FullPolicy.REFUSE
    synchronous: Synchronous = Synchronous.NORMAL
    busy_timeout: float = 30.0
    retention: float = 86_400.0
    max_event_bytes: int = MIB
    reserve_bytes: int = 8 * MIB
    """Disk space a shipper keeps beside the spool (``<spool>.reserve``) and gives back when
    the disk is full, so that shipping can go on (spool/_reserve.py); 0: none."""

    def __post_init__(self) -> None:
        # Resolved once, here: a relative path must not follow the process into another
        # directory after os.chdir(), where a new spool would fill up that nothing ships.
        object.__setattr__(self, "path", Path(os.path.abspath(self.path)))
        if self.max_bytes is not None and self.max_bytes < 64 * 1024:
            raise ValueError(f"max_bytes must be at least 64 KiB, got {self.max_bytes}")
        if self.busy_timeout <= 0:
            raise ValueError(f"busy_timeout must be positive, got {self.busy_timeout}")
        if self.retention < 0:
            raise ValueError(f"retention must not be negative, got {self.retention}")
        if self.max_event_bytes < 1024:
            raise ValueError(f"max_event_bytes must be at least 1024, got {self.max_event_bytes}")
        if self.reserve_bytes and self.reserve_bytes < 64 * 1024:
            raise ValueError(
                f"reserve_bytes must be 0 or at least 64 KiB, got {self.reserve_bytes}"
            )

    def with_path(self, path: str | os.PathLike[str]) -> SpoolConfig:
        return replace(self, path=Path(path))

    @classmethod
    def from_env(
        cls, path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
    ) -> SpoolConfig:
        """Read every option from the environment; ``path`` wins over ``SPOOL_SHIP_PATH``."""
        env = os.environ if env is None else env
        chosen = Path(path) if path is not None else None
        if chosen is None:
            chosen = Path(env[ENV_PATH]) if env.get(ENV_PATH) else default_spool_path()
        return cls(
            path=chosen,
            max_bytes=_parse(env, ENV_MAX_BYTES, parse_size, None),
            full_policy=_parse(env, ENV_FULL_POLICY, FullPolicy, FullPolicy.REFUSE),
            synchronous=_parse(env, ENV_SYNCHRONOUS, _synchronous, Synchronous.NORMAL),
            busy_timeout=_parse(env, ENV_BUSY_TIMEOUT, float, 30.0),
            retention=_parse(env, ENV_RETENTION, float, 86_400.0),
            max_event_bytes=_parse(env, ENV_MAX_EVENT_BYTES, parse_size, MIB),
            reserve_bytes=_parse(env, ENV_RESERVE_BYTES, parse_size, 8 * MIB),
        )


def _synchronous(value: str) -> Synchronous:
    return Synchronous(value.upper())


def _parse(env: Mapping[str, str], name: str, kind: Callable[[str], T], default: T) -> T:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return kind(raw.strip())
    except ValueError as exc:
        raise ValueError(f"{name}={raw!r} is not valid: {exc}") from None
