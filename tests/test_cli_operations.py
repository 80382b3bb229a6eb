"""Issue 13, operating spool-ship in production: live metrics and probes from a real ``run``,
a ``status`` that tells the truth (limit and fill, damage, every non-2xx answer), read-only
inspection on a read-only file system, terminal-safe output, the effective configuration, and
the rough edges (sizes with units, a malformed base URL, contradictory options)."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import SHIP_KEY, run_program, span_events, span_payload, status_json, tmpfs
from test_cli_inspect import cli, parse_prometheus
from test_cli_ship import Running

from shipper.testing import FakeSpanServer
from spool import EventKind, EventState, NewEvent, Spool, SpoolConfig, ops

PAGE = 4096


def scrape(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def metrics_url(run: Running) -> str:
    line = run.wait_for_line("metrics listening on ")
    found = re.search(r"http://[\d.]+:\d+", line)
    assert found is not None, line
    return found.group()


# ---- run --metrics-addr ----------------------------------------------------------------------


@pytest.mark.slow
def test_run_serves_metrics_health_and_readiness_from_the_start_and_counts_deliveries(
    tmp_path: Path, span_server: FakeSpanServer, ship_env: dict[str, str]
) -> None:
    path = tmp_path / "spool.db"
    Spool.open(path).close()
    command: list[str | Path] = [
        "run", "--spool", path, "--metrics-addr", "127.0.0.1:0", "--heartbeat-every", "0.2s",
    ]  # fmt: skip
    with Running(command, ship_env, tmp_path) as run:
        url = metrics_url(run)
        run.wait_for_line("shipper started")
        status, text = scrape(f"{url}/metrics")
        assert status == 200, run.stderr
        types, samples = parse_prometheus(text)
        # Every counter family is there before anything happened, at 0.
        for family in ("delivered", "requests", "retries", "dropped", "refused"):
            assert types[f"spool_ship_{family}_total"] == "counter"
        assert samples["spool_ship_delivered_total"] == 0
        assert samples['spool_ship_dropped_total{reason="spool_full"}'] == 0
        assert samples["spool_ship_max_bytes"] == 1 << 30
        assert scrape(f"{url}/healthz")[0] == 200
        assert scrape(f"{url}/readyz") == (200, "ok: the spool opens (damage check: ok)\n")

        with Spool.open(path) as spool:
            spool.append(span_events([f"s{i}" for i in range(30)], EventKind.END))
        run.wait_for_line("delivered=30 ")
        _, text = scrape(f"{url}/metrics")
        assert "server error" not in text, run.stderr
        _, samples = parse_prometheus(text)
        assert samples["spool_ship_delivered_total"] == 30
        assert samples['spool_ship_requests_total{code="200"}'] >= 1
        assert samples['spool_ship_events{state="done"}'] == 30
        assert samples["spool_ship_used_bytes"] > 0
        run.stop(signal.SIGTERM)
    assert run.code == 0
    left = run.wait_for_line(" stopped left_pending=")
    assert "left_pending=0 left_leased=0 left_dead=0" in left
    assert "delivered=30" in left
    # What the shipper counted is in the spool for every other process.
    facts = status_json(path, ship_env)
    assert facts["delivered"] == 30
    assert sum(facts["requests_by_code"].values()) == facts["requests_by_code"]["200"] >= 1
    assert span_server.stats().items_accepted == 30


def test_healthz_fails_once_the_loop_is_stopped_and_readyz_when_the_spool_is_damaged(
    tmp_path: Path,
) -> None:
    """The probes as functions of the real server (no shipping needed)."""
    from cli._sidecar import start_metrics_server
    from shipper import Shipper, ShipperConfig

    path = tmp_path / "spool.db"
    damaged_overflow_spool(path)
    shipper = Shipper(path, ShipperConfig(api_key="k", account_id="a"), create=False)
    loop_runs = [False]
    server = start_metrics_server(("127.0.0.1", 0), shipper, lambda: loop_runs[0])
    try:
        url = f"http://127.0.0.1:{server.port}"
        code, text = scrape(f"{url}/healthz")
        assert (code, text) == (503, "fail: the ship loop is not running\n")
        code, text = scrape(f"{url}/readyz")
        assert code == 503
        assert text.startswith(f"fail: {path}: the spool is corrupt (")
        loop_runs[0] = True
        assert scrape(f"{url}/healthz")[0] == 200
    finally:
        server.close()


@pytest.mark.slow
def test_run_logs_heartbeats_as_json_with_fields(
    tmp_path: Path, span_server: FakeSpanServer, ship_env: dict[str, str]
) -> None:
    path = tmp_path / "spool.db"
    command: list[str | Path] = [
        "run", "--spool", path, "--create", "--heartbeat-every", "0.1s", "--log-format", "json",
    ]  # fmt: skip
    with Running(command, ship_env, tmp_path) as run:
        line = run.wait_for_line('"heartbeat ')
        run.stop(signal.SIGTERM)
    beat = json.loads(line)
    assert beat["level"] == "INFO"
    assert beat["logger"] == "spool_ship.cli"
    assert beat["pending"] == 0
    assert beat["fill_pct"] == pytest.approx(0.0, abs=1.0)
    assert beat["credentials_refused"] == "no"
    for other in run.lines:
        json.loads(other)  # every line is one JSON object


@pytest.mark.slow
def test_a_malformed_base_url_is_a_configuration_error_not_a_retried_connection_error(
    tmp_path: Path, ship_env: dict[str, str], span_server: FakeSpanServer
) -> None:
    path = tmp_path / "spool.db"
    with Spool.open(path) as spool:
        spool.append(span_events(["a"], EventKind.END))
    url = "htps//typo.example"
    env = ship_env | {"SGP_CLIENT_BASE_URL": url}
    for command in (["drain", "--timeout", "30"], ["run"]):
        done = run_program(["spool-ship", *command, "--spool", str(path)], env, timeout=30)
        assert done.returncode == 2, (command, done.stderr)
        assert f"SGP_CLIENT_BASE_URL={url!r} is not an http(s) URL" in done.stderr
        assert "Traceback" not in done.stderr
    assert span_server.request_count == 0


# ---- status tells the truth ------------------------------------------------------------------


def damaged_overflow_spool(path: Path) -> None:
    """Delivered events whose payloads spill onto overflow pages, then random bytes over the
    last pages of the file: counting events by state never reads those pages."""
    big = "x" * 6000
    with Spool.open(path) as spool:
        events = [
            NewEvent(f"s{i}", "t", EventKind.END, span_payload(f"s{i}", end=True, blob=big))
            for i in range(20)
        ]
        spool.append(events)
        claimed = spool.run(ops.claim("me", 100, 60, 0.0))
        spool.run(ops.ack([e.seq for e in claimed], 1.0))
        spool.checkpoint("TRUNCATE")
    pages = path.stat().st_size // PAGE
    with path.open("r+b") as f:
        f.seek((pages - 3) * PAGE)
        f.write(random.Random(7).randbytes(2 * PAGE))


def test_status_on_a_spool_with_damaged_pages_exits_3_like_drain(
    tmp_path: Path, ship_env: dict[str, str]
) -> None:
    path = tmp_path / "spool.db"
    damaged_overflow_spool(path)
    for args in (["--json"], ["--format", "prometheus"], []):
        done = run_program(["spool-ship", "status", "--spool", str(path), *args], ship_env)
        assert done.returncode == 3, (args, done.stdout)
        assert done.stdout == ""
        assert done.stderr.startswith(f"spool-ship: {path}: the spool is corrupt (")
        assert done.stderr.rstrip().endswith("run 'spool-ship doctor' to salvage it")


def test_status_reports_a_check_that_ran_out_of_budget_as_unchecked_not_damaged(
    tmp_path: Path,
) -> None:
    from spool import Damage, check_damage, open_readonly

    path = tmp_path / "spool.db"
    with Spool.open(path) as spool:
        spool.append(span_events([f"s{i}" for i in range(200)], EventKind.END))
    ticks = iter(range(1000))
    with open_readonly(SpoolConfig(path=path)) as opened:
        # A clock that moves a second per look: the budget is spent before the first step.
        check = check_damage(opened, 0.5, clock=lambda: float(next(ticks)), steps=100)
        assert check.verdict is Damage.UNCHECKED
        assert check_damage(opened, budget=30).verdict is Damage.OK
        # The connection is usable after an interrupted check.
        assert opened.stats().pending == 200


def test_status_shows_the_limit_stored_in_the_spool_and_how_full_it_is(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    with Spool.open(SpoolConfig(path=path, max_bytes=256 * 1024)) as spool:
        spool.append(span_events([f"s{i}" for i in range(100)], EventKind.END))
    facts = json.loads(cli("status", "--json", "--spool", path).stdout)
    assert facts["max_bytes"] == 256 * 1024
    assert 0 < facts["used_bytes"] <= facts["max_bytes"]
    assert facts["fill"] == pytest.approx(facts["used_bytes"] / facts["max_bytes"], abs=1e-4)
    assert facts["integrity"] == "ok"
    table = cli("status", "--spool", path).stdout
    assert re.search(r"^limit +256\.0 KiB, \d+\.\d% full \(", table, re.M), table
    _, samples = parse_prometheus(cli("status", "--format", "prometheus", "--spool", path).stdout)
    assert samples["spool_ship_max_bytes"] == 256 * 1024


@pytest.mark.slow
@pytest.mark.parametrize(
    ("status", "words"),
    [(401, "Invalid API key"), (422, "unprocessable"), (409, "forms a cycle")],
)
def test_last_error_records_every_answer_that_is_not_a_success(
    tmp_path: Path, span_server: FakeSpanServer, ship_env: dict[str, str], status: int, words: str
) -> None:
    path = tmp_path / "spool.db"
    with Spool.open(path) as spool:
        spool.append(span_events(["bad"], EventKind.END))
    if status == 401:
        span_server.faults.fail_auth(401)
    else:
        span_server.faults.refuse(["bad"], status=status, detail=f"{words}: item 0")
    drained = run_program(
        ["spool-ship", "drain", "--spool", str(path), "--timeout", "3", "--no-progress"], ship_env
    )
    assert drained.returncode in (1, 2), drained.stderr
    facts = status_json(path, ship_env)
    assert facts["last_error"] is not None, facts
    assert facts["last_error"].startswith(f"HTTP {status}")
    assert facts["last_error_at"] is not None
    assert facts["requests_by_code"].get(str(status), 0) >= 1
    table = run_program(["spool-ship", "status", "--spool", str(path)], ship_env).stdout
    assert "last error      none" not in table


# ---- read-only file system ---------------------------------------------------------------------


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs that the test fills, then remounts read-only (root ignores chmod)."""
    with tmpfs(tmp_path / "ro", "16m") as where:
        yield where


def test_inspection_commands_work_on_a_read_only_file_system(
    read_only_dir: Path, ship_env: dict[str, str]
) -> None:
    path = read_only_dir / "spool.db"
    with Spool.open(path) as spool:
        spool.append(span_events(["a", "b"], EventKind.END))
        spool.run(ops.dead_letter({1: "HTTP 422: no"}, 1.0))
    subprocess.run(["mount", "-o", "remount,ro", str(read_only_dir)], check=True)
    before = sorted(os.listdir(read_only_dir))
    for command in (
        ["status", "--format", "prometheus"],
        ["stuck"],
        ["show", "b"],
        ["export"],
        ["config"],
    ):
        result = cli(*command, "--spool", path)
        assert result.exit_code == 0, (command, result.stderr)
    # And as an operator runs it, in a process of its own.
    done = run_program(["spool-ship", "status", "--json", "--spool", str(path)], ship_env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["dead"] == 1
    assert sorted(os.listdir(read_only_dir)) == before


# ---- terminal safety -------------------------------------------------------------------------

ESCAPES = "\x1b]0;pwned\x07\x1b[2J\x9b31m\u202e"


def test_span_ids_and_endpoint_details_never_reach_the_terminal_raw(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    span_id = f"id{ESCAPES}"
    with Spool.open(path) as spool:
        spool.append([NewEvent(span_id, f"t{ESCAPES}", EventKind.END, b'{"name":"x\\u001b[31m"}')])
        spool.run(ops.dead_letter({1: f"HTTP 422: {ESCAPES}"}, 1.0))
        spool.run(ops.set_meta({"last_error": f"HTTP 401: {ESCAPES}", "last_error_at": "1"}))
    outputs = [
        cli("stuck", "--spool", path).stdout,
        cli("stuck", "--json", "--spool", path).stdout,
        cli("show", "1", "--spool", path).stdout,
        cli("show", "1", "--json", "--spool", path).stdout,
        cli("status", "--spool", path).stdout,
    ]
    for text in outputs:
        assert re.search("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202e]", text) is None, text
    assert "id\\x1b]0;pwned\\x07\\x1b[2J\\x9b31m\\u202e" in outputs[0]
    # The JSON still says exactly what is stored.
    assert json.loads(outputs[3])[0]["span_id"] == span_id


# ---- startup cost ----------------------------------------------------------------------------


def test_inspection_commands_do_not_load_the_sdk(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    Spool.open(path).close()
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from cli import app\n"
        "for args in (['status', '--json'], ['stuck'], ['export'], ['show', '1']):\n"
        f"    CliRunner().invoke(app, [*args, '--spool', {str(path)!r}])\n"
        "heavy = ('scale_gp_beta', 'httpx', 'aiohttp', 'shipper', 'rich.progress')\n"
        "print(sorted(m for m in sys.modules if m.startswith(heavy)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"


# ---- config ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_config_prints_the_effective_configuration_with_the_key_redacted(
    tmp_path: Path, ship_env: dict[str, str]
) -> None:
    path = tmp_path / "spool.db"
    Spool.open(SpoolConfig(path=path, max_bytes=512 * 1024)).close()
    env = ship_env | {"SPOOL_SHIP_RETENTION": "7200", "SPOOL_SHIP_BATCH_SIZE": "20"}
    done = run_program(["spool-ship", "config", "--json", "--spool", str(path)], env)
    assert done.returncode == 0, done.stderr
    facts: dict[str, Any] = json.loads(done.stdout)
    assert SHIP_KEY not in done.stdout
    assert facts["shipper"]["api_key"] == "***"
    assert facts["shipper"]["batch_size"] == 20
    assert facts["spool"]["retention"] == 7200
    assert facts["sources"]["retention"] == "SPOOL_SHIP_RETENTION"
    assert facts["spool"]["max_bytes"] == 512 * 1024
    assert facts["sources"]["max_bytes"] == "stored in the spool"
    table = run_program(["spool-ship", "config", "--spool", str(path)], env)
    assert SHIP_KEY not in table.stdout
    assert re.search(r"^shipper\.api_key +\*\*\*$", table.stdout, re.M)


def test_config_exits_2_on_a_value_the_commands_would_refuse(
    tmp_path: Path, ship_env: dict[str, str]
) -> None:
    for name, value in (("SPOOL_SHIP_MAX_BYTES", "lots"), ("SGP_CLIENT_BASE_URL", "nope")):
        done = run_program(["spool-ship", "config"], ship_env | {name: value})
        assert done.returncode == 2, (name, done.stderr)
        assert name in done.stderr


# ---- sizes and options -----------------------------------------------------------------------


def test_sizes_take_units_wherever_they_are_parsed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from spool import parse_size

    assert parse_size("1MiB") == 1 << 20
    assert parse_size("500MB") == 500_000_000
    assert parse_size("64 KiB") == 65536
    assert parse_size("1.5GiB") == 3 << 29
    assert parse_size(" 4096 ") == 4096
    for bad in ("", "1.3B", "MiB", "-1MiB", "1 MiBs", "1e3"):
        with pytest.raises(ValueError, match=r"size|bytes"):
            parse_size(bad)
    monkeypatch.setenv("SPOOL_SHIP_MAX_BYTES", "1MiB")
    monkeypatch.setenv("SPOOL_SHIP_MAX_EVENT_BYTES", "64KiB")
    config = SpoolConfig.from_env(tmp_path / "s.db")
    assert (config.max_bytes, config.max_event_bytes) == (1 << 20, 65536)
    monkeypatch.setenv("SPOOL_SHIP_MAX_BYTES", "1 furlong")
    result = cli("status", "--spool", tmp_path / "s.db")
    assert result.exit_code == 2
    assert "SPOOL_SHIP_MAX_BYTES='1 furlong' is not valid" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--json", "--format", "prometheus"], "--json and --format prometheus disagree"),
        (["--format", "xml"], "'xml' is not one of: table, json, prometheus"),
    ],
)
def test_status_usage_errors_say_what_is_wrong(
    tmp_path: Path, args: list[str], message: str
) -> None:
    Spool.open(tmp_path / "s.db").close()
    result = cli("status", "--spool", tmp_path / "s.db", *args)
    assert result.exit_code == 2
    flat = " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.stderr).split())
    assert message in flat
    assert "{output_format}" not in flat
    assert "Value error" not in flat


def test_export_then_state_filter_parsing_is_case_insensitive(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with Spool.open(path) as spool:
        spool.append(span_events(["a"], EventKind.END))
    result = cli("export", "--state", "PENDING", "--spool", path)
    assert result.exit_code == 0
    assert json.loads(result.stdout)["state"] == EventState.PENDING.value


@pytest.mark.slow
def test_a_metrics_address_in_use_is_one_clear_line(
    tmp_path: Path, ship_env: dict[str, str]
) -> None:
    import socket

    path = tmp_path / "spool.db"
    Spool.open(path).close()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_program(
            ["spool-ship", "run", "--spool", str(path), "--metrics-addr", f"127.0.0.1:{port}"],
            ship_env,
        )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        f"spool-ship: --metrics-addr 127.0.0.1:{port}: cannot listen there (Address already in use)"
    )
    bad = run_program(
        ["spool-ship", "run", "--spool", str(path), "--metrics-addr", "9464"], ship_env
    )
    assert bad.returncode == 2
    assert "is not HOST:PORT" in bad.stderr


def test_config_names_where_every_spool_option_comes_from(tmp_path: Path) -> None:
    """A SpoolConfig field without a documented source would break `config` (KeyError)."""
    from cli.settings import _SPOOL_ENV

    assert set(_SPOOL_ENV) == {f.name for f in dataclasses.fields(SpoolConfig)} - {"path"}
    result = cli("config", "--spool", str(tmp_path / "spool.db"))
    assert result.exit_code == 0, result.output
    assert "spool.reserve_bytes" in result.output
