"""One retry policy: the wait persisted when a run of retries ends is the one tenacity would
have waited (Retry-After included), and a batch that keeps getting a server error because of
what it holds is split so the rest of it is delivered.

Time is a FakeClock moved by the injected sleep; nothing waits for real backoff.
"""

from __future__ import annotations

from pathlib import Path

from conftest import FakeClock, RecordedSleeps, run_async, span_events

from shipper import DrainResult, RetryPolicy, Shipper, ShipperConfig, StopReason
from shipper.testing import FakeSpanServer
from spool import EventKind, EventRecord, EventState, Spool, SpoolConfig, ops

END = EventKind.END


def spool_with(tmp_path: Path, ids: list[str]) -> SpoolConfig:
    spool = SpoolConfig(path=tmp_path / "spool.db")
    with Spool.open(spool) as opened:
        assert opened.append(span_events(ids, END))
    return spool


def find(spool: SpoolConfig, span_id: str) -> EventRecord:
    with Spool.open(spool) as opened:
        (record,) = opened.run(ops.find(span_id), write=False)
    return record


def drain(
    spool: SpoolConfig, config: ShipperConfig, clock: FakeClock, sleeps: RecordedSleeps
) -> DrainResult:
    async def main() -> DrainResult:
        async with Shipper(spool, config, clock=clock, sleep=sleeps) as shipper:
            return await shipper.drain(timeout=60)

    return run_async(main())


def test_retry_after_is_honoured_in_what_a_drain_persists_when_it_gives_up(
    tmp_path: Path, span_server: FakeSpanServer, ship_config: ShipperConfig
) -> None:
    """issue 11: the run of retries ends (the drain's patience) right after a 503 with
    Retry-After: 300. What it persists must keep every shipper off the event for 300 s, as
    tenacity's own wait did between attempts; a second formula persisted about 20 s."""
    spool = spool_with(tmp_path, ["a"])
    span_server.faults.set_random(fail_rate=1.0, status=503, retry_after=300)
    clock = FakeClock()
    sleeps = RecordedSleeps(clock)

    result = drain(spool, ship_config, clock, sleeps)

    assert (result.exit_code, result.pending) == (1, 1)
    assert sleeps.waits, "the drain retried before giving up"
    assert all(wait >= 300 for wait in sleeps.waits), sleeps.waits
    record = find(spool, "a")
    assert record.state is EventState.PENDING
    assert record.attempts == span_server.request_count
    assert record.next_attempt_at >= clock.now + 300, record.next_attempt_at - clock.now


def test_a_server_error_on_some_spans_does_not_hold_back_the_rest_of_their_batch(
    tmp_path: Path, span_server: FakeSpanServer, ship_config: ShipperConfig
) -> None:
    """issue 11's head-of-line stall: the endpoint answers 500 to any batch holding s07 (a
    server bug on that content). After a few attempts the batch is split like a refused one:
    every other span is delivered, s07 keeps being retried (never dead-lettered for a 5xx),
    and the drain says what the endpoint answered."""
    ids = [f"s{i:02}" for i in range(20)]
    spool = spool_with(tmp_path, ids)
    span_server.faults.refuse(["s07"], status=500, detail="internal server error")
    config = ship_config.with_options(batch_size=20, concurrency=1)
    clock = FakeClock()

    result = drain(spool, config, clock, RecordedSleeps(clock))

    assert span_server.completed_ids() == set(ids) - {"s07"}
    assert span_server.duplicates() == 0
    assert (result.exit_code, result.pending, result.dead) == (1, 1, 0)
    assert result.reason is StopReason.ENDPOINT_ERROR
    assert "HTTP 500 from the endpoint" in result.describe(), result.describe()
    assert "unreachable" not in result.describe()
    record = find(spool, "s07")
    assert record.state is EventState.PENDING
    assert record.last_error == "HTTP 500: internal server error: s07"


def test_an_outage_of_503s_is_not_split(
    tmp_path: Path, span_server: FakeSpanServer, ship_config: ShipperConfig
) -> None:
    """503 (like 429, 502 and 504) says the endpoint is overloaded or away, not that the
    content is bad: splitting would multiply requests during an outage."""
    ids = [f"s{i:02}" for i in range(8)]
    spool = spool_with(tmp_path, ids)
    span_server.faults.set_random(fail_rate=1.0, status=503)
    config = ship_config.with_options(batch_size=8, concurrency=1)
    clock = FakeClock()

    result = drain(spool, config, clock, RecordedSleeps(clock))

    assert result.exit_code == 1
    assert {r.item_count for r in span_server.requests()} == {8}
    assert "HTTP 503 from the endpoint" in result.describe(), result.describe()


def test_a_drain_that_got_no_answer_says_the_endpoint_is_unreachable(tmp_path: Path) -> None:
    spool = spool_with(tmp_path, ["a"])
    config = ShipperConfig(api_key="k", account_id="a", base_url="http://127.0.0.1:9")
    clock = FakeClock()

    result = drain(spool, config, clock, RecordedSleeps(clock))

    assert result.reason is StopReason.UNREACHABLE
    assert "endpoint unreachable" in result.describe()


def test_failing_for_is_the_least_backoff_the_attempts_waited() -> None:
    policy = RetryPolicy(backoff_initial=1.0, backoff_max=8.0, retry_after_cap=300, max_age=100)
    waits = [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert [policy.failing_for(n) for n in range(7)] == [sum(waits[:n]) for n in range(7)]
    assert policy.max_wait == 300
    # Old by the wall clock alone is not enough, nor failing long alone.
    assert not policy.expired(age=10 * 86_400, attempts=1, waited=0.0)
    assert not policy.expired(age=50, attempts=100, waited=0.0)
    assert policy.expired(age=100, attempts=3, waited=93.0)
