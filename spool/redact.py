"""Redaction before anything touches disk: the ``redact=`` hook's type and a built-in redactor.

Every processor takes ``redact=``: a callable given the span event's request parameters (a
``SpanCreateParam`` dict, exactly what would be spooled and sent, as plain JSON values) that
returns the dict to spool instead. The dict is the hook's own copy: change it in place or
build a new one. What the hook removes never reaches the spool file, its WAL or its shared
memory file. If the hook raises, or returns something other than a dict, the event is
refused (counted as ``refused:redact_failed``) and the agent never sees the error.

>>> from spool import SpoolProcessor
>>> from spool.redact import Pattern, Redactor, default_redactor
>>> processor = SpoolProcessor("/var/lib/agent/spool.db", redact=default_redactor())
>>> ssn = Pattern("ssn", r"\\b\\d{3}-\\d{2}-\\d{4}\\b")
>>> processor = SpoolProcessor("/var/lib/agent/spool.db", redact=default_redactor(ssn))

:class:`Redactor` replaces, in ``input``, ``output`` and ``metadata`` (recursively, through
objects and lists), every match of its patterns (API keys such as ``sk-...``, bearer tokens,
e-mail addresses, ...) with ``[REDACTED:<name>]``, and every value held under a key that names
a secret (``api_key``, ``authorization``, ``password``, ...) with ``[REDACTED]``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DEFAULT_PATTERNS",
    "DEFAULT_SECRET_KEYS",
    "Pattern",
    "Redact",
    "Redactor",
    "default_redactor",
]

Redact = Callable[[dict[str, Any]], dict[str, Any]]
"""The ``redact=`` hook: a span event's request parameters in, the parameters to spool out."""


@dataclass(frozen=True, slots=True)
class Pattern:
    """One kind of secret: ``regex`` matches it in a string, ``name`` labels the replacement.

    The patterns of a :class:`Redactor` run as one expression: write flags scoped, as in
    ``(?i:bearer)``, not ``(?i)`` for the whole.
    """

    name: str
    regex: str

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.name):
            raise ValueError(f"a pattern's name is an identifier, not {self.name!r}")
        # A bad regex is refused here, not on the first span.
        re.compile(f"(?P<{self.name}>{self.regex})")


DEFAULT_PATTERNS: tuple[Pattern, ...] = (
    # OpenAI (sk-..., sk-proj-...), Anthropic (sk-ant-...) and the many keys shaped like them.
    Pattern("api_key", r"\bsk-[A-Za-z0-9_\-]{16,}"),
    Pattern("bearer_token", r"\b(?i:bearer)\s+[A-Za-z0-9\-._~+/]{8,}=*"),
    Pattern("jwt", r"\beyJ[A-Za-z0-9_\-]{4,}\.eyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]+"),
    Pattern("aws_access_key", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    Pattern("github_token", r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})"),
    Pattern("google_api_key", r"\bAIza[0-9A-Za-z_\-]{35}"),
    Pattern("slack_token", r"\bxox[abposr]-[A-Za-z0-9\-]{10,}"),
    Pattern("email", r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}"),
)
"""What :func:`default_redactor` looks for in every string."""

DEFAULT_SECRET_KEYS: frozenset[str] = frozenset(
    {
        "api_key", "apikey", "x_api_key", "authorization", "proxy_authorization", "password",
        "passwd", "secret", "client_secret", "access_token", "refresh_token", "id_token",
        "token", "private_key", "cookie", "set_cookie", "sgp_api_key", "openai_api_key",
    }
)  # fmt: skip
"""Keys whose whole value is replaced, compared case-insensitively with ``-`` read as ``_``."""

_FIELDS = ("input", "output", "metadata")
_KEY_REPLACEMENT = "[REDACTED]"


class Redactor:
    """A ``redact=`` hook that masks secrets in a span's ``fields`` (by default ``input``,
    ``output`` and ``metadata``), through nested objects and lists.

    >>> redact = Redactor([Pattern("ticket", r"\\bTCK-\\d+\\b")], keys={"session"})
    >>> redact({"name": "n", "input": {"q": "see TCK-42", "session": "s1"}})["input"]
    {'q': 'see [REDACTED:ticket]', 'session': '[REDACTED]'}

    All patterns run as one regular expression, in one pass over each string.
    """

    __slots__ = ("_fields", "_keys", "_labels", "_regex")

    def __init__(
        self,
        patterns: Iterable[Pattern] = DEFAULT_PATTERNS,
        *,
        keys: Iterable[str] = DEFAULT_SECRET_KEYS,
        fields: Iterable[str] = _FIELDS,
    ) -> None:
        patterns = tuple(patterns)
        names = [p.name for p in patterns]
        if len(set(names)) != len(names):
            raise ValueError(f"pattern names must differ: {names}")
        self._labels = {p.name: f"[REDACTED:{p.name}]" for p in patterns}
        self._regex = (
            re.compile("|".join(f"(?P<{p.name}>{p.regex})" for p in patterns)) if patterns else None
        )
        self._keys = frozenset(_key(k) for k in keys)
        self._fields = tuple(fields)

    def __call__(self, params: dict[str, Any]) -> dict[str, Any]:
        redacted = dict(params)
        for field in self._fields:
            if field in redacted:
                redacted[field] = self.value(redacted[field])
        return redacted

    def text(self, text: str) -> str:
        """``text`` with every pattern's match replaced by its label."""
        if self._regex is None:
            return text
        return self._regex.sub(self._label, text)

    def value(self, value: object) -> Any:
        """A copy of ``value`` (JSON-shaped: objects, lists, strings, ...), redacted."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {
                k: _KEY_REPLACEMENT
                if isinstance(k, str) and _key(k) in self._keys and v is not None
                else self.value(v)
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        return value

    def _label(self, match: re.Match[str]) -> str:
        label = self._labels.get(match.lastgroup or "")
        if label is None:  # a pattern with named groups of its own: find whose match it is
            label = next(self._labels[n] for n in self._labels if match.group(n) is not None)
        return label


def _key(key: str) -> str:
    return key.lower().replace("-", "_")


def default_redactor(*extra: Pattern) -> Redactor:
    """A :class:`Redactor` with :data:`DEFAULT_PATTERNS` and :data:`DEFAULT_SECRET_KEYS`, plus
    the patterns in ``extra``."""
    return Redactor((*DEFAULT_PATTERNS, *extra))
