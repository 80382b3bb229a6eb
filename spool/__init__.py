"""spool: the durable SQLite spool and the processors that write to it.

>>> from spool import SpoolProcessor
>>> processor = SpoolProcessor("/var/lib/agent/spool.db")

Every public name is imported on first use (PEP 562): ``spool-ship status`` pays for the
modules it uses, not for the processors, the write path or the span mapping (issue 13).
"""

from __future__ import annotations

import importlib as _importlib
import typing as _typing

if _typing.TYPE_CHECKING:
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

# Where each public name lives; ``ops`` is a module of its own.
_LAZY: dict[str, str] = {
    "NewerSchemaError": "_errors",
    "NotASpoolError": "_errors",
    "SpoolClosedError": "_errors",
    "SpoolCorruptError": "_errors",
    "SpoolError": "_errors",
    "SpoolFullError": "_errors",
    "SpoolLockedError": "_errors",
    "SpoolOpenError": "_errors",
    "UnsafeSpoolError": "_errors",
    "limit_from_meta": "_fill",
    "Refused": "_mapping",
    "encode_span": "_mapping",
    "to_param": "_mapping",
    "ClaimedEvent": "_model",
    "Counter": "_model",
    "EventKind": "_model",
    "EventRecord": "_model",
    "EventState": "_model",
    "MetaKey": "_model",
    "Outcome": "_model",
    "SpoolStats": "_model",
    "REGISTRY": "_registry",
    "Registry": "_registry",
    "SCHEMA_VERSION": "_schema",
    "FullPolicy": "config",
    "SpoolConfig": "config",
    "Synchronous": "config",
    "default_spool_path": "config",
    "parse_size": "config",
    "SpoolProcessor": "processor",
    "SyncSpoolProcessor": "processor",
    "Damage": "readonly",
    "DamageCheck": "readonly",
    "check_damage": "readonly",
    "open_readonly": "readonly",
    "Redactor": "redact",
    "default_redactor": "redact",
    "AsyncSpool": "store",
    "NewEvent": "store",
    "Spool": "store",
    "file_sizes": "store",
    "watch_appends": "store",
    "ops": "ops",
}


def _resolve(name: str) -> object:
    """The module-level ``__getattr__``: import the name's module, keep the value."""
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = _importlib.import_module(f".{module_name}", __name__)
    value = module if name == module_name else getattr(module, name)
    globals()[name] = value  # the next look-up is an ordinary one
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if not _typing.TYPE_CHECKING:
    # Hidden from mypy, so that a misspelt ``from spool import Nmae`` stays a type error.
    __getattr__ = _resolve
