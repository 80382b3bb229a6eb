"""Opening a spool to look at it: read-only, never creating or changing a file, and working on
a read-only file system; and a bounded check for damage.

>>> with open_readonly(SpoolConfig(path=Path("/var/lib/agent/spool.db"))) as spool:
...     check_damage(spool, budget=1.0).verdict
'ok'
"""

from __future__ import annotations

import enum
import sqlite3
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ._errors import NotASpoolError, SpoolCorruptError, SpoolError
from ._files import check_private
from ._schema import APPLICATION_ID, _check_identity, _identity, translate_error
from .config import SpoolConfig
from .store import Spool, file_sizes

__all__ = ["Damage", "DamageCheck", "check_damage", "connect_readonly", "open_readonly"]

# How many VM steps run between two looks at the clock during the check.
_STEPS = 10_000


def _uri(path: Path, **params: str) -> str:
    query = urllib.parse.urlencode({"mode": "ro", **params})
    return f"file:{urllib.parse.quote(str(path.absolute()))}?{query}"


def connect_readonly(config: SpoolConfig) -> sqlite3.Connection:
    """A read-only connection to the existing spool at ``config.path``.

    SQLite reads a WAL-mode file through its ``-shm`` index, which a read-only file system does
    not let it create. Where there is no WAL at all (every writer closed cleanly), nothing can
    be missed by reading the file as it stands (``immutable``), so that is what is done.
    """
    path = config.path
    # The same refusal as for writing: no links, no other user's file, nothing others can read
    # (an inspection must not be pointed at a planted file either).
    check_private(path)
    if file_sizes(path) == (0, 0):
        raise NotASpoolError(path, "is an empty file, not a spool")
    try:
        return _connect(config, _uri(path))
    except sqlite3.OperationalError as exc:
        if "unable to open" not in str(exc).lower() or Path(f"{path}-wal").exists():
            raise translate_error(path, exc) from exc
    try:
        return _connect(config, _uri(path, immutable="1"))
    except sqlite3.Error as exc:
        raise translate_error(path, exc) from exc


def _connect(config: SpoolConfig, uri: str) -> sqlite3.Connection:
    conn = sqlite3.connect(
        uri,
        uri=True,
        timeout=config.busy_timeout,
        isolation_level=None,
        check_same_thread=False,
    )
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(config.busy_timeout * 1000)}")
        conn.execute("BEGIN")
        try:
            app_id, version = _identity(conn)
            _check_identity(conn, config.path, app_id, version)
            if app_id != APPLICATION_ID:
                raise NotASpoolError(config.path, "is an empty SQLite database, not a spool yet")
        finally:
            conn.execute("ROLLBACK")
    except (sqlite3.Error, SpoolError):
        conn.close()
        raise
    return conn


def open_readonly(config: SpoolConfig) -> Spool:
    """The spool at ``config.path``, opened read-only: appends and writes fail."""
    try:
        return Spool(config, connect_readonly(config))
    except sqlite3.Error as exc:
        raise translate_error(config.path, exc) from exc


class Damage(enum.StrEnum):
    OK = "ok"
    DAMAGED = "damaged"
    UNCHECKED = "unchecked"
    """The check ran out of its time budget before it saw the whole file."""


@dataclass(frozen=True, slots=True)
class DamageCheck:
    verdict: Damage
    detail: str = ""
    seconds: float = 0.0

    def error(self, path: Path) -> SpoolCorruptError:
        return SpoolCorruptError(
            path, f"the spool is corrupt ({self.detail}); run 'spool-ship doctor' to salvage it"
        )


def check_damage(
    spool: Spool,
    budget: float,
    clock: Callable[[], float] = time.monotonic,
    steps: int = _STEPS,
) -> DamageCheck:
    """``PRAGMA quick_check`` for at most ``budget`` seconds: every
    page of every table and index is read and its structure checked, without the cross
    checks of a full integrity check. Stopped by the budget, the verdict is ``unchecked``.
    The clock is read every ``steps`` virtual machine steps."""
    # Only through SQLite: opening and closing the file here would drop every POSIX lock this
    # process holds on it (a shipper's, in ``run``), and another process closing the spool
    # would then take the WAL away from under that shipper ("disk I/O error").
    started = clock()
    deadline = started + budget
    stopped = False

    def over_budget() -> int:
        nonlocal stopped
        stopped = clock() >= deadline
        return 1 if stopped else 0

    conn = spool.conn
    conn.set_progress_handler(over_budget, steps)
    try:
        rows = conn.execute("PRAGMA quick_check(5)").fetchall()
    except sqlite3.Error as exc:
        if stopped:
            return DamageCheck(Damage.UNCHECKED, f"over its {budget:g}s budget", clock() - started)
        return DamageCheck(Damage.DAMAGED, str(exc), clock() - started)
    finally:
        conn.set_progress_handler(None, 0)
    lines = [str(r[0]) for r in rows]
    if lines == ["ok"]:
        return DamageCheck(Damage.OK, "", clock() - started)
    return DamageCheck(Damage.DAMAGED, "; ".join(lines), clock() - started)
