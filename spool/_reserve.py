"""Disk space only a shipper may use: a reserve file beside the spool, given back when the
disk is full so that shipping, which is what frees space, can go on.

On a full file system the spool's writes fail, the shipper's too: a claim, an ack, handing a
batch back all write to the WAL. When the WAL is what filled the disk, a checkpoint cannot
help either, for it must first copy the WAL's pages into the database file, which has to grow.
So a shipper (:class:`~spool.AsyncSpool`) keeps ``<spool>.reserve``, ``reserve_bytes`` of
allocated blocks. Agents cannot use that space; before each of its writes, a spool that finds
the disk nearly full deletes the reserve and checkpoints, so the WAL's pages move into the
database, the WAL starts over within the space it already has, and acks keep committing. The
reserve is made again once the disk has room for it twice over.

The WAL is checkpointed (``wal_autocheckpoint``) at half the reserve, so the pages a
checkpoint must move when the disk fills stay within what the reserve gives back.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["Reserve", "autocheckpoint_pages"]

log = logging.getLogger("spool")

# How often a missing reserve is tried again (a statvfs each time).
_RETRY_INTERVAL = 30.0
_PAGE = 4096


def autocheckpoint_pages(reserve_bytes: int) -> int:
    """The WAL size, in pages, at which every connection checkpoints: half the reserve
    (SQLite's default of 1000 pages without one)."""
    return max(64, reserve_bytes // 2 // _PAGE) if reserve_bytes else 1000


class Reserve:
    """The reserve file of one spool."""

    def __init__(self, spool: Path, size: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = spool.with_name(f"{spool.name}.reserve")
        self.size = size
        self._clock = clock
        self._next_try = 0.0

    def free_bytes(self) -> int:
        st = os.statvfs(self.path.parent)
        return st.f_bavail * st.f_frsize

    def present(self) -> bool:
        """Whether the reserve is there, a regular file of this user's."""
        try:
            st = os.lstat(self.path)
        except OSError:
            return False
        return stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid()

    def due(self) -> bool:
        """Whether :meth:`keep` would look at the disk now."""
        return bool(self.size) and self._clock() >= self._next_try

    def keep(self) -> bool:
        """Make the reserve if it is missing and the disk has room for it twice over; looked
        at most every 30 s. Whether it was made."""
        if not self.size:
            return False
        now = self._clock()
        if now < self._next_try:
            return False
        self._next_try = now + _RETRY_INTERVAL
        if self.present():
            return False
        try:
            if self.free_bytes() < 2 * self.size:
                return False
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o600)
        except OSError:
            return False
        try:
            os.posix_fallocate(fd, 0, self.size)
        except OSError as exc:
            # No blocks can be set aside on this file system (or no room after all).
            os.close(fd)
            self.path.unlink(missing_ok=True)
            log.debug("spool: no reserve at %s: %s", self.path, exc)
            return False
        os.close(fd)
        return True

    def make_room(self, conn: sqlite3.Connection) -> bool:
        """Before a write: if the disk is nearly full and the reserve is there, give it back
        and checkpoint, so the write has room. Whether it did."""
        if not self.size or not self.present():
            return False
        try:
            if self.free_bytes() >= self.size // 2:
                return False
        except OSError:
            return False
        return self.release(conn)

    def release(self, conn: sqlite3.Connection) -> bool:
        """Give the reserve back and checkpoint (outside any transaction on ``conn``)."""
        if not self.present():
            return False
        self.path.unlink(missing_ok=True)
        log.warning(
            "spool: the disk of %s is full: released its reserve of %d bytes to keep shipping",
            self.path.parent,
            self.size,
        )
        if not conn.in_transaction:
            try:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error as exc:
                log.warning("spool: checkpoint after releasing the reserve failed: %s", exc)
        return True
