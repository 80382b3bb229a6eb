"""spool: the durable SQLite spool and the processors that write to it.

>>> from spool import SpoolProcessor
>>> processor = SpoolProcessor("/var/lib/agent/spool.db")
"""

from __future__ import annotations

from . import ops
from ._errors import (
    NewerSchemaError,
    NotASpoolError,
    SpoolClosedError,
    SpoolCorruptError,
    SpoolError,
    SpoolFullError,
    SpoolLockedError,
    SpoolOpenError,
    UnsafeSpoolError,
)
from ._fill import limit_from_meta
from ._mapping import Refused, encode_span, to_param
from ._model import (
    ClaimedEvent,
    Counter,
    EventKind,
    EventRecord,
    EventState,
    MetaKey,
    Outcome,
    SpoolStats,
)
from ._registry import REGISTRY, Registry
from ._schema import SCHEMA_VERSION
from .config import FullPolicy, SpoolConfig, Synchronous, default_spool_path, parse_size
from .processor import SpoolProcessor, SyncSpoolProcessor
from .readonly import Damage, DamageCheck, check_damage, open_readonly
from .redact import Redactor, default_redactor
from .store import AsyncSpool, NewEvent, Spool, file_sizes, watch_appends

__all__ = [
    "REGISTRY",
    "SCHEMA_VERSION",
    "AsyncSpool",
    "ClaimedEvent",
    "Counter",
    "Damage",
    "DamageCheck",
    "EventKind",
    "EventRecord",
    "EventState",
    "FullPolicy",
    "MetaKey",
    "NewEvent",
    "NewerSchemaError",
    "NotASpoolError",
    "Outcome",
    "Redactor",
    "Refused",
    "Registry",
    "Spool",
    "SpoolClosedError",
    "SpoolConfig",
    "SpoolCorruptError",
    "SpoolError",
    "SpoolFullError",
    "SpoolLockedError",
    "SpoolOpenError",
    "SpoolProcessor",
    "SpoolStats",
    "SyncSpoolProcessor",
    "Synchronous",
    "UnsafeSpoolError",
    "check_damage",
    "default_redactor",
    "default_spool_path",
    "encode_span",
    "file_sizes",
    "limit_from_meta",
    "open_readonly",
    "ops",
    "parse_size",
    "to_param",
    "watch_appends",
]
