"""Text from outside (an endpoint's answer, a span's name) made safe to print or log."""

from __future__ import annotations

import re

__all__ = ["printable"]

# C0 and C1 controls, DEL, and the bidirectional overrides: a span id, a name or an endpoint's
# answer that holds them could move the cursor, recolour or rewrite the operator's terminal,
# or forge a line of a text log.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(text: object) -> str:
    """``text`` safe for a terminal or a log line: control characters shown as escapes, never
    obeyed.

    >>> printable("span\x1b[2Jid")
    'span\\\\x1b[2Jid'
    >>> printable("one\\nINFO forged")
    'one\\\\x0aINFO forged'
    """
    return _UNSAFE.sub(_escape, str(text))


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"
