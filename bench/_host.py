"""One line describing the machine a benchmark ran on, for its report."""

from __future__ import annotations

import os
import platform
import sqlite3
from pathlib import Path

__all__ = ["describe_host"]


def describe_host(*extra: str) -> str:
    """OS, CPU model and count, Python and SQLite versions, then ``extra`` parts."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    parts = [f"Python {platform.python_version()}", f"SQLite {sqlite3.sqlite_version}", *extra]
    return f"{platform.system()} {platform.release()}, {cpu}, {os.cpu_count()} CPUs; " + ", ".join(
        parts
    )
