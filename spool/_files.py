"""The spool's files on disk: private to the user who runs the agent, never followed through a
link, never another user's.

A spool path may sit in a shared directory. Another user may have created the file first (mode
0666, to read the spans or feed in their own) or planted a symbolic link to a file of theirs
or of ours. So the spool, and its ``-wal`` and ``-shm`` when they exist, must each be a
regular file, owned by this user, that neither group nor others can read or write.

SQLite opens the database by name and creates ``-wal`` and ``-shm`` beside it by name with
``O_CREAT``, following links, with the database file's mode. So the checks are made on all
three before SQLite opens them (:func:`check_private`), and the database is created here with
``O_NOFOLLOW | O_EXCL`` mode 0600 (:func:`create_private`), so SQLite's files inherit 0600.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

from ._errors import NotASpoolError, SpoolOpenError, UnsafeSpoolError

__all__ = ["check_private", "create_private", "make_private_dirs", "private_copy"]

_SIDE_FILES = ("-wal", "-shm")


def make_private_dirs(directory: Path) -> None:
    """Create ``directory`` and every missing parent, each mode 0700."""
    missing: list[Path] = []
    for candidate in (directory, *directory.parents):
        if os.path.lexists(candidate):
            break
        missing.append(candidate)
    for candidate in reversed(missing):
        try:
            candidate.mkdir(mode=0o700)
        except FileExistsError:
            continue  # made by another process at the same time
        # mkdir's mode passes through the umask; 0700 is the most it may be.
        os.chmod(candidate, 0o700)


def create_private(path: Path) -> bool:
    """Create ``path`` empty, mode 0600, not through a link; False when something is already
    there (it is then checked by :func:`check_private`)."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        return False
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
    finally:
        os.close(fd)
    return True


def check_private(path: Path) -> os.stat_result:
    """Raise :class:`UnsafeSpoolError` unless ``path`` (and its ``-wal`` and ``-shm``, where
    they exist) is a regular file of this user's, private to them; the file's ``lstat``."""
    found = _check_one(path, path)
    if found is None:
        raise SpoolOpenError(path, "no spool at this path")
    for suffix in _SIDE_FILES:
        _check_one(path, Path(f"{path}{suffix}"))
    return found


def _check_one(spool: Path, candidate: Path) -> os.stat_result | None:
    try:
        st = os.lstat(candidate)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SpoolOpenError(spool, f"cannot check {candidate}: {exc.strerror or exc}") from exc
    if stat.S_ISLNK(st.st_mode):
        raise UnsafeSpoolError(
            spool, f"{candidate} is a symbolic link; a spool is never opened through a link"
        )
    if stat.S_ISDIR(st.st_mode) and candidate == spool:
        raise NotASpoolError(spool, "is a directory, not a spool file")
    if not stat.S_ISREG(st.st_mode):
        raise UnsafeSpoolError(spool, f"{candidate} is not a regular file")
    uid = os.geteuid()
    if st.st_uid != uid:
        raise UnsafeSpoolError(
            spool,
            f"{candidate} belongs to uid {st.st_uid}, not to this user (uid {uid}); a spool "
            "another user created could be read or fed by them: remove it, or run as its owner",
        )
    if st.st_mode & 0o077:
        raise UnsafeSpoolError(
            spool,
            f"{candidate} has mode {stat.S_IMODE(st.st_mode):04o}: group or others can read "
            f"or write it, and spans hold prompts and outputs; if it is yours, "
            f"'chmod 600 {candidate}'",
        )
    return st


def private_copy(source: Path, target: Path) -> None:
    """Copy ``source`` to a new file ``target``, mode 0600 from its first byte."""
    fd = os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as out, source.open("rb") as src:
        os.fchmod(out.fileno(), 0o600)
        shutil.copyfileobj(src, out, 1 << 20)
