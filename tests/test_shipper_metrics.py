"""shipper.metrics: what the ship loop counts, when it is written to the spool, and that a
failed write loses nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_async

from shipper.metrics import ShipMetrics, error_meta, request_code
from spool import AsyncSpool, MetaKey, Spool, SpoolError, ops


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_counts_are_written_once_per_interval_and_kept_as_totals(tmp_path: Path) -> None:
    clock = Clock()
    metrics = ShipMetrics(clock=clock, write_every=5.0)
    metrics.request(200)
    metrics.request(None)
    metrics.delivered(50)
    metrics.retry()
    assert metrics.due() == {}  # not yet
    clock.now += 5
    counts = metrics.due()
    assert counts == {"requests:200": 1, "requests:error": 1, "delivered": 50, "retries": 1}
    assert metrics.unwritten() == {}
    assert metrics.totals == counts  # totals are not reset by a write
    assert metrics.last_progress == 100.0  # the last request

    async def write() -> None:
        async with await AsyncSpool.open(tmp_path / "s.db") as spool:
            await metrics.write(spool, counts)

    run_async(write())
    with Spool.open(tmp_path / "s.db") as spool:
        assert spool.stats().meta == {}
        assert spool.run(ops.status_report(), write=False)[1] == counts


def test_counts_that_cannot_be_written_are_given_back(tmp_path: Path) -> None:
    metrics = ShipMetrics()
    metrics.delivered(7)
    counts = metrics.take()

    async def write() -> None:
        spool = await AsyncSpool.open(tmp_path / "s.db")
        await spool.close()
        await metrics.write(spool, counts)

    with pytest.raises(SpoolError):
        run_async(write())
    assert metrics.unwritten() == {"delivered": 7}


def test_request_codes_and_error_facts() -> None:
    assert request_code(422) == "422"
    assert request_code(None) == "error"
    assert error_meta("HTTP 401: no", 5.0) == {
        MetaKey.LAST_ERROR.value: "HTTP 401: no",
        MetaKey.LAST_ERROR_AT.value: "5.0",
    }
