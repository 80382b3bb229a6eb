"""The installed ``spool-ship`` script, run as an operator runs it: a real process, real
exit codes, stdout and stderr kept apart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_cli_inspect import STATUS_INTS, build_spool, event

from spool import EventKind, Spool

SCRIPT = Path(sys.executable).parent / "spool-ship"
COMMANDS = ("status", "stuck", "show", "retry", "purge", "export", "doctor")


def run(
    *args: str | Path, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
        check=False,
    )


@pytest.fixture(scope="module")
def spool_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_spool(tmp_path_factory.mktemp("sub") / "spool.db", time.time()).path


def test_the_script_is_installed() -> None:
    assert SCRIPT.exists()


def test_version_and_help() -> None:
    version = run("--version")
    assert version.returncode == 0
    assert version.stdout.startswith("spool-ship ")
    assert version.stdout.split()[1][0].isdigit()
    helped = run("--help")
    assert helped.returncode == 0
    for command in COMMANDS:
        assert any(line.strip(" │").startswith(command) for line in helped.stdout.splitlines()), (
            command
        )


def test_status_json_in_a_real_process(spool_path: Path) -> None:
    done = run("status", "--json", "--spool", spool_path)
    assert done.returncode == 0, done.stderr
    facts = json.loads(done.stdout)
    assert {k: facts[k] for k in STATUS_INTS} == {
        "pending": 2,
        "leased": 1,
        "done": 4,
        "dead": 2,
        "dropped": 2,
        "refused": 1,
    }
    assert done.stderr == ""


def test_the_environment_names_the_spool(spool_path: Path) -> None:
    done = run("stuck", "--json", env={"SPOOL_SHIP_PATH": str(spool_path)})
    assert done.returncode == 0, done.stderr
    assert [r["seq"] for r in json.loads(done.stdout)] == [5, 6, 7, 9]


def test_a_missing_spool_is_one_line_and_exit_3(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "spool.db"
    done = run("status", "--spool", path)
    assert done.returncode == 3
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert str(path) in done.stderr
    assert "Traceback" not in done.stderr
    assert not path.parent.exists()


def test_show_unknown_and_python_dash_m(spool_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cli", "show", "no-such-span", "--spool", str(spool_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "no event with seq or span id 'no-such-span'" in done.stderr


def test_export_into_a_pipe_that_closes_early(tmp_path: Path) -> None:
    """``spool-ship export | head -1``: no traceback when the reader goes away."""
    path = tmp_path / "big.db"
    with Spool.open(path) as spool:  # far more than a pipe buffer holds
        spool.append(
            [event(f"s{i}", "t", EventKind.END, 0.0, input="x" * 500) for i in range(3000)]
        )
    proc = subprocess.Popen(
        [str(SCRIPT), "export", "--spool", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()
    proc.wait(timeout=60)
    stderr = proc.stderr.read()
    proc.stderr.close()
    assert json.loads(first)["seq"] == 1
    assert "Traceback" not in stderr
