"""The operator's view after the wall clock stepped back a day (issue 12, "clock jumps").

A step back leaves times a day ahead in the spool: next attempts, leases, enqueue times. The
shipper's claim takes such events at once (tests/test_shipper_clock.py); ``status`` and
``stuck`` must say so, with the same horizon (``max(backoff_max, retry_after_cap)``, plus a
lease for leases), read from the same ``SPOOL_SHIP_*`` variables as the shipper.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_cli_inspect import as_json, event
from test_cli_inspect import cli as run_cli
from typer.testing import Result

from cli.inspect import stuck_reasons, wait_horizon
from shipper import RetryPolicy, ShipperConfig
from spool import EventKind, EventState, MetaKey, NewEvent, Spool, SpoolConfig, ops

DAY = 86_400.0
LEASE = 60.0
# The shipper's defaults: backoff_max 20 s, retry_after_cap 300 s, lease 60 s.
DEFAULT_ENV: dict[str, str | None] = {
    "SPOOL_SHIP_BACKOFF_MAX": None,
    "SPOOL_SHIP_RETRY_AFTER_CAP": None,
    "SPOOL_SHIP_LEASE": None,
}


@dataclass(frozen=True)
class Stepped:
    path: Path
    now: float


def end(span_id: str, at: float) -> NewEvent:
    return event(span_id, "t", EventKind.END, at)


def stepped_back_spool(path: Path, now: float) -> Stepped:
    """Four events written by a shipper whose clock read a day later than ``now``:

    [1] p: pending, its next attempt 20 s after that (a day ahead of now)
    [2] l: leased by a shipper that died, its lease a day ahead of now
    and two written under the current clock, which must keep their meaning:
    [3] w: pending in an ordinary backoff, due in 2 minutes
    [4] h: leased, its lease running out in a minute
    """
    then = now + DAY
    with Spool.open(path) as spool:
        spool.append([end("p", then - 5), end("l", then - 4), end("w", now - 3), end("h", now - 2)])
        assert [c.seq for c in spool.run(ops.claim("before", 2, LEASE, then))] == [1, 2]
        spool.run(ops.fail([1], "before", then + 20, "HTTP 503: service unavailable"))
        assert [c.seq for c in spool.run(ops.claim("now", 1, LEASE, now))] == [3]
        spool.run(ops.fail([3], "now", now + 120, "HTTP 503: service unavailable"))
        assert [c.seq for c in spool.run(ops.claim("now", 1, LEASE, now))] == [4]
    return Stepped(path, now)


@pytest.fixture
def stepped(tmp_path: Path) -> Stepped:
    return stepped_back_spool(tmp_path / "spool.db", time.time())


def cli(*args: str | Path, env: Mapping[str, str] | None = None) -> Result:
    """The CLI with the shipper's waits at their defaults, unless ``env`` sets them."""
    return run_cli(*args, env={**DEFAULT_ENV, **(env or {})})


# ---- stuck ---------------------------------------------------------------------------------


def test_stuck_lists_the_events_a_clock_step_back_left_a_day_ahead(stepped: Stepped) -> None:
    rows = as_json(cli("stuck", "--json", "--spool", stepped.path))
    assert [(r["seq"], r["span_id"], r["why"]) for r in rows] == [
        (1, "p", ["clock_stepped_back"]),
        (2, "l", ["clock_stepped_back"]),
    ]


def test_stuck_says_why_a_day_ahead_is_stuck(stepped: Stepped) -> None:
    result = cli("stuck", "--spool", stepped.path)
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "seq 1: pending end of span p" in out
    assert "next attempt 1d ahead, beyond any wait a shipper sets: the clock stepped back" in out
    assert "seq 2: leased end of span l" in out
    assert (
        "lease expires 1d ahead, beyond any lease a shipper writes: the clock stepped back" in out
    )
    assert "seq 3" not in out
    assert "seq 4" not in out


def test_stuck_with_a_state_filter_lists_them_too(stepped: Stepped) -> None:
    for state, seqs in (("pending", [1]), ("leased", [2])):
        rows = as_json(cli("stuck", "--json", "--state", state, "--spool", stepped.path))
        assert [r["seq"] for r in rows] == seqs


def test_stuck_uses_the_shippers_waits_from_the_environment(stepped: Stepped) -> None:
    """With a Retry-After cap of two days, a day ahead is a wait a shipper could have set."""
    env = {"SPOOL_SHIP_RETRY_AFTER_CAP": str(2 * DAY)}
    result = cli("stuck", "--json", "--spool", stepped.path, env=env)
    assert as_json(result) == []


def test_a_bad_wait_variable_is_one_clear_line(stepped: Stepped) -> None:
    result = cli("stuck", "--spool", stepped.path, env={"SPOOL_SHIP_LEASE": "soon"})
    assert result.exit_code == 2
    assert (
        result.stderr.strip() == "spool-ship: SPOOL_SHIP_LEASE='soon' is not a valid lease_seconds"
    )


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"SPOOL_SHIP_BACKOFF_MAX": "900"},
        {"SPOOL_SHIP_RETRY_AFTER_CAP": "0", "SPOOL_SHIP_LEASE": "5"},
        {"SPOOL_SHIP_BACKOFF_MAX": " 1e3 ", "SPOOL_SHIP_RETRY_AFTER_CAP": "30.5"},
    ],
)
def test_the_horizon_is_the_shippers(env: Mapping[str, str]) -> None:
    config = ShipperConfig.from_env(env)
    assert wait_horizon(env) == (RetryPolicy.from_config(config).max_wait, config.lease_seconds)


def test_stuck_reasons_agrees_with_ops_stuck_across_the_horizon(stepped: Stepped) -> None:
    now = time.time()
    with Spool.open(SpoolConfig(path=stepped.path), create=False) as spool:
        every = list(spool.export(list(EventState)))
        for max_wait in (300.0, 2 * DAY, float("inf")):
            got = spool.run(
                ops.stuck(99, 0.0, now, 100, max_wait=max_wait, lease_seconds=LEASE), write=False
            )
            expected = [r.seq for r in every if stuck_reasons(r, 99, 0.0, now, (max_wait, LEASE))]
            assert [r.seq for r in got] == expected
            assert expected == ([1, 2] if max_wait == 300.0 else [])


# ---- status --------------------------------------------------------------------------------


def test_status_table_says_due_now_not_in_a_day(stepped: Stepped) -> None:
    result = cli("status", "--spool", stepped.path)
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "in 23h" not in out, out
    assert "in 1d" not in out, out
    assert "next attempt    now: 1 pending event(s) due" in out, out
    assert "1 set beyond any wait a shipper sets: the clock stepped back" in out
    assert (
        "leased          2 (1 with a lease beyond any lease a shipper writes: the clock stepped "
        "back; such leases count as expired)" in out
    )


def test_status_says_times_written_a_day_ahead_are_ahead_of_the_clock(tmp_path: Path) -> None:
    now = time.time()
    with Spool.open(tmp_path / "s.db") as spool:
        spool.append([end("p", now + DAY)])
        spool.run(ops.set_meta({MetaKey.LAST_SUCCESS_AT.value: repr(now + DAY)}))
    result = cli("status", "--spool", tmp_path / "s.db")
    assert result.exit_code == 0, result.stderr
    rows = {line[:16].strip(): line[16:] for line in result.stdout.splitlines()}
    for name in ("oldest pending", "last success"):
        assert rows[name].endswith("(23h 59m ahead of this clock: it stepped back)"), rows


def test_status_json_counts_what_lies_beyond_the_horizon(stepped: Stepped) -> None:
    facts = as_json(cli("status", "--json", "--spool", stepped.path))
    assert (facts["pending"], facts["leased"]) == (2, 2)
    assert facts["due_now"] == 1
    assert facts["next_attempt_at"] == facts["generated_at"]
    assert facts["beyond_horizon"] == {"pending": 1, "leased": 1}


def test_status_without_a_step_names_the_next_attempt(tmp_path: Path) -> None:
    now = time.time()
    with Spool.open(tmp_path / "s.db") as spool:
        spool.append([end("w", now - 3)])
        spool.run(ops.claim("now", 1, LEASE, now))
        spool.run(ops.fail([1], "now", now + 120, "HTTP 503: service unavailable"))
    facts = as_json(cli("status", "--json", "--spool", tmp_path / "s.db"))
    assert facts["due_now"] == 0
    assert facts["next_attempt_at"] == pytest.approx(now + 120)
    assert facts["beyond_horizon"] == {"pending": 0, "leased": 0}
    table = cli("status", "--spool", tmp_path / "s.db").stdout
    assert re.search(r"^next attempt    \S.* \(in 1m \d+s\)$", table, re.MULTILINE), table
    assert "clock" not in table


def test_status_of_an_empty_spool_has_no_next_attempt(tmp_path: Path) -> None:
    Spool.open(tmp_path / "s.db").close()
    facts = as_json(cli("status", "--json", "--spool", tmp_path / "s.db"))
    assert (facts["due_now"], facts["next_attempt_at"]) == (0, None)
    assert "next attempt    none" in cli("status", "--spool", tmp_path / "s.db").stdout


# ---- show ----------------------------------------------------------------------------------


def show_rows(path: Path, seq: int) -> dict[str, str]:
    result = cli("show", str(seq), "--spool", path)
    assert result.exit_code == 0, result.stderr
    head = result.stdout.split("payload:")[0]
    return {line[:15].strip(): line[15:] for line in head.splitlines()}


def test_show_says_a_day_ahead_is_due_or_expired(stepped: Stepped) -> None:
    pending = show_rows(stepped.path, 1)
    assert pending["next attempt"].startswith("now (set for "), pending
    assert pending["next attempt"].endswith(
        "beyond any wait a shipper sets: the clock stepped back)"
    )
    assert pending["enqueued"].endswith("ahead of this clock: it stepped back)"), pending
    leased = show_rows(stepped.path, 2)
    assert leased["lease"].startswith("before until "), leased
    assert leased["lease"].endswith(
        "beyond any lease a shipper writes: the clock stepped back; it counts as expired)"
    )
    # An ordinary backoff and an ordinary lease keep their times.
    assert re.fullmatch(r"\S+ \S+ \(in 1m \d+s\)", show_rows(stepped.path, 3)["next attempt"])
    assert re.fullmatch(r"now until \S+ \S+ \(in \d+s\)", show_rows(stepped.path, 4)["lease"])


def test_stuck_says_an_enqueue_time_a_day_ahead_is_ahead_of_the_clock(stepped: Stepped) -> None:
    out = cli("stuck", "--spool", stepped.path).stdout
    assert "enqueued 23h 59m ahead of this clock" in out, out
    assert "enqueued 0s ago" not in out
