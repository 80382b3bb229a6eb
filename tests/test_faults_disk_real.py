"""A real full disk (issue 12): a 4 MiB tmpfs, filled by the spool's own WAL or by another
program, not SQLite's ``max_page_count``.

Shipping is what frees space, and it writes too (claims, acks, handing batches back). A
shipper keeps a reserve file beside the spool (``SPOOL_SHIP_RESERVE_BYTES``) and gives it back
when the disk is full, so ``drain`` and ``run`` keep shipping, and no event is left leased
until its lease runs out. Mounting needs root (CI runs as root); elsewhere these skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import run_program, span_item, status_json, tmpfs

from shipper.testing import FakeSpanServer
from spool import AsyncSpool, EventState, Spool, SpoolConfig, SyncSpoolProcessor

pytestmark = pytest.mark.slow

RESERVE = 1 << 20
SPOOL_SHIP = str(Path(sys.executable).with_name("spool-ship"))


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs of its own, unmounted afterwards."""
    with tmpfs(tmp_path / "disk", "4m") as mount:
        yield mount


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def span(n: int) -> dict[str, Any]:
    return span_item(f"s{n}", "trace-full", end=True, input={"prompt": "p" * 600})


def spooled(config: SpoolConfig) -> set[str]:
    with Spool.open(config, create=False) as opened:
        return {r.span_id for r in opened.export(list(EventState))}


def make_reserve(config: SpoolConfig) -> None:
    """What a sidecar started before the agents does: open the spool as a shipper."""

    async def main() -> None:
        opened = await AsyncSpool.open(config)
        await opened.close()

    asyncio.run(main())


def fill_with_spans(config: SpoolConfig) -> None:
    """An agent spools until the disk refuses it (the reserve left alone)."""
    processor = SyncSpoolProcessor(config=config)
    n = 0
    while not processor.unrecorded():
        for _ in range(200):
            processor.on_span_end(span(n))
            n += 1
        processor.shutdown()  # a last try, and what it could not record
        assert n < 100_000, "the disk never filled"


def fill_disk(directory: Path) -> None:
    """Write a file until the file system has no block left."""
    with (directory / f"ballast-{uuid.uuid4().hex}").open("wb", buffering=0) as ballast:
        try:
            while True:
                ballast.write(b"\0" * 65536)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
        # What is left is less than the last write: fill it too.
        with contextlib.suppress(OSError):
            while True:
                ballast.write(b"\0" * 512)


def env_for(server: FakeSpanServer) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPOOL_SHIP_", "SGP_"))}
    return env | {
        "SGP_API_KEY": "k",
        "SGP_ACCOUNT_ID": "a",
        "SGP_CLIENT_BASE_URL": server.base_url,
        "SPOOL_SHIP_RESERVE_BYTES": str(RESERVE),
        "SPOOL_SHIP_LINGER": "0",
        "SPOOL_SHIP_POLL_INTERVAL": "0.02",
    }


def test_drain_ships_a_spool_whose_wal_filled_the_disk(small_disk: Path) -> None:
    config = SpoolConfig(path=small_disk / "spool.db", reserve_bytes=RESERVE)
    make_reserve(config)
    reserve = small_disk / "spool.db.reserve"
    assert reserve.stat().st_size == RESERVE

    fill_with_spans(config)

    assert free_bytes(small_disk) < 64 * 1024
    assert reserve.exists()
    wal = Path(f"{config.path}-wal").stat().st_size
    assert wal > 256 * 1024, f"the WAL ({wal} bytes) is not what filled the disk"
    expected = spooled(config)
    assert len(expected) > 1000
    with FakeSpanServer(api_key="k") as server:
        env = env_for(server)
        done = run_program(
            ["spool-ship", "drain", "--spool", str(config.path), "--timeout", "60"], env
        )
        assert done.returncode == 0, done.stderr
        assert server.completed_ids() == expected
    facts = status_json(config.path, env)
    assert (facts["pending"], facts["leased"], facts["done"]) == (0, 0, len(expected))
    assert "released its reserve" in done.stderr


def test_filling_the_disk_during_run_leaves_nothing_leased(small_disk: Path) -> None:
    config = SpoolConfig(path=small_disk / "spool.db", reserve_bytes=RESERVE)
    first = {f"s{n}" for n in range(300)}
    processor = SyncSpoolProcessor(config=config)
    processor.on_spans_end([span(n) for n in range(300)])
    processor.shutdown()

    with FakeSpanServer(api_key="k") as server:
        server.faults.hang()  # batches stay in flight while the disk fills
        env = env_for(server)
        command = [SPOOL_SHIP, "run", "--spool", str(config.path), "--stop-timeout", "10"]
        with subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True) as proc:
            try:
                assert server.wait_for(lambda: server.request_count > 0, 30)
                assert (small_disk / "spool.db.reserve").exists()
                fill_disk(small_disk)  # another program takes the last block
                assert free_bytes(small_disk) < 4096
                server.faults.unhang()
                assert server.wait_for(lambda: first <= server.completed_ids(), 60)
                proc.send_signal(signal.SIGTERM)
                _, err = proc.communicate(timeout=60)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate()
        assert proc.returncode == 0, err
    assert "released its reserve" in err
    facts = status_json(config.path, env)
    assert (facts["pending"], facts["leased"]) == (0, 0)
    assert facts["done"] == len(first)
