"""``spool-ship drain`` and ``spool-ship run`` as an operator runs them: through typer's CliRunner
and as the installed script in a real process, on real spool files, with the real SDK talking
to the fake endpoint on 127.0.0.1.

The exit codes are contracts (DESIGN.md): ``drain`` exits 0 when everything was delivered, 2
when nothing is pending but some events are dead, 1 when it stopped with events pending (the
reason printed); spool trouble is 3 for every command. Time bounds below are bounds (a stop
that hangs fails them), not speed claims: the margins are generous for a loaded machine.
"""

from __future__ import annotations

import logging
import re
import shlex
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import pytest
import typer
from conftest import span_events
from typer.main import get_command
from typer.testing import CliRunner

from cli import app
from cli._options import parse_duration
from cli.ship import DRAIN_STOP_TIMEOUT, _log_progress
from shipper import Progress
from shipper.testing import FakeSpanServer
from spool import EventKind, MetaKey, Spool, SpoolStats, parse_size

SCRIPT = Path(sys.executable).with_name("spool-ship")
ROOT = Path(__file__).resolve().parent.parent
# Interpreter start (about a second here), closing the SDK client and the spool, exit.
MARGIN = 5.0
# A drain of a few hundred events on loopback, or a stop, is over well within this.
WAIT = 30.0
LOG_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR) [\w.]+ \S.*$"
)
NOISY = ("httpx", "httpcore", "aiosqlite", "scale_gp_beta", "spool_ship.cli", "shipper")


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """``drain --no-progress`` and ``run`` configure logging for the whole process (as a
    command should); in-process runs must not leave pytest's handlers replaced."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {name: logging.getLogger(name).level for name in NOISY}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, saved in levels.items():
        logging.getLogger(name).setLevel(saved)


# ---- running the command ------------------------------------------------------------------


@dataclass(frozen=True)
class Ran:
    code: int
    stdout: str
    stderr: str
    took: float

    @property
    def last_line(self) -> str:
        lines = self.stderr.splitlines()
        return lines[-1] if lines else ""


class SpoolShip:
    """``spool-ship ARGS`` through typer's CliRunner (``how="cli"``) or the installed script
    (``how="script"``), with ``env`` as the environment; keyword arguments override variables
    (None removes one)."""

    def __init__(self, how: str, env: Mapping[str, str]) -> None:
        self.how = how
        self.env = dict(env)

    def __call__(self, *args: str | Path, **overrides: str | None) -> Ran:
        argv = [str(a) for a in args]
        began = time.monotonic()
        if self.how == "cli":
            # The fixture put ``env`` in os.environ already; CliRunner applies the overrides.
            result = CliRunner().invoke(app, argv, env=overrides)
            if result.exception is not None and not isinstance(result.exception, SystemExit):
                raise result.exception
            return Ran(result.exit_code, result.stdout, result.stderr, time.monotonic() - began)
        env = {k: v for k, v in (self.env | overrides).items() if v is not None}
        done = subprocess.run(
            [str(SCRIPT), *argv],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        return Ran(done.returncode, done.stdout, done.stderr, time.monotonic() - began)


@pytest.fixture(params=["cli", "script"])
def spool_ship(request: pytest.FixtureRequest, ship_env: dict[str, str]) -> SpoolShip:
    """The command, both ways: in-process through CliRunner and as a real process."""
    return SpoolShip(str(request.param), ship_env)


@pytest.fixture
def cli(ship_env: dict[str, str]) -> SpoolShip:
    return SpoolShip("cli", ship_env)


class Running:
    """A ``spool-ship`` process whose stderr is read line by line as it is written, so a test
    waits for a log line instead of sleeping."""

    def __init__(self, args: list[str | Path], env: Mapping[str, str], tmp: Path) -> None:
        with (tmp / f"stdout-{time.monotonic_ns()}").open("w+") as out:
            self.out = Path(out.name)
            self.proc = subprocess.Popen(
                [str(SCRIPT), *map(str, args)],
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.PIPE,
                text=True,
            )
        self.lines: list[str] = []
        self._eof = False
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def wait_for_line(self, needle: str, timeout: float = WAIT) -> str:
        def found() -> str | None:
            return next((line for line in self.lines if needle in line), None)

        with self._cond:
            self._cond.wait_for(lambda: found() is not None or self._eof, timeout)
            line = found()
        if line is None:
            raise AssertionError(f"no line with {needle!r} within {timeout}s:\n{self.stderr}")
        return line

    def stop(self, signum: signal.Signals) -> float:
        """Send ``signum``; how long the process took to exit."""
        began = time.monotonic()
        self.proc.send_signal(signum)
        self.proc.wait(timeout=60)
        took = time.monotonic() - began
        self._reader.join(timeout=10)
        return took

    @property
    def code(self) -> int:
        code = self.proc.poll()
        assert code is not None, "still running"
        return code

    @property
    def stderr(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    @property
    def last_line(self) -> str:
        with self._cond:
            return self.lines[-1] if self.lines else ""

    @property
    def stdout(self) -> str:
        return self.out.read_text()

    def __enter__(self) -> Running:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


def shipper_stopped(line: str) -> dict[str, int]:
    return {k: int(v) for k, v in re.findall(r"(shipped|dead_lettered|requests)=(\d+)", line)}


def fill(path: Path, n: int, prefix: str = "s", *, create: bool = True) -> set[str]:
    """Spool ``n`` complete spans (end events) and return their ids."""
    ids = [f"{prefix}-{i}" for i in range(n)]
    with Spool.open(path, create=create) as spool:
        assert spool.append(span_events(ids, EventKind.END, trace_id=f"{prefix}-trace"))
    return set(ids)


def stats(path: Path) -> SpoolStats:
    with Spool.open(path, create=False) as spool:
        return spool.stats()


def counts(path: Path) -> tuple[int, int, int, int]:
    """``(pending, leased, done, dead)``."""
    s = stats(path)
    return s.pending, s.leased, s.done, s.dead


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def assert_one_line(ran: Ran, code: int, *words: str) -> str:
    assert ran.code == code, ran.stderr
    assert ran.stdout == ""
    assert "Traceback" not in ran.stderr
    lines = ran.stderr.splitlines()
    assert len(lines) == 1, ran.stderr
    assert lines[0].startswith("spool-ship: "), lines[0]
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


# ---- drain: exit codes ----------------------------------------------------------------------


def test_drain_delivers_everything_and_exits_0(
    tmp_path: Path, span_server: FakeSpanServer, spool_ship: SpoolShip
) -> None:
    path = tmp_path / "spool.db"
    ids = fill(path, 120)

    ran = spool_ship("drain", "--spool", path, "--no-progress")

    assert ran.code == 0, ran.stderr
    assert ran.stdout == ""
    assert "INFO spool_ship.cli drain: shipped 120 in " in ran.last_line
    assert ran.last_line.endswith("pending 0, leased 0, dead 0: everything delivered")
    assert span_server.completed_ids() == ids
    assert span_server.duplicates() == 0
    assert counts(path) == (0, 0, 120, 0)


def test_drain_exits_2_when_only_dead_events_are_left_and_says_why(
    tmp_path: Path, span_server: FakeSpanServer, spool_ship: SpoolShip
) -> None:
    path = tmp_path / "spool.db"
    ids = fill(path, 40)
    span_server.faults.refuse(["s-7"], status=409, detail="span crosses traces")

    ran = spool_ship("drain", "--spool", path, "--no-progress", "--timeout", "60")

    assert ran.code == 2, ran.stderr
    assert ran.last_line.endswith(
        "pending 0, leased 0, dead 1: 1 event(s) dead-lettered; see 'spool-ship stuck'"
    )
    (dead_line,) = [line for line in ran.stderr.splitlines() if "dead-lettered seq=" in line]
    assert "WARNING shipper" in dead_line
    assert "span_id=s-7" in dead_line
    assert "HTTP 409: span crosses traces: s-7" in dead_line
    assert span_server.completed_ids() == ids - {"s-7"}
    assert counts(path) == (0, 0, 39, 1)


def test_drain_with_a_timeout_exits_1_while_the_endpoint_answers_503(
    tmp_path: Path, span_server: FakeSpanServer, spool_ship: SpoolShip
) -> None:
    path = tmp_path / "spool.db"
    fill(path, 30)
    span_server.faults.set_random(fail_rate=1.0, status=503)

    ran = spool_ship("drain", "--spool", path, "--no-progress", "--timeout", "1")

    assert ran.code == 1, ran.stderr
    assert ran.last_line.endswith("pending 30, leased 0, dead 0: stopped, timeout (after 1s)")
    assert "HTTP 503: service unavailable" in ran.stderr  # each retry says what it got
    assert ran.took < 1 + MARGIN
    assert span_server.completed_ids() == set()
    assert counts(path) == (30, 0, 0, 0)


def test_drain_with_a_timeout_exits_1_while_the_endpoint_hangs(
    tmp_path: Path, span_server: FakeSpanServer, spool_ship: SpoolShip
) -> None:
    path = tmp_path / "spool.db"
    fill(path, 30)
    span_server.faults.hang()
    try:
        ran = spool_ship("drain", "--spool", path, "--no-progress", "--timeout", "1")
        in_flight = span_server.stats().in_flight
    finally:
        span_server.faults.unhang()

    assert in_flight >= 1  # the drain gave up on a request that never came back
    assert ran.code == 1, ran.stderr
    assert ran.last_line.endswith("pending 30, leased 0, dead 0: stopped, timeout (after 1s)")
    assert ran.took < 1 + MARGIN
    assert counts(path) == (30, 0, 0, 0)  # handed back, not left leased


def test_refused_credentials_end_a_drain_within_its_timeout_naming_them(
    tmp_path: Path, span_server: FakeSpanServer, spool_ship: SpoolShip
) -> None:
    path = tmp_path / "spool.db"
    fill(path, 25)
    span_server.faults.fail_auth(401)

    ran = spool_ship("drain", "--spool", path, "--no-progress", "--timeout", "3")

    assert ran.code == 1, ran.stderr
    assert ran.last_line.endswith(
        "pending 25, leased 0, dead 0: stopped, authentication failed (HTTP 401: Invalid API key)"
    )
    assert "WARNING shipper blocked: credentials refused (HTTP 401" in ran.stderr
    assert ran.took < 3 + MARGIN, f"a 3s drain took {ran.took:.1f}s"
    after = stats(path)
    assert (after.pending, after.leased, after.dead) == (25, 0, 0)  # nothing burned or dropped
    assert "HTTP 401" in after.meta[MetaKey.BLOCKED.value]  # status shows "blocked"
    assert span_server.stats().by_status == {401: span_server.request_count}


def test_an_unreachable_endpoint_ends_a_drain_without_a_timeout(
    tmp_path: Path, span_server: FakeSpanServer, cli: SpoolShip
) -> None:
    path = tmp_path / "spool.db"
    fill(path, 10)

    ran = cli(
        "drain",
        "--spool",
        path,
        "--no-progress",
        SGP_CLIENT_BASE_URL=f"http://127.0.0.1:{closed_port()}",
        SPOOL_SHIP_BACKOFF_INITIAL="0.01",
        SPOOL_SHIP_BACKOFF_MAX="0.02",
    )

    assert ran.code == 1, ran.stderr
    assert "pending 10, leased 0, dead 0: stopped, endpoint unreachable (" in ran.last_line
    assert "connection error" in ran.last_line
    assert counts(path) == (10, 0, 0, 0)


def test_drain_without_credentials_is_one_line_naming_the_variable(
    tmp_path: Path, span_server: FakeSpanServer, spool_ship: SpoolShip
) -> None:
    path = tmp_path / "spool.db"
    fill(path, 5)

    ran = spool_ship("drain", "--spool", path, "--no-progress", SGP_API_KEY=None)

    line = assert_one_line(ran, 1, "SGP_API_KEY")
    assert "SGP_ACCOUNT_ID" not in line  # only what is missing
    assert span_server.request_count == 0
    assert counts(path) == (5, 0, 0, 0)


def test_drain_of_a_missing_spool_is_one_line_exit_3_and_creates_nothing(
    tmp_path: Path, span_server: FakeSpanServer, spool_ship: SpoolShip
) -> None:
    path = tmp_path / "state" / "spool.db"

    ran = spool_ship("drain", "--spool", path, "--timeout", "5")

    assert_one_line(ran, 3, str(path), "no spool at this path")
    assert list(tmp_path.iterdir()) == []
    assert span_server.request_count == 0


def test_drain_reads_the_spool_path_from_the_environment(
    tmp_path: Path, span_server: FakeSpanServer, cli: SpoolShip
) -> None:
    path = tmp_path / "env.db"
    ids = fill(path, 12)

    ran = cli("drain", "--no-progress", SPOOL_SHIP_PATH=str(path))

    assert ran.code == 0, ran.stderr
    assert span_server.completed_ids() == ids


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_a_signal_stops_a_drain_gracefully_and_hands_its_batches_back(
    tmp_path: Path, span_server: FakeSpanServer, ship_env: dict[str, str], signum: signal.Signals
) -> None:
    path = tmp_path / "spool.db"
    fill(path, 200)
    span_server.faults.hang()
    try:
        with Running(["drain", "--spool", path, "--no-progress"], ship_env, tmp_path) as drain:
            assert span_server.wait_for(lambda: span_server.stats().in_flight >= 1, WAIT)
            took = drain.stop(signum)
    finally:
        span_server.faults.unhang()

    assert drain.code == 1, drain.stderr
    assert f"signal={signum.name} stopping" in drain.stderr
    assert drain.last_line.endswith("pending 200, leased 0, dead 0: stopped, asked to stop")
    assert took < DRAIN_STOP_TIMEOUT + MARGIN
    # Without the handler SIGTERM killed the drain with its batches leased for a whole lease.
    assert counts(path) == (200, 0, 0, 0)


# ---- drain: progress ------------------------------------------------------------------------


def test_a_forced_progress_bar_shows_count_total_and_rate(
    tmp_path: Path, span_server: FakeSpanServer, cli: SpoolShip
) -> None:
    path = tmp_path / "spool.db"
    fill(path, 30)

    ran = cli("drain", "--spool", path, "--progress", "--batch-size", "10", "--concurrency", "1")

    assert ran.code == 0, ran.stderr
    lines = ran.stderr.splitlines()
    assert re.fullmatch(r"shipping ━+ 30/30 +\d+ ev/s \d+:\d\d:\d\d", lines[-2].strip()), lines
    assert lines[-1].startswith("drain: shipped 30 in ")
    assert lines[-1].endswith("everything delivered")
    assert not any(LOG_LINE.match(line) for line in lines)  # a bar, not log lines


def test_the_bar_ends_full_when_starts_went_out_inside_their_ends(
    tmp_path: Path, span_server: FakeSpanServer, cli: SpoolShip
) -> None:
    path = tmp_path / "spool.db"
    ids = [f"s-{i}" for i in range(30)]
    with Spool.open(path) as spool:  # a backlog of whole spans: each start, then its end
        spool.append(span_events(ids, EventKind.START))
        spool.append(span_events(ids, EventKind.END))

    ran = cli("drain", "--spool", path, "--progress", "--batch-size", "10", "--concurrency", "1")

    assert ran.code == 0, ran.stderr
    assert " 30/30 " in ran.stderr.splitlines()[-2]  # not 30/60: the starts were superseded
    after = stats(path)
    assert (after.pending, after.done, after.superseded) == (0, 60, 30)


def test_plain_progress_logs_shipped_and_remaining(
    tmp_path: Path, span_server: FakeSpanServer, cli: SpoolShip
) -> None:
    path = tmp_path / "spool.db"
    fill(path, 30)

    ran = cli(
        "drain",
        "--spool",
        path,
        "--no-progress",
        "--progress-every",
        "0",
        "--batch-size",
        "10",
        "--concurrency",
        "1",
    )

    assert ran.code == 0, ran.stderr
    lines = ran.stderr.splitlines()
    assert all(LOG_LINE.match(line) for line in lines), lines  # one greppable line per event
    progress = [
        tuple(map(int, m.groups()))
        for m in (re.search(r"progress shipped=(\d+) remaining=(\d+) ", line) for line in lines)
        if m
    ]
    assert progress == [(10, 20), (20, 10), (30, 0)]
    assert "INFO spool_ship.cli drain: shipped 30 in" in lines[-1]


def test_plain_progress_is_logged_at_most_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    report = _log_progress(5.0, clock=lambda: now[0])
    caplog.set_level(logging.INFO, logger="spool_ship.cli")

    for at, shipped in [(101.0, 10), (104.9, 20), (105.0, 30), (109.0, 40), (110.0, 50)]:
        now[0] = at
        report(Progress(shipped=shipped, remaining=100 - shipped, elapsed=at - 100.0))
    now[0] = 200.0
    report(Progress(shipped=50, remaining=7, elapsed=0.0))

    assert [r.getMessage() for r in caplog.records] == [
        "progress shipped=30 remaining=70 rate_per_s=6 eta=12s",
        "progress shipped=50 remaining=50 rate_per_s=5 eta=10s",
        "progress shipped=50 remaining=7 rate_per_s=0 eta=unknown",
    ]


# ---- run ------------------------------------------------------------------------------------


def test_run_creates_the_spool_ships_what_is_appended_and_stops_on_sigterm(
    tmp_path: Path, span_server: FakeSpanServer, ship_env: dict[str, str]
) -> None:
    path = tmp_path / "spool.db"
    command: list[str | Path] = ["run", "--spool", path, "--create", "--stop-timeout", "2"]

    with Running(command, ship_env, tmp_path) as run:
        started = run.wait_for_line("shipper started")
        assert stat.S_IMODE(path.stat().st_mode) == 0o600  # created, private
        first = fill(path, 60, "first", create=False)
        assert span_server.wait_for(lambda: span_server.completed_ids() == first, WAIT)
        later = fill(path, 90, "later", create=False)
        everything = first | later
        assert span_server.wait_for(lambda: span_server.completed_ids() == everything, WAIT)
        took = run.stop(signal.SIGTERM)

    assert run.code == 0, run.stderr
    assert took < 2 + MARGIN
    assert run.stdout == ""
    lines = run.lines
    assert all(LOG_LINE.match(line) for line in lines), lines
    assert re.search(
        rf"INFO shipper shipper started owner=\S+:{run.proc.pid}:[0-9a-f]{{8}} "
        rf"spool={re.escape(str(path))} pending=0 leased=0$",
        started,
    ), started
    assert any("INFO spool_ship.cli signal=SIGTERM stopping timeout_s=2" in ln for ln in lines)
    stopped = run.wait_for_line("shipper stopped")
    assert "INFO shipper shipper stopped owner=" in stopped
    assert shipper_stopped(stopped)["shipped"] == 150
    assert shipper_stopped(stopped)["dead_lettered"] == 0
    assert span_server.duplicates() == 0
    assert counts(path) == (0, 0, 150, 0)


def test_on_sigterm_run_finishes_the_batch_in_flight(
    tmp_path: Path, span_server: FakeSpanServer, ship_env: dict[str, str]
) -> None:
    path = tmp_path / "spool.db"
    fill(path, 100)
    command: list[str | Path] = ["run", "--spool", path, "--stop-timeout", "30"]
    command += ["--batch-size", "10", "--concurrency", "1"]
    span_server.faults.hang()
    try:
        with Running(command, ship_env, tmp_path) as run:
            assert span_server.wait_for(lambda: span_server.stats().in_flight == 1, WAIT)
            run.proc.send_signal(signal.SIGTERM)
            run.wait_for_line("signal=SIGTERM stopping")
            span_server.faults.unhang()  # the batch in flight is answered after the signal
            run.stop(signal.SIGTERM)  # a second signal changes nothing
    finally:
        span_server.faults.unhang()

    assert run.code == 0, run.stderr
    assert shipper_stopped(run.wait_for_line("shipper stopped"))["shipped"] == 10
    assert span_server.stats().items_accepted == 10
    assert counts(path) == (90, 0, 10, 0)  # the rest left pending, nothing leased


def test_drain_on_stop_ships_what_is_pending_before_stopping(
    tmp_path: Path, span_server: FakeSpanServer, ship_env: dict[str, str]
) -> None:
    path = tmp_path / "spool.db"
    ids = fill(path, 100)
    command: list[str | Path] = ["run", "--spool", path, "--stop-timeout", "30"]
    command += ["--batch-size", "10", "--concurrency", "1", "--drain-on-stop"]
    span_server.faults.hang()
    try:
        with Running(command, ship_env, tmp_path) as run:
            assert span_server.wait_for(lambda: span_server.stats().in_flight == 1, WAIT)
            run.proc.send_signal(signal.SIGTERM)
            run.wait_for_line("signal=SIGTERM stopping")
            span_server.faults.unhang()
            run.proc.wait(timeout=60)
    finally:
        span_server.faults.unhang()

    assert run.code == 0, run.stderr
    assert shipper_stopped(run.wait_for_line("shipper stopped"))["shipped"] == 100
    assert span_server.completed_ids() == ids
    assert counts(path) == (0, 0, 100, 0)


@pytest.mark.parametrize(
    ("signum", "options"),
    [(signal.SIGINT, []), (signal.SIGTERM, ["--drain-on-stop"])],
    ids=["SIGINT", "SIGTERM-drain-on-stop"],
)
def test_run_stops_within_the_stop_timeout_when_the_endpoint_hangs(
    tmp_path: Path,
    span_server: FakeSpanServer,
    ship_env: dict[str, str],
    signum: signal.Signals,
    options: list[str],
) -> None:
    path = tmp_path / "spool.db"
    fill(path, 100)
    stop_timeout = 1.5
    command: list[str | Path] = ["run", "--spool", path, "--stop-timeout", str(stop_timeout)]
    command += ["--batch-size", "10", "--concurrency", "2", *options]
    span_server.faults.hang()
    try:
        with Running(command, ship_env, tmp_path) as run:
            # Nothing answers, so the adaptive limit stays at its start: one request in flight.
            assert span_server.wait_for(lambda: span_server.stats().in_flight == 1, WAIT)
            took = run.stop(signum)
    finally:
        span_server.faults.unhang()

    assert run.code == 0, run.stderr
    assert f"signal={signum.name} stopping timeout_s=1.5" in run.stderr
    assert took < stop_timeout + MARGIN, f"took {took:.1f}s to stop"
    assert counts(path) == (100, 0, 0, 0)  # in-flight batches handed back


def test_run_without_create_does_not_create_a_missing_spool(
    tmp_path: Path, span_server: FakeSpanServer, spool_ship: SpoolShip
) -> None:
    path = tmp_path / "spool.db"

    ran = spool_ship("run", "--spool", path)

    assert_one_line(ran, 3, str(path), "no spool at this path", "SPOOL_SHIP_PATH")
    assert list(tmp_path.iterdir()) == []


def test_run_without_credentials_is_one_line_naming_them(
    tmp_path: Path, span_server: FakeSpanServer, cli: SpoolShip
) -> None:
    path = tmp_path / "spool.db"
    fill(path, 3)

    ran = cli("run", "--spool", path, SGP_API_KEY=None, SGP_ACCOUNT_ID=None)

    assert_one_line(ran, 1, "SGP_API_KEY and SGP_ACCOUNT_ID not set")
    assert counts(path) == (3, 0, 0, 0)


# ---- the deployment files -------------------------------------------------------------------
# PyYAML is not a dependency, so the manifest is not parsed here (it was checked with PyYAML
# and `systemd-analyze verify` by hand); these checks keep the files true to the CLI: real
# commands and options, real variables, and stop timeouts that fit in what the platform allows.


def command_options(name: str) -> set[str]:
    group = get_command(app)
    command = group.get_command(typer.Context(group), name)  # type: ignore[attr-defined]
    return {opt for param in command.params for opt in param.opts + param.secondary_opts}


def spool_ship_args(text: str) -> list[list[str]]:
    """Every ``spool-ship ...`` invocation in a manifest (a YAML flow list) or a unit file."""
    found = []
    for match in re.finditer(r"\[\s*\"spool-ship\"(?P<rest>[^\]]*)\]", text):
        found.append(["spool-ship", *re.findall(r"\"([^\"]*)\"", match["rest"])])
    for match in re.finditer(r"^ExecStart=\S*spool-ship (?P<rest>.*)$", text, re.M):
        found.append(["spool-ship", *shlex.split(match["rest"])])
    return found


def option_value(args: list[str], option: str) -> str:
    for i, arg in enumerate(args):
        if arg == option:
            return args[i + 1]
        if arg.startswith(f"{option}="):
            return arg.split("=", 1)[1]
    raise AssertionError(f"{option} not in {args}")


def setting(pattern: str, text: str) -> str:
    match = re.search(pattern, text, re.M)
    assert match is not None, f"{pattern!r} not found"
    return match[1]


def test_the_deployment_files_use_real_options_and_leave_time_to_stop() -> None:
    manifest = (ROOT / "deploy" / "kubernetes" / "sidecar.yaml").read_text()
    unit = (ROOT / "deploy" / "systemd" / "spool-ship.service").read_text()
    calls = spool_ship_args(manifest) + spool_ship_args(unit)
    assert {args[1] for args in calls} >= {"run"}
    for args in calls:
        options = command_options(args[1])
        used = {a.split("=", 1)[0] for a in args[2:] if a.startswith("-")}
        assert used <= options, f"{args}: unknown {used - options}"

    (sidecar,) = [a for a in spool_ship_args(manifest) if a[1] == "run"]
    grace = int(setting(r"^\s*terminationGracePeriodSeconds: (\d+)$", manifest))
    # The agent stops first (its shutdown takes up to 10 s), then the sidecar gets SIGTERM.
    assert grace > 10 + parse_duration(option_value(sidecar, "--stop-timeout"))
    for name in ("SPOOL_SHIP_PATH", "SGP_API_KEY", "SGP_ACCOUNT_ID", "SGP_CLIENT_BASE_URL"):
        assert f"name: {name}" in manifest, name
    assert "mountPath: /var/lib/spool" in manifest
    assert "restartPolicy: Always" in manifest  # a native sidecar: stopped after the agent

    (daemon,) = [a for a in spool_ship_args(unit) if a[1] == "run"]
    stop_sec = parse_duration(setting(r"^TimeoutStopSec=(\S+)$", unit))
    assert stop_sec > parse_duration(option_value(daemon, "--stop-timeout"))
    for line in ("Type=simple", "Restart=on-failure", "KillSignal=SIGTERM"):
        assert re.search(rf"^{line}$", unit, re.M), line
    assert re.search(r"^EnvironmentFile=\S+", unit, re.M)


def test_the_deployment_files_serve_probes_enforce_the_limit_and_are_hardened() -> None:
    """Issue 13: the liveness probe is the running shipper's /healthz, the size limit is one
    the spool stores (so the agent enforces the sidecar's), and the unit is hardened."""
    manifest = (ROOT / "deploy" / "kubernetes" / "sidecar.yaml").read_text()
    unit = (ROOT / "deploy" / "systemd" / "spool-ship.service").read_text()
    (sidecar,) = [a for a in spool_ship_args(manifest) if a[1] == "run"]
    port = option_value(sidecar, "--metrics-addr").rsplit(":", 1)[1]
    assert f"containerPort: {port}" in manifest
    probe = manifest[manifest.index("livenessProbe:") :]
    assert re.match(r"livenessProbe:\s+httpGet:\s+path: /healthz\s+port: metrics", probe)
    assert "exec:" not in manifest  # no second Python process in the sidecar's memory limit
    limit = setting(r"name: SPOOL_SHIP_MAX_BYTES\s+value: \"?([^\"\s]+)", manifest)
    size = setting(r"sizeLimit: (\S+)\s+- name: tmp", manifest)
    assert parse_size(limit) < parse_size(size.replace("Gi", "GiB").replace("Mi", "MiB"))

    (daemon,) = [a for a in spool_ship_args(unit) if a[1] == "run"]
    assert option_value(daemon, "--metrics-addr").startswith("127.0.0.1:")
    parse_size(setting(r"^Environment=SPOOL_SHIP_MAX_BYTES=(\S+)$", unit))
    for line in (
        "SystemCallFilter=@system-service",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "ProtectSystem=strict",
        "NoNewPrivileges=true",
        "CapabilityBoundingSet=",
        "MemoryMax=256M",
    ):
        assert re.search(rf"^{line}$", unit, re.M), line


def test_every_spool_ship_variable_in_the_docs_is_one_the_code_reads() -> None:
    """The operations guide and the deployment files name only real variables."""
    import shipper.config
    import spool.config

    known = {
        value
        for module in (spool.config, shipper.config)
        for name, value in vars(module).items()
        if name.startswith("ENV_")
    }
    known |= {variable for variable, _ in shipper.config._TUNABLES.values()}
    texts = [
        (ROOT / "docs" / "operations.md").read_text(),
        (ROOT / "deploy" / "kubernetes" / "sidecar.yaml").read_text(),
        (ROOT / "deploy" / "systemd" / "spool-ship.service").read_text(),
    ]
    named = {v for text in texts for v in re.findall(r"\b(?:SPOOL_SHIP|SGP)_[A-Z_]+\b", text)}
    assert named, "no variables found"
    assert named <= known, f"unknown: {sorted(named - known)}"
