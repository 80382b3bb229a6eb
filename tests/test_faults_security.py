"""Security (issue 6, point 5): spans hold prompts and outputs, and the shipper holds an API key.

- The spool, its -wal and its -shm are 0600 and a directory made for it 0700, whoever creates
  them (either processor, ``spool-ship run --create``) and whatever the umask.
- The API key never leaves memory: not into the spool file, its WAL or SHM, the logs (the
  shipper's and the SDK's, at DEBUG, in-process and from the CLI), ``status``, ``stuck``,
  ``show`` or ``export``, nor the blocked reason a 401 leaves. A recognizable key
  (``CANARY``) goes through a whole ship cycle: spooled, refused with 401 (blocked), accepted.
- Payloads (prompts, outputs) are printed by exactly two commands: ``export`` (JSON Lines, for
  moving events elsewhere) and ``show`` (one event, for a person). ``status``, ``stuck``,
  ``retry``, ``purge``, ``doctor``, ``drain`` and ``run`` print counts, ids, states and
  errors, never a payload; ``demo`` makes its own spool and spans. The shipper's logs name
  span ids, never payloads.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from conftest import SHIP_ACCOUNT, run_program
from test_cli_inspect import cli

from shipper import ShipperConfig
from shipper.testing import FakeSpanServer
from spool import MetaKey, Spool, SpoolConfig, SpoolProcessor, SyncSpoolProcessor

CANARY = "sk-SPOOLSHIP-CANARY-1234567890"
PROMPT = "PROMPT-CANARY-what-the-user-typed"
SPOOL_SHIP = str(Path(sys.executable).with_name("spool-ship"))
WAIT = 30.0


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    """Poll ``predicate`` until it holds; fail naming ``what`` after ``timeout``."""
    give_up = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > give_up:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


def span(n: int, *, end: bool = True) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": f"s-{n}",
        "trace_id": "trace-sec",
        "name": f"llm-{n}",
        "start_timestamp": "2025-01-01T00:00:00+00:00",
        "input": {"prompt": f"{PROMPT} #{n}"},
        "output": {"completion": "an answer"},
    }
    if end:
        item["end_timestamp"] = "2025-01-01T00:00:01+00:00"
    return item


@pytest.fixture
def no_umask() -> Iterator[None]:
    """Umask 0 for this test: the spool's modes must not depend on the caller's umask."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def spool_env(base_url: str, **extra: str) -> dict[str, str]:
    """The environment a deployment gives the CLI: the SDK's variables, the canary key, quick
    backoff so that probes of a refused key come fast."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPOOL_SHIP_", "SGP_"))}
    return env | {
        "SGP_API_KEY": CANARY,
        "SGP_ACCOUNT_ID": SHIP_ACCOUNT,
        "SGP_CLIENT_BASE_URL": base_url,
        "SPOOL_SHIP_LINGER": "0",
        "SPOOL_SHIP_POLL_INTERVAL": "0.02",
        "SPOOL_SHIP_BACKOFF_INITIAL": "0.05",
        "SPOOL_SHIP_BACKOFF_MAX": "0.2",
        **extra,
    }


# ---- file modes -------------------------------------------------------------------------------


def _assert_private(path: Path) -> None:
    for candidate in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        assert candidate.exists(), candidate
        assert mode(candidate) == 0o600, f"{candidate} is {oct(mode(candidate))}"
    assert mode(path.parent) == 0o700, f"{path.parent} is {oct(mode(path.parent))}"


def test_the_sync_processor_makes_a_private_spool_whatever_the_umask(
    tmp_path: Path, no_umask: None
) -> None:
    path = tmp_path / "state" / "spool.db"
    processor = SyncSpoolProcessor(path)
    try:
        processor.on_span_end(span(0))
        _assert_private(path)  # while open: the WAL and SHM exist
    finally:
        processor.shutdown()
    assert mode(path) == 0o600


def test_the_async_processor_makes_a_private_spool_whatever_the_umask(
    tmp_path: Path, no_umask: None
) -> None:
    path = tmp_path / "state" / "spool.db"

    async def main() -> None:
        processor = SpoolProcessor(path)
        try:
            await processor.on_span_start(span(0, end=False))
            await processor.on_span_end(span(0))
            _assert_private(path)
        finally:
            await processor.shutdown()

    asyncio.run(main())
    assert mode(path) == 0o600


def test_run_create_makes_a_private_spool_whatever_the_umask(tmp_path: Path) -> None:
    path = tmp_path / "state" / "spool.db"
    with FakeSpanServer(api_key=CANARY) as server:
        command = [SPOOL_SHIP, "run", "--create", "--spool", str(path)]
        with subprocess.Popen(
            command,
            env=spool_env(server.base_url),
            stderr=subprocess.PIPE,
            text=True,
            umask=0,
        ) as proc:
            assert proc.stderr is not None
            try:
                # Logged once the spool is open and the signal handlers are in place.
                started = ""
                while "shipper started" not in started:
                    started = proc.stderr.readline()
                    assert started, "the sidecar exited before it started"
                _assert_private(path)
                proc.send_signal(signal.SIGTERM)
                err = proc.stderr.read()
                proc.wait(timeout=WAIT)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    assert proc.returncode == 0, err
    assert mode(path) == 0o600


# ---- the API key --------------------------------------------------------------------------------


def spool_bytes(path: Path) -> dict[str, bytes]:
    """The spool's files as they are on disk right now."""
    return {
        str(p): p.read_bytes()
        for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm"))
        if p.exists()
    }


def assert_no_canary(where: str, text: str | bytes) -> None:
    raw = text.encode() if isinstance(text, str) else text
    assert CANARY.encode() not in raw, f"the API key is in {where}"
    assert b"SPOOLSHIP-CANARY" not in raw, f"part of the API key is in {where}"


def test_the_api_key_appears_nowhere_through_a_ship_cycle_with_a_401(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "spool.db"
    for name in ("", "spool", "shipper", "httpx", "aiohttp", "scale_gp_beta"):
        caplog.set_level(logging.DEBUG, logger=name or None)

    with FakeSpanServer(api_key=CANARY) as server:
        env = spool_env(server.base_url, SGP_LOG="debug")
        for name, value in env.items():
            if name.startswith(("SGP_", "SPOOL_SHIP_")):
                monkeypatch.setenv(name, value)
        server.faults.fail_auth(401)
        files_while_blocked = agent_ships_while_refused(path, server)
        reason = blocked_reason(path)
        assert reason == "HTTP 401: Invalid API key"
        blocked_status = cli("status", "--json", "--spool", path)
        files_while_running, out, err = sidecar_until_accepted(path, server, env)
        assert server.stats().by_status.get(401, 0) >= 6  # the key was really sent and refused

    # The logs were on at DEBUG (what was checked could have held the key) ...
    assert "blocked: credentials refused (HTTP 401: Invalid API key)" in caplog.text
    debug = {r.name.split(".")[0] for r in caplog.records if r.levelno == logging.DEBUG}
    assert {"scale_gp_beta", "shipper"} <= debug, debug
    assert "HTTP Request: PUT" in caplog.text  # httpx's own line, for the first request
    assert "blocked: credentials refused" in err
    assert "shipped n=" in err  # --verbose
    # ... and nothing anywhere holds the key.
    assert_no_canary("the in-process logs", caplog.text)
    assert_no_canary("the sidecar's stdout", out)
    assert_no_canary("the sidecar's stderr", err)
    for when, files in (("blocked", files_while_blocked), ("running", files_while_running)):
        assert any(name.endswith("-wal") for name in files), when
        for name, content in files.items():
            assert_no_canary(f"{name} ({when})", content)
    assert_no_canary("the spool file", path.read_bytes())
    assert_no_canary("status --json while blocked", blocked_status.stdout)
    assert json.loads(blocked_status.stdout)["blocked_reason"] == reason
    for args in (
        ["status"],
        ["status", "--json"],
        ["status", "--format", "prometheus"],
        ["stuck", "--json", "--older-than", "0s"],
        ["export"],
        ["show", "s-7"],
        ["show", "--json", "s-7"],
    ):
        result = cli(*args, "--spool", path)
        assert result.exit_code == 0, (args, result.stderr)
        assert_no_canary(" ".join(args), result.stdout + result.stderr)


def agent_ships_while_refused(path: Path, server: FakeSpanServer) -> dict[str, bytes]:
    """An agent ships in-process with the key from the environment; the endpoint refuses it.
    The spool's files while the shipper is blocked."""
    processor = SyncSpoolProcessor(path, ship=True)
    try:
        for n in range(30):
            processor.on_span_start(span(n, end=False))
            processor.on_span_end(span(n))
        wait_until(
            lambda: server.request_count >= 3 and blocked_reason(path) is not None,
            "the in-process shipper to be blocked",
        )
        return spool_bytes(path)
    finally:
        processor.shutdown(timeout=1.0)


def sidecar_until_accepted(
    path: Path, server: FakeSpanServer, env: dict[str, str]
) -> tuple[dict[str, bytes], str, str]:
    """More events; ``spool-ship run --verbose`` takes over, is refused, then the key is
    accepted and everything ships. The spool's files while it runs, its stdout and stderr."""
    more = SyncSpoolProcessor(path)
    for n in range(30, 60):
        more.on_span_end(span(n))
    more.shutdown()
    probes = server.request_count
    command = [SPOOL_SHIP, "run", "--verbose", "--spool", str(path)]
    with subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        try:
            assert server.wait_for(lambda: server.request_count >= probes + 3, WAIT)
            server.faults.fail_auth(None)
            ids = {f"s-{n}" for n in range(60)}
            assert server.wait_for(lambda: server.completed_ids() == ids, WAIT)
            wait_until(lambda: blocked_reason(path) is None, "the sidecar to be unblocked")
            files = spool_bytes(path)
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=WAIT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 0, err
    return files, out, err


def blocked_reason(path: Path) -> str | None:
    with Spool.open(SpoolConfig(path=path), create=False) as opened:
        return opened.stats().meta.get(MetaKey.BLOCKED.value)


def test_redacted_config_masks_the_api_key() -> None:
    config = ShipperConfig.from_env(
        {"SGP_API_KEY": CANARY, "SGP_ACCOUNT_ID": SHIP_ACCOUNT, "SGP_CLIENT_BASE_URL": "http://x"}
    )
    assert config.api_key == CANARY
    redacted = config.redacted()
    assert redacted["api_key"] == "***"
    assert set(redacted) == {f.name for f in fields(ShipperConfig)}  # every option, for logs
    assert redacted["account_id"] == SHIP_ACCOUNT
    assert_no_canary("ShipperConfig.redacted()", json.dumps(redacted))
    assert_no_canary("ShipperConfig.redacted()", str(redacted))


def test_the_configs_repr_does_not_show_the_api_key() -> None:
    """BUG (shipper/config.py, ``ShipperConfig``): the dataclass's generated ``__repr__`` prints
    ``api_key='sk-...'``, so the key leaks wherever the config is formatted: an agent logging
    its configuration (``log.info("shipping with %s", config)``), a traceback renderer that
    shows locals (rich, Sentry), an assertion message. ``redacted()`` exists for logs, but the
    obvious ``%s`` bypasses it. Fix: ``api_key: str | None = field(default=None, repr=False)``
    (or a ``__repr__`` built from ``redacted()``)."""
    config = ShipperConfig(api_key=CANARY, account_id=SHIP_ACCOUNT, base_url="http://x")
    assert_no_canary("repr(ShipperConfig)", repr(config))
    assert_no_canary("str(ShipperConfig)", str(config))


@pytest.mark.parametrize(
    "echo",
    [CANARY, CANARY.upper(), CANARY[:12], CANARY.lower()[:20]],
    ids=["exact", "upper", "prefix", "lower"],
)
def test_a_key_echoed_back_by_the_endpoint_is_not_stored_or_logged(
    tmp_path: Path, echo: str
) -> None:
    """BUG (hardening; shipper/loop.py, ``_after_failure`` and ``_attempt``, via
    ``Verdict.describe()`` in shipper/classify.py): the shipper keeps the endpoint's error text
    verbatim: as the blocked reason (the spool's meta table, shown by ``status``) and in its
    log lines. An endpoint, or a gateway in front of it, that echoes the presented key
    (``Invalid API key 'sk-...'``, a common pattern) thus puts the key into the spool file,
    ``status`` output and the logs. Fix: where verdicts are made (``classify``, given the
    configured key, or ``Shipper._attempt``), replace the key in the detail with ``***``
    before it is persisted or logged."""
    path = tmp_path / "spool.db"
    processor = SyncSpoolProcessor(path)
    processor.on_span_end(span(0))
    processor.shutdown()
    with FakeSpanServer(api_key=CANARY) as server:
        server.faults.fail_next(1000, status=401, detail=f"Invalid API key {echo!r}")
        env = spool_env(server.base_url)
        done = run_program(["spool-ship", "drain", "--spool", str(path), "--timeout", "1"], env)
    assert done.returncode == 1, done.stderr  # still refused when the time is up
    assert "authentication failed" in done.stderr
    status = cli("status", "--json", "--spool", path)
    assert json.loads(status.stdout)["blocked_reason"].startswith("HTTP 401: Invalid API key")
    assert json.loads(status.stdout)["blocked_reason"] == "HTTP 401: Invalid API key '***'"
    assert_no_canary("drain's stderr", done.stderr)
    assert_no_canary("status --json", status.stdout)
    assert_no_canary("the spool's files", b"".join(spool_bytes(path).values()))
    # Another spelling (issue 12): upper-cased, or cut to a prefix.
    assert echo not in done.stderr
    assert echo not in status.stdout
    assert echo.encode() not in b"".join(spool_bytes(path).values())


# ---- payloads ------------------------------------------------------------------------------------


def test_only_export_and_show_print_payloads(tmp_path: Path) -> None:
    """Every command that reads a spool, on a spool whose payloads hold ``PROMPT``: only
    ``export`` and ``show`` print it (and they do, so its absence elsewhere means something).
    The shipper's logs (drain, including dead-lettering) name span ids, not payloads."""
    path = tmp_path / "spool.db"
    processor = SyncSpoolProcessor(path)
    for n in range(20):
        processor.on_span_start(span(n, end=False))
        processor.on_span_end(span(n))
    processor.shutdown()

    with FakeSpanServer(api_key=CANARY) as server:
        server.faults.refuse(["s-3", "s-11"], status=422, detail="invalid span")
        drained = run_program(
            ["spool-ship", "drain", "--spool", str(path)], spool_env(server.base_url)
        )
    assert drained.returncode == 2, drained.stderr  # two dead-lettered
    assert "dead-lettered" in drained.stderr
    assert PROMPT not in drained.stdout + drained.stderr

    quiet = [
        ["status"],
        ["status", "--json"],
        ["status", "--format", "prometheus"],
        ["stuck"],
        ["stuck", "--json"],
        ["retry", "s-3", "--json"],
        ["purge", "--yes", "--json"],
        ["doctor", "--json"],
    ]
    for args in quiet:
        result = cli(*args, "--spool", path)
        assert result.exit_code == 0, (args, result.stderr)
        assert PROMPT not in result.stdout + result.stderr, args
    for args in (["export"], ["show", "s-11"], ["show", "--json", "s-11"]):
        result = cli(*args, "--spool", path)
        assert result.exit_code == 0, (args, result.stderr)
        assert PROMPT in result.stdout, args
