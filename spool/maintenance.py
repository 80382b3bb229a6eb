"""Upkeep of a sound spool (``spool-ship doctor``): SQLite's integrity check, rebuilding
indexes, and VACUUM in bounded memory.

These run on the spool's own connection (every pragma set) outside any transaction, which
REINDEX and VACUUM require; errors come back as the spool's own (:mod:`spool._errors`).

>>> with Spool.open(config, create=False) as opened:
...     if integrity(opened) == ["ok"]:
...         vacuum(opened)
"""

from __future__ import annotations

import sqlite3

from ._errors import SpoolCorruptError, SpoolError, SpoolLockedError
from .store import Spool

__all__ = ["integrity", "only_indexes", "reindex", "vacuum"]


def integrity(opened: Spool) -> list[str]:
    """SQLite's verdict, a line per complaint: ``["ok"]`` for a sound file."""
    return [line for item in opened.integrity_check() for line in item.splitlines()]


def only_indexes(verdict: list[str]) -> bool:
    """Whether every complaint is about an index (``row 5 missing from index ...``, ``wrong #
    of entries in index ...``), which :func:`reindex` rebuilds from the table."""
    lines = [line for line in verdict if not line.startswith("*** in database")]
    return bool(lines) and all(" index " in f" {line} " for line in lines)


def reindex(opened: Spool) -> None:
    """Rebuild every index from its table."""
    _execute(opened, "REINDEX")


def vacuum(opened: Spool) -> None:
    """Rewrite the spool compactly, in memory that does not grow with the spool.

    VACUUM copies the whole database into a temporary one first. The spool's connections keep
    temporary data in memory (``temp_store = MEMORY``, for their small sorts), which for
    VACUUM means the whole spool: a 162 MiB spool took 187 MiB of resident memory. Here the
    copy goes to a file (deleted as soon as SQLite opens it) in the spool's own directory, on
    the spool's disk rather than a memory-backed /tmp: 16 MiB for the same spool
    (docs/operations.md). The directory setting is process-wide in SQLite, so it is put back.
    """
    conn = opened.conn
    directory = str(opened.config.path.parent).replace("'", "''")
    try:
        conn.execute("PRAGMA temp_store = FILE")
        conn.execute(f"PRAGMA temp_store_directory = '{directory}'")
        _execute(opened, "VACUUM")
    finally:
        conn.execute("PRAGMA temp_store_directory = ''")
        conn.execute("PRAGMA temp_store = MEMORY")


def _execute(opened: Spool, statement: str) -> None:
    try:
        opened.conn.execute(statement)
    except sqlite3.Error as exc:
        text = str(exc)
        path = opened.config.path
        if "malformed" in text.lower() or "corrupt" in text.lower():
            raise SpoolCorruptError(path, f"{statement} failed ({text})") from exc
        if "locked" in text.lower() or "busy" in text.lower():
            raise SpoolLockedError(
                path, f"another process holds the spool's lock ({statement}: {text})"
            ) from exc
        raise SpoolError(path, f"{statement} failed ({text})") from exc
