"""Errors raised by the spool.

    SpoolError
    ├── SpoolOpenError          the path cannot be used as a spool
    │   ├── NotASpoolError      the file is not a spool-ship spool (or not SQLite at all)
    │   ├── NewerSchemaError    written by a newer spool-ship
    │   ├── SpoolCorruptError   SQLite reports the file as malformed
    │   ├── SpoolLockedError    another process held the write lock past the busy timeout
    │   └── UnsafeSpoolError    a link, another user's file, or readable by group or others
    ├── SpoolFullError          the size limit or the disk refused the write
    └── SpoolClosedError        the spool was used after close()

Every message names the spool's path, so an operator can act on it.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "NewerSchemaError",
    "NotASpoolError",
    "SpoolClosedError",
    "SpoolCorruptError",
    "SpoolError",
    "SpoolFullError",
    "SpoolLockedError",
    "SpoolOpenError",
    "UnsafeSpoolError",
]


class SpoolError(Exception):
    """Root of every error the spool raises."""

    def __init__(self, path: str | Path, message: str) -> None:
        self.path = str(path)
        super().__init__(f"{self.path}: {message}")


class SpoolOpenError(SpoolError):
    """The path cannot be used as a spool."""


class NotASpoolError(SpoolOpenError):
    """The file exists but is not a spool-ship spool."""


class NewerSchemaError(SpoolOpenError):
    """The spool was written by a newer version of spool-ship."""


class SpoolCorruptError(SpoolOpenError):
    """SQLite reports the file, or its WAL, as malformed."""


class SpoolLockedError(SpoolOpenError):
    """Another process held the spool's write lock past the busy timeout."""


class SpoolFullError(SpoolError):
    """The configured size limit, or the disk, refused the write."""


class SpoolClosedError(SpoolError):
    """The spool was used after it was closed."""


class UnsafeSpoolError(SpoolOpenError):
    """The file is not private to this user: a symbolic link, another user's file, or one
    group or others can read or write. Refused: spans hold prompts and outputs."""
