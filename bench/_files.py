"""Removing what a measurement wrote, once it is done."""

from __future__ import annotations

import shutil
from pathlib import Path

__all__ = ["remove_database"]


def remove_database(path: Path) -> None:
    """Delete a SQLite database with its -wal and -shm (or a directory, persist-queue's).
    Its dirty pages are then dropped rather than written back while the next measurement
    runs."""
    if path.is_dir():
        shutil.rmtree(path)
        return
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
