"""``spool-ship config``: the effective configuration, where each value comes from, and the
secrets redacted. It checks what it prints: a value the commands would refuse exits 2."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import fields
from typing import Any

from spool import SpoolConfig, SpoolError, limit_from_meta, open_readonly
from spool.config import (
    DEFAULT_MAX_BYTES,
    ENV_BUSY_TIMEOUT,
    ENV_FULL_POLICY,
    ENV_MAX_BYTES,
    ENV_MAX_EVENT_BYTES,
    ENV_PATH,
    ENV_RESERVE_BYTES,
    ENV_RETENTION,
    ENV_SYNCHRONOUS,
)

from ._options import BusyTimeoutOption, JsonOption, SpoolOption, spool_config
from ._render import human_bytes, pairs

__all__ = ["config", "effective_config"]

_SPOOL_ENV = {
    "max_bytes": ENV_MAX_BYTES,
    "full_policy": ENV_FULL_POLICY,
    "synchronous": ENV_SYNCHRONOUS,
    "busy_timeout": ENV_BUSY_TIMEOUT,
    "retention": ENV_RETENTION,
    "max_event_bytes": ENV_MAX_EVENT_BYTES,
    "reserve_bytes": ENV_RESERVE_BYTES,
}


def _plain(value: Any) -> Any:
    return value if isinstance(value, int | float | bool | type(None)) else str(value)


def effective_config(spool_cfg: SpoolConfig, shipper: dict[str, object]) -> dict[str, Any]:
    """``{"spool": {...}, "shipper": {...}, "sources": {...}}``: values, and for each spool
    option where it came from (an option, a variable, the spool itself, the default)."""
    values = {f.name: _plain(getattr(spool_cfg, f.name)) for f in fields(spool_cfg)}
    sources = {
        name: (variable if os.environ.get(variable) else "default")
        for name, variable in _SPOOL_ENV.items()
    }
    sources["path"] = ENV_PATH if os.environ.get(ENV_PATH) else "--spool or default"
    stored = None
    try:
        with open_readonly(spool_cfg) as opened:
            stored = limit_from_meta(opened.stats().meta)
    except SpoolError:
        pass  # no spool yet, or one that cannot be read: ``status`` says why
    if spool_cfg.max_bytes is None:
        values["max_bytes"] = stored if stored is not None else DEFAULT_MAX_BYTES
        sources["max_bytes"] = "stored in the spool" if stored is not None else "default"
    elif stored is not None and stored != spool_cfg.max_bytes:
        sources["max_bytes"] += f" (the spool holds {stored}; replaced when it is next written)"
    return {
        "spool": values,
        "shipper": {k: _plain(v) for k, v in shipper.items()},
        "sources": sources,
    }


def config(
    spool: SpoolOption = None, as_json: JsonOption = False, busy_timeout: BusyTimeoutOption = None
) -> None:
    """The effective configuration (secrets redacted) and where each value comes from."""
    from .ship import load_shipper_config

    spool_cfg = spool_config(spool, busy_timeout)
    shipper = load_shipper_config(None, None).redacted()
    facts = effective_config(spool_cfg, shipper)
    if as_json:
        sys.stdout.write(json.dumps(facts, indent=2) + "\n")
        return
    rows = []
    for name, value in facts["spool"].items():
        shown = human_bytes(value) if name.endswith("_bytes") else str(value)
        rows.append((f"spool.{name}", f"{shown}  ({facts['sources'][name]})"))
    for name, value in facts["shipper"].items():
        rows.append((f"shipper.{name}", "(not set)" if value is None else str(value)))
    sys.stdout.write(pairs(rows))
