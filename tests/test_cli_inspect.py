"""``status``, ``stuck``, ``show``, ``export`` through typer's CliRunner, on a real spool whose
events were driven through every state with the spool's own operations."""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from cli import app
from cli.inspect import stuck_reasons
from spool import EventKind, EventState, MetaKey, NewEvent, Spool, SpoolConfig, ops

OWNER = "shipper-1"
STATUS_INTS = ("pending", "leased", "done", "dead", "dropped", "refused")
RECORD_KEYS = {
    "seq",
    "span_id",
    "trace_id",
    "kind",
    "state",
    "attempts",
    "last_error",
    "enqueued_at",
    "next_attempt_at",
    "lease_expires_at",
}


def payload(span_id: str, trace_id: str, *, end: bool, **extra: Any) -> bytes:
    item: dict[str, Any] = {
        "id": span_id,
        "trace_id": trace_id,
        "name": f"op-{span_id}",
        "start_timestamp": "2024-05-01T12:00:00+00:00",
    }
    if end:
        item["end_timestamp"] = "2024-05-01T12:00:01+00:00"
    return json.dumps(item | extra, separators=(",", ":")).encode()


def event(span_id: str, trace_id: str, kind: EventKind, at: float, **extra: Any) -> NewEvent:
    body = payload(span_id, trace_id, end=kind is EventKind.END, **extra)
    return NewEvent(span_id, trace_id, kind, body, enqueued_at=at)


@dataclass(frozen=True)
class Built:
    path: Path
    now: float


def build_spool(path: Path, now: float) -> Built:
    """Nine events in every state (seqs in brackets):

    done: [1] start a and [3] start b superseded, [2] end a and [4] end b shipped
    dead: [5] c (422), [9] g (400), both in trace t2
    pending: [6] d retried 4 times, next attempt in 4 minutes (within the
             default 300 s Retry-After cap: a wait a shipper sets); [8] f, 30 s old
    leased: [7] e, lease expired 40 s ago
    """
    with Spool.open(path) as spool:
        spool.append(
            [
                event("a", "t1", EventKind.START, now - 7200),
                event("a", "t1", EventKind.END, now - 7199),
                event("b", "t1", EventKind.START, now - 7198),
                event("b", "t1", EventKind.END, now - 7197, input={"q": "[bold]not markup[/]"}),
                event("c", "t2", EventKind.END, now - 60),
                event("d", "t2", EventKind.END, now - 50),
                event("e", "t3", EventKind.END, now - 40),
                event("f", "t3", EventKind.END, now - 30),
                event("g", "t2", EventKind.END, now - 20),
            ]
        )
        claimed = spool.run(ops.claim(OWNER, 2, 60, now - 7000))
        assert [c.seq for c in claimed] == [2, 4]
        spool.run(ops.ack([2, 4], now - 6990))
        claimed = spool.run(ops.claim(OWNER, 10, 60, now - 100))
        assert [c.seq for c in claimed] == [5, 6, 7, 8, 9]
        spool.run(ops.dead_letter({5: "HTTP 422: bad span c", 9: "HTTP 400: bad span g"}, now - 90))
        spool.run(ops.release([8], OWNER))
        spool.run(ops.fail([6], OWNER, now - 99, "HTTP 503: attempt 1"))
        for k in range(1, 4):
            assert [c.seq for c in spool.run(ops.claim(OWNER, 1, 60, now - 99 + k))] == [6]
            retry_at = now + 240 if k == 3 else now - 99 + k + 0.5
            spool.run(ops.fail([6], OWNER, retry_at, f"HTTP 503: attempt {k + 1}"))
        spool.run(ops.add_counters({"dropped:spool_full": 2, "refused:too_large": 1}))
        spool.run(
            ops.set_meta(
                {
                    MetaKey.LAST_ERROR.value: "HTTP 503: attempt 4",
                    MetaKey.LAST_ERROR_AT.value: repr(now - 10),
                    MetaKey.BLOCKED.value: "401 Unauthorized: check SGP_API_KEY",
                }
            )
        )
    return Built(path, now)


@pytest.fixture
def built(tmp_path: Path) -> Built:
    return build_spool(tmp_path / "spool.db", time.time())


def cli(
    *args: str | Path, input: str | None = None, env: Mapping[str, str | None] | None = None
) -> Result:
    """Run the app as the console script would (``env``: variables to set, or unset with
    ``None``); a traceback is a test failure."""
    result = CliRunner().invoke(app, [str(a) for a in args], input=input, env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def as_json(result: Result) -> Any:
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


# ---- status --------------------------------------------------------------------------------


def test_status_json_has_the_contract_keys_as_integers(built: Built) -> None:
    facts = as_json(cli("status", "--json", "--spool", built.path))
    assert {k: facts[k] for k in STATUS_INTS} == {
        "pending": 2,
        "leased": 1,
        "done": 4,
        "dead": 2,
        "dropped": 2,
        "refused": 1,
    }
    assert all(type(facts[k]) is int for k in STATUS_INTS)
    assert facts["superseded"] == 2
    assert facts["dropped_by_reason"] == {"spool_full": 2}
    assert facts["refused_by_reason"] == {"too_large": 1}
    assert facts["path"] == str(built.path)
    assert facts["blocked"] is True
    assert facts["blocked_reason"] == "401 Unauthorized: check SGP_API_KEY"
    assert facts["last_error"] == "HTTP 503: attempt 4"
    assert facts["last_error_at"] == pytest.approx(built.now - 10)
    assert facts["last_success_at"] == pytest.approx(built.now - 6990)  # recorded by ack
    assert facts["last_success_age_s"] >= 6990
    # The oldest event not yet delivered is d (enqueued 50 s before `now`), which is leased
    # or pending; the stats look at both.
    assert facts["oldest_pending_at"] == pytest.approx(built.now - 50)
    assert 50 <= facts["oldest_pending_age_s"] < 50 + 30
    assert facts["file_bytes"] > 0
    assert facts["total_bytes"] == facts["file_bytes"] + facts["wal_bytes"]


def test_status_json_and_format_json_are_the_same(built: Built) -> None:
    one = as_json(cli("status", "--json", "--spool", built.path))
    two = as_json(cli("status", "--format", "json", "--spool", built.path))
    for facts in (one, two):
        del facts["generated_at"], facts["oldest_pending_age_s"], facts["last_success_age_s"]
        del facts["next_attempt_at"]  # now, while events are due
    assert one == two


def test_status_table_names_everything_an_operator_asks_first(built: Built) -> None:
    result = cli("status", "--spool", built.path)
    assert result.exit_code == 0
    out = result.stdout
    for expected in (
        str(built.path),
        "pending         2",
        "dead            2",
        "spool_full: 2",
        "too_large: 1",
        "HTTP 503: attempt 4",
        "yes: 401 Unauthorized: check SGP_API_KEY",
        "ago",
    ):
        assert expected in out, out
    assert result.stderr == ""


def test_status_of_an_empty_spool(tmp_path: Path) -> None:
    Spool.open(tmp_path / "s.db").close()
    facts = as_json(cli("status", "--json", "--spool", tmp_path / "s.db"))
    assert {k: facts[k] for k in STATUS_INTS} == dict.fromkeys(STATUS_INTS, 0)
    assert facts["oldest_pending_age_s"] is None
    assert facts["last_success_at"] is None
    assert facts["blocked"] is False
    table = cli("status", "--spool", tmp_path / "s.db").stdout
    assert "never" in table
    assert "blocked         no" in table


def parse_prometheus(text: str) -> tuple[dict[str, str], dict[str, float]]:
    """(TYPE of each family, value of each sample) of text exposition format 0.0.4."""
    types: dict[str, str] = {}
    samples: dict[str, float] = {}
    helped: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            helped.add(line.split()[2])
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            assert name in helped, f"TYPE before HELP for {name}"
            types[name] = kind
        else:
            name, value = line.rsplit(" ", 1)
            family = name.split("{")[0]
            assert family in types, f"sample before TYPE: {line}"
            samples[name] = float(value)
    return types, samples


def test_status_prometheus_metrics(built: Built) -> None:
    result = cli("status", "--format", "prometheus", "--spool", built.path)
    assert result.exit_code == 0
    types, samples = parse_prometheus(result.stdout)
    assert samples['spool_ship_events{state="pending"}'] == 2
    assert samples['spool_ship_events{state="leased"}'] == 1
    assert samples['spool_ship_events{state="done"}'] == 4
    assert samples['spool_ship_events{state="dead"}'] == 2
    assert samples['spool_ship_dropped_total{reason="spool_full"}'] == 2
    assert samples['spool_ship_refused_total{reason="too_large"}'] == 1
    assert samples["spool_ship_superseded_total"] == 2
    assert samples["spool_ship_blocked"] == 1
    assert samples["spool_ship_oldest_pending_age_seconds"] >= 50
    assert samples["spool_ship_last_success_timestamp_seconds"] == pytest.approx(built.now - 6990)
    assert samples['spool_ship_size_bytes{file="db"}'] > 0
    assert samples[f'spool_ship_info{{path="{built.path}"}}'] == 1
    assert types["spool_ship_dropped_total"] == "counter"
    assert types["spool_ship_events"] == "gauge"
    assert result.stdout.endswith("\n")


def test_prometheus_of_an_empty_spool_has_every_counter_family_at_zero(tmp_path: Path) -> None:
    """Issue 13: a counter absent until its first event makes ``increase(...) > 0`` miss the
    first burst; timestamps of things that never happened stay out."""
    Spool.open(tmp_path / "s.db").close()
    text = cli("status", "--format", "prometheus", "--spool", tmp_path / "s.db").stdout
    types, samples = parse_prometheus(text)
    for family in ("delivered", "requests", "retries", "dropped", "refused", "superseded"):
        assert types[f"spool_ship_{family}_total"] == "counter", family
    assert samples['spool_ship_dropped_total{reason="spool_full"}'] == 0
    assert samples['spool_ship_refused_total{reason="too_large"}'] == 0
    assert samples['spool_ship_requests_total{code="200"}'] == 0
    assert samples["spool_ship_delivered_total"] == 0
    assert samples["spool_ship_retries_total"] == 0
    assert samples["spool_ship_max_bytes"] == 1 << 30
    assert samples["spool_ship_blocked"] == 0
    assert "spool_ship_last_success_timestamp_seconds" not in types
    assert samples["spool_ship_oldest_pending_age_seconds"] == 0


def test_prometheus_label_values_are_escaped(tmp_path: Path) -> None:
    path = tmp_path / 'odd "name"\\.db'
    with Spool.open(path) as spool:
        spool.run(ops.add_counters({'dropped:we"ird\\reason': 1}))
    text = cli("status", "--format", "prometheus", "--spool", path).stdout
    assert 'spool_ship_dropped_total{reason="we\\"ird\\\\reason"} 1' in text
    assert 'path="' + str(path).replace("\\", "\\\\").replace('"', '\\"') + '"' in text


def test_status_output_file_is_written_atomically_for_the_textfile_collector(
    built: Built, tmp_path: Path
) -> None:
    target = tmp_path / "collector" / "spool_ship.prom"
    target.parent.mkdir()
    target.write_text("old\n")
    result = cli("status", "--format", "prometheus", "--output", target, "--spool", built.path)
    assert result.exit_code == 0
    assert result.stdout == ""
    assert 'spool_ship_events{state="dead"} 2' in target.read_text()
    # Only the finished file is left, readable by node_exporter's user.
    assert sorted(p.name for p in target.parent.iterdir()) == ["spool_ship.prom"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


def test_status_output_to_a_missing_directory_is_one_clear_line(
    built: Built, tmp_path: Path
) -> None:
    target = tmp_path / "nope" / "spool.prom"
    result = cli("status", "--format", "prometheus", "-o", target, "--spool", built.path)
    assert result.exit_code == 1
    assert result.stderr.startswith("spool-ship: cannot write ")
    assert str(target) in result.stderr
    assert len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize(
    "args",
    [
        ["--json", "--format", "prometheus"],
        ["--format", "table", "--output", "x.prom"],
        ["--format", "yaml"],
    ],
)
def test_status_rejects_contradictory_options(built: Built, args: list[str]) -> None:
    result = cli("status", "--spool", built.path, *args)
    assert result.exit_code == 2
    assert result.stdout == ""


def test_status_uses_spool_ship_path(built: Built, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPOOL_SHIP_PATH", str(built.path))
    assert as_json(cli("status", "--json"))["dead"] == 2


def test_spool_option_wins_over_the_environment(
    built: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPOOL_SHIP_PATH", str(tmp_path / "elsewhere.db"))
    assert as_json(cli("status", "--json", "--spool", built.path))["dead"] == 2
    assert not (tmp_path / "elsewhere.db").exists()


def test_without_spool_or_environment_the_xdg_state_path_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SPOOL_SHIP_PATH", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    expected = tmp_path / "state" / "spool-ship" / "spool.db"
    result = cli("status")
    assert result.exit_code == 3
    assert str(expected) in result.stderr
    assert not (tmp_path / "state").exists()
    build_spool(expected, time.time())
    assert as_json(cli("status", "--json"))["path"] == str(expected)


# ---- stuck ---------------------------------------------------------------------------------


def test_stuck_json_lists_dead_retried_and_expired_leases_with_why(built: Built) -> None:
    rows = as_json(cli("stuck", "--json", "--spool", built.path))
    assert [(r["seq"], r["span_id"], r["why"]) for r in rows] == [
        (5, "c", ["dead"]),
        (6, "d", ["retried"]),
        (7, "e", ["lease_expired"]),
        (9, "g", ["dead"]),
    ]
    for row in rows:
        assert row.keys() >= RECORD_KEYS
        assert row["kind"] in ("start", "end")
        assert "payload" not in row
    by_seq = {r["seq"]: r for r in rows}
    assert by_seq[5]["state"] == "dead"
    assert by_seq[5]["last_error"] == "HTTP 422: bad span c"
    assert by_seq[6] | {"next_attempt_at": 0} == by_seq[6] | {
        "state": "pending",
        "attempts": 4,
        "trace_id": "t2",
        "last_error": "HTTP 503: attempt 4",
        "next_attempt_at": 0,
    }
    assert by_seq[6]["next_attempt_at"] == pytest.approx(built.now + 240)
    assert by_seq[7]["state"] == "leased"
    assert by_seq[7]["lease_expires_at"] == pytest.approx(built.now - 40)
    assert isinstance(by_seq[6]["enqueued_at"], float)


def test_stuck_thresholds(built: Built) -> None:
    rows = as_json(
        cli("stuck", "--json", "--min-attempts", "5", "--older-than", "45s", "--spool", built.path)
    )
    # d is no longer "retried" (4 < 5) but is pending for 50 s; f (30 s) is not yet old.
    assert [(r["seq"], r["why"]) for r in rows] == [
        (5, ["dead"]),
        (6, ["old"]),
        (7, ["lease_expired"]),
        (9, ["dead"]),
    ]
    rows = as_json(cli("stuck", "--json", "--older-than", "1", "--spool", built.path))
    assert [(r["seq"], r["why"]) for r in rows if r["state"] == "pending"] == [
        (6, ["retried", "old"]),
        (8, ["old"]),
    ]


def test_stuck_state_filter_and_limit(built: Built) -> None:
    rows = as_json(cli("stuck", "--json", "--state", "dead", "--spool", built.path))
    assert [r["seq"] for r in rows] == [5, 9]
    rows = as_json(
        cli("stuck", "--json", "--state", "leased", "--state", "pending", "--spool", built.path)
    )
    assert [r["seq"] for r in rows] == [6, 7]
    result = cli("stuck", "--json", "--limit", "2", "--spool", built.path)
    assert [r["seq"] for r in as_json(result)] == [5, 6]
    assert "first 2" in result.stderr
    assert cli("stuck", "--state", "done", "--spool", built.path).exit_code == 2


@pytest.mark.parametrize("older_than", ["1h", "45s", "1"])
@pytest.mark.parametrize("min_attempts", ["1", "3", "5"])
def test_stuck_with_a_state_filter_agrees_with_the_spool_query(
    built: Built, older_than: str, min_attempts: str
) -> None:
    """The --state path filters in Python; it must say what spool.ops.stuck says."""
    args = ["stuck", "--json", "--older-than", older_than, "--min-attempts", min_attempts]
    plain = as_json(cli(*args, "--spool", built.path))
    states = ["--state", "dead", "--state", "pending", "--state", "leased"]
    filtered = as_json(cli(*args, *states, "--spool", built.path))
    assert [r["seq"] for r in plain] == [r["seq"] for r in filtered]


def test_stuck_reasons_is_the_predicate_of_ops_stuck(tmp_path: Path) -> None:
    built = build_spool(tmp_path / "s.db", time.time())
    now = time.time()
    with Spool.open(SpoolConfig(path=built.path), create=False) as spool:
        every = list(spool.export(list(EventState)))
        for min_attempts, before in ((1, now), (3, now - 3600), (5, now - 45)):
            stuck = spool.run(ops.stuck(min_attempts, before, now, 100), write=False)
            assert [r.seq for r in stuck] == [
                r.seq for r in every if stuck_reasons(r, min_attempts, before, now)
            ]


def test_stuck_table_shows_why_and_the_last_error(built: Built) -> None:
    result = cli("stuck", "--spool", built.path)
    assert result.exit_code == 0
    out = result.stdout
    assert "seq 5: dead end of span c (trace t2)" in out
    assert "HTTP 422: bad span c" in out
    assert "4 attempts" in out
    assert "lease expired" in out


def test_nothing_stuck_says_so_on_stderr(tmp_path: Path) -> None:
    Spool.open(tmp_path / "s.db").close()
    result = cli("stuck", "--spool", tmp_path / "s.db")
    assert result.exit_code == 0
    assert result.stdout == ""
    assert "nothing stuck" in result.stderr
    assert as_json(cli("stuck", "--json", "--spool", tmp_path / "s.db")) == []


@pytest.mark.parametrize("bad", ["5x", "-1h", "h", "1.5.3m", "", "inf", "nan"])
def test_bad_durations_are_usage_errors(built: Built, bad: str) -> None:
    result = cli("stuck", "--older-than", bad, "--spool", built.path)
    assert result.exit_code == 2
    assert "duration" in result.stderr
    assert result.stdout == ""


# ---- show ----------------------------------------------------------------------------------


def test_show_by_seq_json_has_every_column_and_the_payload(built: Built) -> None:
    [row] = as_json(cli("show", "6", "--json", "--spool", built.path))
    assert RECORD_KEYS | {"payload", "lease_owner", "done_at", "outcome"} <= row.keys()
    assert row["seq"] == 6
    assert row["attempts"] == 4
    assert row["payload"] == json.loads(payload("d", "t2", end=True))


def test_show_by_span_id_shows_both_events(built: Built) -> None:
    rows = as_json(cli("show", "b", "--json", "--spool", built.path))
    assert [(r["seq"], r["kind"], r["state"], r["outcome"]) for r in rows] == [
        (3, "start", "done", "superseded"),
        (4, "end", "done", "shipped"),
    ]


def test_show_human_output(built: Built) -> None:
    result = cli("show", "b", "--spool", built.path)
    assert result.exit_code == 0
    out = result.stdout
    assert out.count("payload:") == 2
    assert "superseded" in out
    assert "shipped" in out
    # Span data is printed as it is, never read as markup.
    assert '"q": "[bold]not markup[/]"' in out
    assert "Z (" in out  # human-readable UTC times with their age
    leased = cli("show", "7", "--spool", built.path).stdout
    assert f"{OWNER} until" in leased
    dead = cli("show", "5", "--spool", built.path).stdout
    assert "HTTP 422: bad span c" in dead


@pytest.mark.parametrize("span_id", ["\u00b2", "99999999999999999999", "00042"])
def test_show_span_ids_made_of_digits(tmp_path: Path, span_id: str) -> None:
    path = tmp_path / "s.db"
    with Spool.open(path) as spool:
        spool.append([event(span_id, "t", EventKind.END, time.time())])
    [row] = as_json(cli("show", span_id, "--json", "--spool", path))
    assert row["span_id"] == span_id
    assert cli("show", "9" * 30, "--spool", path).exit_code == 1


def test_show_unknown_id_is_exit_1(built: Built) -> None:
    result = cli("show", "nope", "--spool", built.path)
    assert result.exit_code == 1
    assert result.stderr == f"spool-ship: {built.path}: no event with seq or span id 'nope'\n"
    assert cli("show", "999", "--json", "--spool", built.path).exit_code == 1


# ---- export --------------------------------------------------------------------------------


def test_export_to_stdout_is_json_lines_of_every_event(built: Built) -> None:
    result = cli("export", "--spool", built.path)
    assert result.exit_code == 0
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["seq"] for r in rows] == list(range(1, 10))
    for row in rows:
        assert RECORD_KEYS | {"payload"} <= row.keys()
        assert row["payload"]["id"] == row["span_id"]
    assert "exported 9 event(s)" in result.stderr


def test_export_states_to_a_private_file(built: Built, tmp_path: Path) -> None:
    target = tmp_path / "dead.jsonl"
    result = cli(
        "export", "--state", "dead", "--state", "pending", "-o", target, "--spool", built.path
    )
    assert result.exit_code == 0
    assert result.stdout == ""
    rows = [json.loads(line) for line in target.read_text().splitlines()]
    assert [(r["seq"], r["state"]) for r in rows] == [
        (5, "dead"),
        (6, "pending"),
        (8, "pending"),
        (9, "dead"),
    ]
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_export_streams_across_pages(tmp_path: Path) -> None:
    path = tmp_path / "big.db"
    now = time.time()
    with Spool.open(path) as spool:
        spool.append([event(f"s{i}", "t", EventKind.END, now) for i in range(2500)])
    result = cli("export", "--spool", path)
    seqs = [json.loads(line)["seq"] for line in result.stdout.splitlines()]
    assert seqs == list(range(1, 2501))


def test_export_of_an_empty_selection_writes_nothing(built: Built) -> None:
    result = cli("export", "--state", "leased", "--spool", built.path)
    assert len(result.stdout.splitlines()) == 1
    with Spool.open(built.path) as spool:
        spool.run(ops.purge([EventState.DONE], time.time() + 1))
    result = cli("export", "--state", "done", "--spool", built.path)
    assert result.exit_code == 0
    assert result.stdout == ""
    assert "exported 0 event(s)" in result.stderr


def test_inspection_leaves_the_spool_as_it_was(built: Built) -> None:
    before = built.path.read_bytes()
    for args in (["status"], ["stuck"], ["show", "5"], ["export"]):
        assert cli(*args, "--spool", built.path).exit_code == 0
    assert built.path.read_bytes() == before
    assert os.access(built.path, os.R_OK)
