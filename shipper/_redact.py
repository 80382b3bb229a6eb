"""The API key out of what the endpoint says, before the shipper stores or logs it.

An endpoint, or a gateway in front of it, may echo the presented key in its error text, and
not always as it was sent: upper-cased, cut to a prefix (``Invalid key 'sk-live-ab...'``) or
to its tail. Each spelling of at least :data:`MIN_ECHO` characters of the key's start or end,
in any case, becomes ``***``.

>>> redact_detail("bad key SK-LIVE-ABCDEF1234", "sk-live-abcdef1234567890")
'bad key ***'
"""

from __future__ import annotations

import dataclasses
import re

from .classify import Verdict

__all__ = ["MIN_ECHO", "redact_detail", "redact_verdict"]

MIN_ECHO = 8
"""Fewer characters than this are not treated as the key: they would mangle ordinary words,
and a key's first few characters (``sk-live-``) are its public kind, not its secret."""


def _pattern(key: str) -> re.Pattern[str] | None:
    if len(key) < MIN_ECHO:
        return None
    # The key's start of MIN_ECHO characters or more, or its end of MIN_ECHO or more: the
    # longest spelling wins (regex alternatives try the whole key first).
    starts = [re.escape(key[:n]) for n in range(len(key), MIN_ECHO - 1, -1)]
    ends = [re.escape(key[-n:]) for n in range(len(key) - 1, MIN_ECHO - 1, -1)]
    return re.compile("|".join(starts + ends), re.IGNORECASE)


def redact_detail(text: str, key: str | None) -> str:
    """``text`` with every spelling of ``key`` replaced by ``***``."""
    pattern = _pattern(key) if key else None
    return pattern.sub("***", text) if pattern is not None else text


def redact_verdict(verdict: Verdict, key: str | None) -> Verdict:
    """``verdict`` with its detail redacted (the same object when nothing changed)."""
    detail = redact_detail(verdict.detail, key)
    return verdict if detail == verdict.detail else dataclasses.replace(verdict, detail=detail)
