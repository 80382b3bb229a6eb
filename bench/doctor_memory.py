"""Peak resident memory of ``spool-ship doctor`` on a large spool, against the way it used to
VACUUM (temporary data in memory), both run here on copies of the same spool.

    .venv/bin/python bench/doctor_memory.py              # a ~150 MiB spool
    .venv/bin/python bench/doctor_memory.py --mib 40     # quicker

Each runs in a fresh child process; a thread samples the child's RSS with psutil 100 times a
second. The spool is built in a temporary directory on the disk of ``--dir`` (default: the
system's), and removed afterwards.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from _files import remove_database

from spool import EventKind, NewEvent, Spool, SpoolConfig

MIB = 1 << 20
# What doctor did before spool/maintenance.py: VACUUM on a connection whose temporary data
# stays in memory (the spool's connections set temp_store = MEMORY).
BASELINE = (
    "import sqlite3, sys\n"
    "conn = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
    "conn.execute('PRAGMA temp_store = MEMORY')\n"
    "conn.execute('VACUUM')\n"
    "conn.execute('PRAGMA wal_checkpoint(TRUNCATE)')\n"
)


def build(path: Path, mib: int) -> int:
    """A spool of about ``mib`` MiB of pending events (1.2 KiB payloads); its size."""
    body = b'{"x":"' + os.urandom(600).hex().encode() + b'"}'
    batches = max(1, mib * MIB // (1000 * (len(body) + 100)))
    with Spool.open(SpoolConfig(path=path, max_bytes=4 * mib * MIB + (1 << 30))) as spool:
        for b in range(batches):
            spool.append([NewEvent(f"s{b}-{i}", "t", EventKind.END, body) for i in range(1000)])
        spool.checkpoint("TRUNCATE")
    return path.stat().st_size


def peak_rss(command: list[str]) -> int:
    """Run ``command``; the peak RSS of the child, in bytes."""
    psutil: Any = importlib.import_module("psutil")  # psutil ships no type hints
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    child = psutil.Process(proc.pid)
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            try:
                peak = max(peak, child.memory_info().rss)
            except psutil.Error:
                return
            stop.wait(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, err = proc.communicate()
    stop.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"{command[0]} failed ({proc.returncode}): {err.decode()}")
    return int(peak)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=150, help="spool size to build (MiB)")
    parser.add_argument("--dir", type=Path, default=None, help="where to build it")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        original = Path(tmp) / "source.db"
        size = build(original, args.mib)
        spool_ship = str(Path(sys.executable).with_name("spool-ship"))
        results = {}
        for name, command in (
            ("doctor", [spool_ship, "doctor", "--spool"]),
            ("baseline", [sys.executable, "-c", BASELINE]),
        ):
            copy = Path(tmp) / f"{name}.db"
            shutil.copyfile(original, copy)
            os.chmod(copy, 0o600)
            results[name] = peak_rss([*command, str(copy)])
            remove_database(copy)
        remove_database(original)
    doctor, baseline = results["doctor"] / MIB, results["baseline"] / MIB
    print(f"spool {size / MIB:.0f} MiB")
    print(f"  doctor (VACUUM, temp_store=FILE next to the spool): peak RSS {doctor:.0f} MiB")
    print(f"  baseline (VACUUM, temp_store=MEMORY, as before):    peak RSS {baseline:.0f} MiB")
    print(f"  ratio doctor/baseline: {doctor / baseline:.2f}")


if __name__ == "__main__":
    main()
