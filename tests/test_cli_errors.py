"""Every command, on every path that is not a usable spool: one line on stderr naming the
path, exit 3, no traceback, and nothing created or changed."""

from __future__ import annotations

import random
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from test_cli_inspect import build_spool, cli, event
from typer.testing import Result

from cli._options import format_duration, parse_duration
from spool import EventKind, Spool

COMMANDS: dict[str, list[str]] = {
    "status": ["status"],
    "status-json": ["status", "--json"],
    "status-prometheus": ["status", "--format", "prometheus"],
    "stuck": ["stuck", "--json"],
    "show": ["show", "1"],
    "export": ["export"],
    "retry": ["retry", "--all"],
    "purge": ["purge", "--yes"],
    "doctor": ["doctor", "--yes"],
}
READERS = ["status", "status-json", "status-prometheus", "stuck", "show", "export"]
WRITERS = ["retry", "purge", "doctor"]


def assert_one_line(result: Result, path: Path, *words: str) -> None:
    assert result.exit_code == 3, result.stdout + result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("spool-ship: ")
    assert str(path) in lines[0]
    for word in words:
        assert word in lines[0].lower(), lines[0]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpointed spool of 1500 events, built once and copied by each test."""
    path = tmp_path_factory.mktemp("template") / "spool.db"
    now = time.time()
    with Spool.open(path) as spool:
        spool.append(
            [event(f"s{i}", "t", EventKind.END, now, input="x" * 300) for i in range(1500)]
        )
        spool.checkpoint("TRUNCATE")
    return path


@pytest.mark.parametrize("command", COMMANDS)
def test_a_missing_spool_is_never_created(command: str, tmp_path: Path) -> None:
    path = tmp_path / "no" / "such" / "spool.db"
    result = cli(*COMMANDS[command], "--spool", path)
    assert_one_line(result, path, "no spool at this path", "--spool")
    assert not (tmp_path / "no").exists()
    beside = tmp_path / "spool.db"
    assert_one_line(cli(*COMMANDS[command], "--spool", beside), beside, "no spool")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", COMMANDS)
def test_a_text_file_is_not_a_spool(command: str, tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("these are not the spans you are looking for\n" * 100)
    before = path.read_bytes()
    assert_one_line(cli(*COMMANDS[command], "--spool", path), path, "not")
    assert path.read_bytes() == before


@pytest.mark.parametrize("command", COMMANDS)
def test_an_empty_file_is_not_turned_into_a_spool(command: str, tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    assert_one_line(cli(*COMMANDS[command], "--spool", path), path, "empty file")
    assert path.stat().st_size == 0


@pytest.mark.parametrize("command", COMMANDS)
def test_a_directory_is_not_a_spool(command: str, tmp_path: Path) -> None:
    assert_one_line(cli(*COMMANDS[command], "--spool", tmp_path), tmp_path, "directory")


@pytest.mark.parametrize("command", COMMANDS)
def test_another_sqlite_database_is_not_a_spool(command: str, tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE users (name TEXT)")
    conn.commit()
    conn.close()
    assert_one_line(cli(*COMMANDS[command], "--spool", path), path, "not a spool")
    conn = sqlite3.connect(path)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master")]
        journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        conn.close()
    assert tables == ["users"]
    assert journal == "delete"  # not switched to WAL behind its owner's back


@pytest.mark.parametrize("command", COMMANDS)
def test_a_spool_from_a_newer_spool_ship(command: str, tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    build_spool(path, time.time())
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    assert_one_line(cli(*COMMANDS[command], "--spool", path), path, "newer", "upgrade")
    assert not list(tmp_path.glob("*.corrupt-*"))


@pytest.mark.parametrize("command", [c for c in COMMANDS if c != "doctor"])
def test_a_truncated_spool_is_corrupt(command: str, tmp_path: Path, template: Path) -> None:
    path = tmp_path / "spool.db"
    shutil.copyfile(template, path)
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size // 2)
    assert_one_line(cli(*COMMANDS[command], "--spool", path), path, "corrupt", "doctor")


@pytest.mark.parametrize("command", ["status", "stuck", "export"])
def test_random_bytes_over_the_middle_of_a_spool(
    command: str, tmp_path: Path, template: Path
) -> None:
    path = tmp_path / "spool.db"
    shutil.copyfile(template, path)
    size = path.stat().st_size
    rnd = random.Random(7)
    with path.open("r+b") as f:
        f.seek(size * 2 // 5 // 4096 * 4096)
        f.write(rnd.randbytes(size // 5))
    args = ["stuck", "--state", "pending", "--json"] if command == "stuck" else [command]
    assert_one_line(cli(*args, "--spool", path), path, "corrupt", "doctor")


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[Callable[[bool], Path]]:
    """Another process's connection holding the spool's write lock; with ``exclusive``, in
    exclusive locking mode, which keeps readers out too."""
    conns: list[sqlite3.Connection] = []

    def hold(exclusive: bool) -> Path:
        path = tmp_path / "spool.db"
        build_spool(path, time.time())
        conn = sqlite3.connect(path, isolation_level=None)
        conns.append(conn)
        if exclusive:
            conn.execute("PRAGMA locking_mode = EXCLUSIVE")
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO meta (key, value) VALUES ('held', 'yes')")
        if exclusive:
            conn.execute("COMMIT")  # exclusive mode keeps the lock after the commit
        return path

    yield hold
    for conn in conns:
        conn.close()


@pytest.mark.parametrize("command", WRITERS)
def test_a_locked_spool_is_one_line_after_the_busy_timeout(
    command: str, holder: Callable[[bool], Path]
) -> None:
    path = holder(False)
    started = time.monotonic()
    result = cli(*COMMANDS[command], "--busy-timeout", "0.05", "--spool", path)
    assert_one_line(result, path, "lock")
    assert time.monotonic() - started < 10
    assert not list(path.parent.glob("*.corrupt-*"))


@pytest.mark.parametrize("command", READERS)
def test_reading_a_spool_that_another_process_writes_is_fine(
    command: str, holder: Callable[[bool], Path]
) -> None:
    """WAL: readers do not wait for a writer."""
    path = holder(False)
    result = cli(*COMMANDS[command], "--busy-timeout", "0.05", "--spool", path)
    assert result.exit_code == 0, result.stderr


@pytest.mark.parametrize("command", READERS)
def test_reading_a_spool_held_exclusively_is_one_line(
    command: str, holder: Callable[[bool], Path]
) -> None:
    path = holder(True)
    result = cli(*COMMANDS[command], "--busy-timeout", "0.05", "--spool", path)
    assert_one_line(result, path, "lock")


def test_the_busy_timeout_comes_from_the_environment_too(
    holder: Callable[[bool], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = holder(False)
    monkeypatch.setenv("SPOOL_SHIP_BUSY_TIMEOUT", "0.05")
    assert_one_line(cli("retry", "--all", "--spool", path), path, "lock")


def test_a_bad_environment_variable_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPOOL_SHIP_BUSY_TIMEOUT", "soon")
    result = cli("status", "--spool", tmp_path / "s.db")
    assert result.exit_code == 2
    assert result.stderr.startswith("spool-ship: configuration: SPOOL_SHIP_BUSY_TIMEOUT")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90),
        ("0.25", 0.25),
        ("90s", 90),
        ("15m", 900),
        ("2h", 7200),
        ("7d", 604_800),
        ("1w", 604_800),
        ("1h30m", 5400),
        (" 2H ", 7200),
        ("0", 0),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize(
    "text", ["", "x", "5x", "-1", "-1h", "1h-5m", "h1", "1.2.3s", "inf", "nan"]
)
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)
