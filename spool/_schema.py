"""The spool's schema and its one connection factory.

Every connection to a spool comes from :func:`connect`, which sets every pragma, checks that
the file is a spool of a version this code can read, and creates or migrates the schema.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from pathlib import Path

from ._errors import (
    NewerSchemaError,
    NotASpoolError,
    SpoolCorruptError,
    SpoolError,
    SpoolFullError,
    SpoolLockedError,
    SpoolOpenError,
    UnsafeSpoolError,
)
from ._files import check_private, create_private, make_private_dirs
from ._fill import store_limit
from ._model import EventKind, EventState, Outcome
from ._reserve import autocheckpoint_pages
from ._text import printable
from .config import SpoolConfig

__all__ = ["APPLICATION_ID", "SCHEMA_VERSION", "connect", "translate_error"]

_log = logging.getLogger("spool")

# "SPSH" read as a big-endian integer: marks the file as a spool-ship spool.
APPLICATION_ID = 0x53505348
SCHEMA_VERSION = 1

# Bound the WAL file after each checkpoint so a burst does not leave it large forever.
JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024


def _in(enum_type: type[EventState] | type[EventKind] | type[Outcome]) -> str:
    return ", ".join(f"'{member.value}'" for member in enum_type)


_FIRST_SCHEMA_V1 = f"""
CREATE TABLE events (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    span_id          TEXT    NOT NULL,
    trace_id         TEXT    NOT NULL,
    kind             TEXT    NOT NULL CHECK (kind IN ({_in(EventKind)})),
    payload          BLOB    NOT NULL,
    enqueued_at      REAL    NOT NULL,
    state            TEXT    NOT NULL DEFAULT 'pending' CHECK (state IN ({_in(EventState)})),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  REAL    NOT NULL DEFAULT 0,
    lease_owner      TEXT,
    lease_expires_at REAL,
    last_error       TEXT,
    done_at          REAL,
    outcome          TEXT    CHECK (outcome IS NULL OR outcome IN ({_in(Outcome)}))
);
CREATE INDEX events_by_state ON events (state, seq);
CREATE INDEX events_by_span ON events (trace_id, span_id, kind);
CREATE TABLE counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
"""

# Indexes added to version 1 after its first release. A spool made before has none of them
# and gets them from its first writable connection; a spool-ship that does not know them
# leaves them alone (SQLite keeps every index up to date, whoever writes).
# - events_pending_starts: the pending starts only. A claim's supersede pass looks for starts
#   among the oldest pending events; through events_by_state it read every one of those rows
#   to learn its kind (docs/performance.md, "The SQLite thread, not the SDK"). All three
#   columns are keyed so that the planner, which has no statistics, prefers it to
#   events_by_state.
LATER_INDEXES = {
    "events_pending_starts": (
        "CREATE INDEX IF NOT EXISTS events_pending_starts ON events (kind, state, seq) "
        f"WHERE kind = '{EventKind.START.value}' AND state = '{EventState.PENDING.value}'"
    ),
}
# Version 1 as a new spool gets it: the first release, then the later indexes.
SCHEMA_V1 = ";\n".join([_FIRST_SCHEMA_V1.strip().rstrip(";"), *LATER_INDEXES.values()]) + ";\n"


def connect(config: SpoolConfig, *, create: bool = True) -> sqlite3.Connection:
    """Open ``config.path`` as a spool, creating it (mode 0600, missing directories 0700)
    when ``create`` is true.

    Raises a :class:`SpoolOpenError` naming the path when the file cannot be used, and an
    :class:`UnsafeSpoolError` when it is not private to this user (see :mod:`spool._files`).
    """
    path = config.path
    created = False
    if create and not os.path.lexists(path):
        try:
            make_private_dirs(path.parent)
            created = create_private(path)
        except OSError as exc:
            raise SpoolOpenError(path, f"cannot create the spool: {exc.strerror or exc}") from exc
    found = check_private(path)
    if not create and not created and _empty(path, found):
        # Not a spool that was never written: something else, or nothing, made this file.
        raise NotASpoolError(
            path, "is an empty file, not a spool (an agent's processor or 'run --create' makes one)"
        )
    try:
        conn = sqlite3.connect(
            path,
            timeout=config.busy_timeout,
            isolation_level=None,
            check_same_thread=False,
            cached_statements=64,
        )
    except sqlite3.Error as exc:
        raise translate_error(path, exc) from exc
    try:
        _same_file(path, found)
        _configure(conn, config)
        _ensure_schema(conn, path)
        store_limit(conn, config, _log)
    except sqlite3.Error as exc:
        conn.close()
        raise translate_error(path, exc) from exc
    except SpoolError:
        conn.close()
        raise
    return conn


def _empty(path: Path, found: os.stat_result) -> bool:
    """A zero-byte file with no WAL beside it (a new spool's first commits sit in its WAL)."""
    try:
        wal = os.lstat(f"{path}-wal").st_size
    except FileNotFoundError:
        wal = 0
    return found.st_size == 0 and wal == 0


def _same_file(path: Path, checked: os.stat_result) -> None:
    """SQLite opens by name: the file it opened must be the one that was checked, not one put
    in its place (a link, another user's file) in between."""
    try:
        now = os.lstat(path)
    except OSError:
        now = None
    if now is None or (now.st_dev, now.st_ino) != (checked.st_dev, checked.st_ino):
        raise UnsafeSpoolError(path, "the file was replaced while it was being opened")


def _configure(conn: sqlite3.Connection, config: SpoolConfig) -> None:
    conn.execute(f"PRAGMA busy_timeout = {int(config.busy_timeout * 1000)}")
    # Refuse a file that is not ours before the first write: switching another application's
    # database to WAL mode would change it for good.
    # One read transaction: another process may be creating the spool right now, and its
    # tables and its application_id must be seen together.
    conn.execute("BEGIN")
    try:
        _check_identity(conn, config.path, *_identity(conn))
    finally:
        # An I/O error ends the transaction itself: a ROLLBACK then would fail ("cannot
        # rollback") and hide the error that matters.
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    mode = _switch_to_wal(conn, config.busy_timeout)
    if str(mode).lower() != "wal":
        raise SpoolOpenError(config.path, f"cannot switch to WAL mode (journal_mode={mode})")
    conn.execute(f"PRAGMA synchronous = {config.synchronous.value}")
    conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")
    # The WAL a full disk can leave behind stays within what the reserve gives back.
    conn.execute(f"PRAGMA wal_autocheckpoint = {autocheckpoint_pages(config.reserve_bytes)}")
    conn.execute("PRAGMA temp_store = MEMORY")
    conn.execute("PRAGMA foreign_keys = OFF")


def _switch_to_wal(conn: sqlite3.Connection, busy_timeout: float) -> object:
    """``PRAGMA journal_mode = WAL``, waiting out other processes that are creating the same
    spool: SQLite answers this pragma "database is locked" at once, without calling the busy
    handler, while another connection holds the lock it needs."""
    deadline = time.monotonic() + busy_timeout
    pause = 0.005
    while True:
        try:
            return conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc).lower() or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.1)


def _ensure_schema(conn: sqlite3.Connection, path: Path) -> None:
    app_id, version = _identity(conn)
    if app_id == APPLICATION_ID and version == SCHEMA_VERSION:
        _add_later_indexes(conn, path)
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        app_id, version = _identity(conn)
        _check_identity(conn, path, app_id, version)
        if app_id != APPLICATION_ID:
            for statement in SCHEMA_V1.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise


def _add_later_indexes(conn: sqlite3.Connection, path: Path) -> None:
    """Create the :data:`LATER_INDEXES` a spool made before them lacks. They only make
    queries cheaper: one that cannot be made (a full disk) is left for the next connection."""
    names = ", ".join("?" * len(LATER_INDEXES))
    have = {
        row[0]
        for row in conn.execute(
            f"SELECT name FROM sqlite_master WHERE type = 'index' AND name IN ({names})",
            tuple(LATER_INDEXES),
        )
    }
    missing = [sql for name, sql in LATER_INDEXES.items() if name not in have]
    if not missing:
        return
    try:
        conn.execute("BEGIN IMMEDIATE")
        for sql in missing:
            conn.execute(sql)
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        _log.warning(
            "spool: %s: could not add an index (%s); claims stay slower until a later "
            "connection can", printable(path), exc,
        )  # fmt: skip


def _check_identity(conn: sqlite3.Connection, path: Path, app_id: int, version: int) -> None:
    """Raise unless the file is a spool this code can read, or an empty database."""
    if app_id == APPLICATION_ID:
        if version > SCHEMA_VERSION:
            raise NewerSchemaError(
                path,
                f"spool schema version {version} is newer than this spool-ship "
                f"understands ({SCHEMA_VERSION}); upgrade spool-ship",
            )
    elif app_id != 0 or _has_tables(conn):
        raise NotASpoolError(path, "is an SQLite database but not a spool-ship spool")


def _identity(conn: sqlite3.Connection) -> tuple[int, int]:
    app_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    return app_id, version


def _has_tables(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone() is not None


def translate_error(path: str | Path, exc: sqlite3.Error) -> SpoolError:
    """Map an sqlite3 error to the spool's error tree, with a message an operator can act on."""
    text = str(exc)
    lowered = text.lower()
    if "file is not a database" in lowered or "file is encrypted" in lowered:
        return NotASpoolError(path, "is not an SQLite database (not a spool)")
    if "malformed" in lowered or "corrupt" in lowered:
        return SpoolCorruptError(
            path, f"the spool is corrupt ({text}); run 'spool-ship doctor' to salvage it"
        )
    if "locked" in lowered or "busy" in lowered:
        return SpoolLockedError(path, f"another process holds the spool's lock ({text})")
    if "full" in lowered:
        return SpoolFullError(path, f"no room to write ({text})")
    if "disk i/o error" in lowered:
        return SpoolError(
            path,
            f"I/O error reading or writing the spool or its -wal/-shm ({text}); a removed -wal "
            "or a failing disk does this: run 'spool-ship doctor'",
        )
    if "unable to open" in lowered or "readonly" in lowered or "read-only" in lowered:
        return SpoolOpenError(path, f"cannot open the spool for writing ({text})")
    return SpoolError(path, text)
