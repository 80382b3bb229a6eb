"""How the long-running commands log: one line per event on stderr, as text or as JSON.

Text: ``2024-05-01 12:00:00,000 INFO shipper shipped n=50``. JSON (``--log-format json``): one
object per line, ``{"time": ..., "level": ..., "logger": ..., "message": ...}`` plus the
``key=value`` pairs of the message as fields, for log pipelines that index fields.
"""

from __future__ import annotations

import enum
import json
import logging
import re
import sys
from datetime import UTC, datetime

__all__ = ["JsonFormatter", "LogFormat", "configure_logging"]

_PAIR = re.compile(r"(?<!\S)([a-z_]+)=(\S+)")


class LogFormat(enum.StrEnum):
    TEXT = "text"
    JSON = "json"


class JsonFormatter(logging.Formatter):
    """A log record as one JSON object on one line."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        out: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": message,
        }
        for key, value in _PAIR.findall(message):
            out.setdefault(key, _number(value))
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def _number(text: str) -> object:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def configure_logging(verbose: bool = False, log_format: LogFormat = LogFormat.TEXT) -> None:
    """One greppable line per event on stderr: time, level, source, ``key=value`` counts."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format is LogFormat.JSON:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, handlers=[handler], force=True
    )
    for noisy in ("httpx", "httpcore", "aiosqlite", "scale_gp_beta"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
