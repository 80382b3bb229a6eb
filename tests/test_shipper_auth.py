"""401/403: shipping pauses (no new batches), no attempt is burned, nothing is dead-lettered,
the blocked reason is in the spool for ``status``; probes continue with backoff and shipping
resumes by itself once the credentials are accepted again."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from conftest import (
    RecordedSleeps,
    append_off_loop,
    eventually,
    run_async,
    server_reaches,
    span_events,
)

from shipper import Shipper, ShipperConfig, StopReason
from shipper.testing import FakeSpanServer
from spool import EventKind, EventRecord, EventState, MetaKey, Spool, SpoolConfig, SpoolStats

END = EventKind.END
DETAILS = {401: "Invalid API key", 403: "API key is not allowed for this account"}


def stats(spool: SpoolConfig) -> SpoolStats:
    with Spool.open(spool) as opened:
        return opened.stats()


def all_records(spool: SpoolConfig) -> list[EventRecord]:
    with Spool.open(spool) as opened:
        return list(opened.export(list(EventState)))


def append(spool: SpoolConfig, ids: list[str]) -> None:
    with Spool.open(spool) as opened:
        assert opened.append(span_events(ids, END))


@pytest.mark.parametrize("status", [401, 403])
def test_refused_credentials_pause_everything_until_they_are_accepted(
    tmp_path: Path, span_server: FakeSpanServer, ship_config: ShipperConfig, status: int
) -> None:
    spool = SpoolConfig(path=tmp_path / "spool.db")
    first = [f"a{i:03}" for i in range(40)]
    later = [f"b{i:03}" for i in range(100)]
    append(spool, first)
    span_server.faults.fail_auth(status)
    sleeps = RecordedSleeps()
    config = ship_config.with_options(
        batch_size=50, concurrency=4, backoff_initial=1.0, backoff_max=8.0
    )
    blocked = f"HTTP {status}: {DETAILS[status]}"

    async def main() -> None:
        async with Shipper(spool, config, sleep=sleeps) as shipper:
            running = asyncio.create_task(shipper.run())
            await eventually(
                lambda: stats(spool).meta.get(MetaKey.BLOCKED) == blocked, "the blocked reason"
            )
            # New events while blocked: three slots are free, yet nothing new is claimed.
            await append_off_loop(spool, span_events(later, END))
            probes = span_server.request_count
            await server_reaches(
                span_server, lambda: span_server.request_count >= probes + 5, "5 more probes"
            )
            during = stats(spool)
            assert (during.leased, during.pending, during.dead) == (40, 100, 0)
            assert {r.item_count for r in span_server.requests()} == {40}
            assert set(span_server.stats().by_status) == {status}
            assert all(r.attempts == 0 for r in all_records(spool))

            span_server.faults.fail_auth(None)
            await server_reaches(
                span_server,
                lambda: span_server.completed_ids() == set(first + later),
                "shipping to resume",
            )
            await eventually(lambda: stats(spool).done == 140, "the acks")
            await shipper.stop(timeout=5)
            await running

    run_async(main())

    after = stats(spool)
    assert (after.done, after.dead, after.pending, after.leased) == (140, 0, 0, 0)
    assert MetaKey.BLOCKED not in after.meta
    assert all(r.attempts == 0 for r in all_records(spool))
    # The probes backed off: 1, 2, 4, 8, 8, ... (plus up to 1 s of jitter, capped at 8).
    waits = sleeps.waits
    assert len(waits) >= 5
    for attempt, wait in enumerate(waits[:5], start=1):
        base = min(2.0 ** (attempt - 1), 8.0)
        assert base <= wait <= min(base + 1.0, 8.0), (attempt, wait)


def test_drain_with_a_revoked_key_stops_within_its_timeout_naming_the_failure(
    tmp_path: Path, span_server: FakeSpanServer, ship_config: ShipperConfig
) -> None:
    """Real sleeps, long backoff: the drain's deadline, not its patience, ends it."""
    spool = SpoolConfig(path=tmp_path / "spool.db")
    append(spool, [f"s{i:03}" for i in range(120)])
    config = ship_config.with_options(api_key="revoked", backoff_initial=5.0, backoff_max=20.0)
    timeout = 1.0

    async def main() -> float:
        async with Shipper(spool, config) as shipper:
            began = time.monotonic()
            result = await shipper.drain(timeout=timeout)
            elapsed = time.monotonic() - began
        assert result.exit_code == 1
        assert result.reason is StopReason.AUTH
        assert result.detail == "HTTP 401: Invalid API key"
        assert (result.pending, result.leased, result.dead, result.shipped) == (120, 0, 0, 0)
        assert "authentication failed (HTTP 401: Invalid API key)" in result.describe()
        return elapsed

    elapsed = run_async(main())
    assert elapsed < timeout + 2.0
    assert stats(spool).meta[MetaKey.BLOCKED] == "HTTP 401: Invalid API key"
    assert all(r.attempts == 0 for r in all_records(spool))
    assert set(span_server.stats().by_status) == {401}


def test_drain_gives_up_on_refused_credentials_after_its_patience(
    tmp_path: Path, span_server: FakeSpanServer, ship_config: ShipperConfig
) -> None:
    spool = SpoolConfig(path=tmp_path / "spool.db")
    append(spool, ["a", "b"])
    span_server.faults.fail_auth(403)
    sleeps = RecordedSleeps()

    async def main() -> None:
        async with Shipper(spool, ship_config, sleep=sleeps) as shipper:
            result = await shipper.drain(timeout=30)
        assert result.exit_code == 1
        assert result.reason is StopReason.AUTH
        assert result.detail == "HTTP 403: API key is not allowed for this account"
        assert (result.pending, result.dead) == (2, 0)

    run_async(main())
    assert span_server.request_count == len(sleeps.waits) + 1
    assert all(r.attempts == 0 and r.state is EventState.PENDING for r in all_records(spool))
