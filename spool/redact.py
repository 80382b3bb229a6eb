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

    ``hints`` are literal substrings of which every match contains at least one: a string
    holding none of them is not searched (a substring test costs a hundredth of a regular
    expression's scan, and most strings hold no secret). Without hints every string is
    searched.
    """

    name: str
    regex: str
    hints: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # The regex is compiled (and a bad one refused) when a Redactor is made: compiling
        # the defaults here would cost every ``import spool`` a few milliseconds.
        if not self.name.isidentifier():
            raise ValueError(f"a pattern's name is an identifier, not {self.name!r}")
        hints: object = self.hints  # a plain string would pass as a tuple of characters
        if not isinstance(hints, tuple) or not all(h and isinstance(h, str) for h in hints):
            raise ValueError(f"hints are a tuple of non-empty strings, not {self.hints!r}")


DEFAULT_PATTERNS: tuple[Pattern, ...] = (
    # OpenAI (sk-..., sk-proj-...), Anthropic (sk-ant-...) and the many keys shaped like them.
    Pattern("api_key", r"\bsk-[A-Za-z0-9_\-]{16,}", ("sk-",)),
    Pattern(
        "bearer_token", r"(?i)\bbearer\s+[A-Za-z0-9\-._~+/]{8,}=*", ("Bearer", "bearer", "BEARER")
    ),
    Pattern("jwt", r"\beyJ[A-Za-z0-9_\-]{4,}\.eyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]+", ("eyJ",)),
    Pattern("aws_access_key", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b", ("AKIA", "ASIA")),
    Pattern(
        "github_token",
        r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})",
        ("gh", "github_pat_"),
    ),
    Pattern("google_api_key", r"\bAIza[0-9A-Za-z_\-]{35}", ("AIza",)),
    Pattern("slack_token", r"\bxox[abposr]-[A-Za-z0-9\-]{10,}", ("xox",)),
    Pattern(
        "email", r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}", ("@",)
    ),
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
_KEY_CACHE_MAX = 4096
_SCALARS = frozenset({int, float, bool})


class Redactor:
    """A ``redact=`` hook that masks secrets in a span's ``fields`` (by default ``input``,
    ``output`` and ``metadata``), through nested objects and lists.

    >>> redact = Redactor([Pattern("ticket", r"\\bTCK-\\d+\\b", ("TCK-",))], keys={"session"})
    >>> redact({"name": "n", "input": {"q": "see TCK-42", "session": "s1"}})["input"]
    {'q': 'see [REDACTED:ticket]', 'session': '[REDACTED]'}

    It builds new objects and lists; what it is given is left as it was.
    """

    __slots__ = ("_fields", "_is_secret_key", "_keys", "_rules")

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
        # A bad regex is refused here (re.error), not on the first span.
        self._rules = tuple(
            (p.hints, re.compile(p.regex), f"[REDACTED:{p.name}]") for p in patterns
        )
        self._keys = frozenset(_key(k) for k in keys)
        self._is_secret_key: dict[str, bool] = {}
        self._fields = tuple(fields)

    def __call__(self, params: dict[str, Any]) -> dict[str, Any]:
        redacted = dict(params)
        for field in self._fields:
            if field in redacted:
                redacted[field] = self.value(redacted[field])
        return redacted

    def text(self, text: str) -> str:
        """``text`` with every pattern's match replaced by ``[REDACTED:<name>]``."""
        for hints, regex, label in self._rules:
            if hints:
                for hint in hints:
                    if hint in text:
                        break
                else:
                    continue
            text = regex.sub(label, text)
        return text

    def value(self, value: object) -> Any:
        """A copy of ``value`` (JSON-shaped: objects, lists, strings, ...), redacted."""
        # Exact types first, without ABC checks: what the hook is given is plain JSON values.
        if type(value) is str:
            return self.text(value)
        if type(value) is dict:
            return self._object(value)
        if type(value) is list:
            return [self.value(v) for v in value]
        if value is None or type(value) in _SCALARS:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return self._object(value)
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        return value

    def _object(self, items: Mapping[Any, Any]) -> dict[Any, Any]:
        secret_keys = self._is_secret_key
        redacted: dict[Any, Any] = {}
        for key, value in items.items():
            secret = secret_keys.get(key) if type(key) is str else False
            if secret is None:
                secret = self._secret_key(key)
            redacted[key] = _KEY_REPLACEMENT if secret and value is not None else self.value(value)
        return redacted

    def _secret_key(self, key: str) -> bool:
        """Whether ``key`` names a secret; keys repeat, so each is normalized once."""
        if len(self._is_secret_key) >= _KEY_CACHE_MAX:
            self._is_secret_key.clear()  # keys made up per span: do not hold them all
        known = self._is_secret_key[key] = _key(key) in self._keys
        return known


def _key(key: str) -> str:
    return key.lower().replace("-", "_")


def default_redactor(*extra: Pattern) -> Redactor:
    """A :class:`Redactor` with :data:`DEFAULT_PATTERNS` and :data:`DEFAULT_SECRET_KEYS`, plus
    the patterns in ``extra``."""
    return Redactor((*DEFAULT_PATTERNS, *extra))
