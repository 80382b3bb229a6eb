"""``retry``, ``purge`` and ``doctor`` (on a sound spool) through typer's CliRunner."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest
from test_cli_inspect import Built, as_json, build_spool, cli, event

from cli import maintain
from spool import EventKind, EventState, Spool, SpoolConfig, ops


@pytest.fixture
def built(tmp_path: Path) -> Built:
    return build_spool(tmp_path / "spool.db", time.time())


def states(path: Path) -> dict[int, tuple[str, int]]:
    with Spool.open(SpoolConfig(path=path), create=False) as spool:
        return {r.seq: (r.state.value, r.attempts) for r in spool.export(list(EventState))}


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if a person were at the keyboard."""
    monkeypatch.setattr(maintain, "stdin_is_tty", lambda: True)


# ---- retry ---------------------------------------------------------------------------------


def test_retry_all_moves_every_dead_event_to_pending_with_attempts_reset(built: Built) -> None:
    result = cli("retry", "--all", "--spool", built.path)
    assert result.exit_code == 0
    assert result.stdout == f"moved 2 dead event(s) back to pending in {built.path}\n"
    after = states(built.path)
    assert after[5] == ("pending", 0)
    assert after[9] == ("pending", 0)
    assert after[6] == ("pending", 4)  # not dead: untouched
    assert as_json(cli("status", "--json", "--spool", built.path))["dead"] == 0


def test_retry_by_seq_and_by_span_id(built: Built) -> None:
    assert as_json(cli("retry", "5", "--json", "--spool", built.path))["retried"] == 1
    assert states(built.path)[5] == ("pending", 0)
    assert states(built.path)[9] == ("dead", 0)
    assert as_json(cli("retry", "g", "--json", "--spool", built.path))["retried"] == 1
    assert states(built.path)[9] == ("pending", 0)


def test_retry_by_trace_id(built: Built) -> None:
    with Spool.open(built.path) as spool:
        spool.append([event("x", "t9", EventKind.END, time.time())])
        [other] = spool.run(ops.find("x"), write=False)
        spool.run(ops.dead_letter({other.seq: "HTTP 422"}, time.time()))
    result = cli("retry", "--trace-id", "t2", "--json", "--spool", built.path)
    assert as_json(result) == {"retried": 2, "path": str(built.path)}
    assert states(built.path)[other.seq] == ("dead", 0)


def test_retry_skips_events_that_are_not_dead(built: Built) -> None:
    result = cli("retry", "6", "a", "--spool", built.path)
    assert result.exit_code == 0
    assert "moved 0 dead event(s)" in result.stdout
    assert "seq 6 (end of span d) is pending, not dead: skipped" in result.stderr
    assert "seq 1 (start of span a) is done" in result.stderr
    assert states(built.path)[6] == ("pending", 4)


def test_retry_of_an_unknown_id_retries_nothing(built: Built) -> None:
    result = cli("retry", "5", "nope", "--spool", built.path)
    assert result.exit_code == 1
    assert "'nope'" in result.stderr
    assert "nothing was retried" in result.stderr
    assert states(built.path)[5] == ("dead", 0)


@pytest.mark.parametrize("args", [[], ["--all", "5"], ["--all", "--trace-id", "t2"]])
def test_retry_refuses_to_guess_what_to_retry(built: Built, args: list[str]) -> None:
    result = cli("retry", *args, "--spool", built.path)
    assert result.exit_code == 2
    assert states(built.path)[5] == ("dead", 0)


# ---- purge ---------------------------------------------------------------------------------


def test_purge_refuses_without_a_terminal_or_yes(built: Built) -> None:
    result = cli("purge", "--spool", built.path)
    assert result.exit_code == 2
    assert "pass --yes" in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert len(states(built.path)) == 9


def test_purge_yes_deletes_done_events_by_default(built: Built) -> None:
    result = cli("purge", "--yes", "--spool", built.path)
    assert result.exit_code == 0
    assert result.stdout.startswith("deleted 4 done event(s)")
    assert sorted(states(built.path)) == [5, 6, 7, 8, 9]


def test_purge_dead_older_than(built: Built) -> None:
    # The dead events ended 90 s before the spool was built.
    kept = cli(
        "purge", "--state", "dead", "--older-than", "1h", "-y", "--json", "--spool", built.path
    )
    assert as_json(kept) == {"deleted": 0, "states": ["dead"], "path": str(built.path)}
    gone = cli(
        "purge", "--state", "dead", "--older-than", "60s", "-y", "--json", "--spool", built.path
    )
    assert as_json(gone)["deleted"] == 2
    assert {s for s, _ in states(built.path).values()} == {"done", "pending", "leased"}


def test_purge_never_deletes_pending_or_leased(built: Built) -> None:
    assert cli("purge", "--state", "pending", "-y", "--spool", built.path).exit_code == 2
    cli("purge", "--state", "done", "--state", "dead", "-y", "--spool", built.path)
    assert sorted(states(built.path)) == [6, 7, 8]


def test_purge_asks_on_a_terminal(built: Built, terminal: None) -> None:
    declined = cli("purge", "--spool", built.path, input="n\n")
    assert declined.exit_code == 1
    assert "Delete the done events" in declined.stderr
    assert "nothing was changed" in declined.stderr
    assert len(states(built.path)) == 9
    accepted = cli("purge", "--spool", built.path, input="y\n")
    assert accepted.exit_code == 0
    # (CliRunner echoes the typed answer to stdout, as a terminal would on screen.)
    assert "deleted 4 done event(s)" in accepted.stdout


# ---- doctor on a sound spool ---------------------------------------------------------------


def test_doctor_checks_checkpoints_and_compacts_a_sound_spool(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    now = time.time()
    with Spool.open(path) as spool:
        spool.append(
            [event(f"s{i}", "t", EventKind.END, now, input="x" * 2000) for i in range(300)]
        )
        claimed = spool.run(ops.claim("s", 300, 60, now))
        spool.run(ops.ack([c.seq for c in claimed], now))
        spool.run(ops.purge([EventState.DONE], now + 1))
        spool.append([event("kept", "t", EventKind.END, now)])
        # Keep a reader open so that closing does not checkpoint: doctor finds a WAL.
        reader = sqlite3.connect(path)
        reader.execute("SELECT 1 FROM events").fetchall()
    try:
        before = path.stat().st_size + Path(f"{path}-wal").stat().st_size
    finally:
        reader.close()
    result = cli("doctor", "--json", "--spool", path)
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["integrity"] == ["ok"]
    assert report["repaired"] is False
    assert report["vacuumed"] is True
    assert report["bytes_before"] <= before
    assert report["bytes_after"] < report["bytes_before"] / 4
    assert Path(f"{path}-wal").stat().st_size == 0 if Path(f"{path}-wal").exists() else True
    assert as_json(cli("status", "--json", "--spool", path))["pending"] == 1
    text = cli("doctor", "--spool", path)
    assert text.exit_code == 0
    assert "integrity  ok" in text.stdout
    assert "vacuum     done" in text.stdout


def test_doctor_rebuilds_an_index_that_disagrees_with_the_table(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    now = time.time()
    with Spool.open(path) as spool:
        spool.append([event("a", "t", EventKind.END, now)])
        [claimed] = spool.run(ops.claim("s", 1, 60, now))
        spool.run(ops.ack([claimed.seq], now))
        spool.checkpoint("TRUNCATE")
    # Flip the row's state in the table's leaf page only: the index still says "done".
    data = bytearray(path.read_bytes())
    page_size = int.from_bytes(data[16:18], "big")
    flipped = 0
    for start in range(page_size, len(data), page_size):
        page = data[start : start + page_size]
        if page[0] == 0x0D and b'"id":"a"' in page:
            at = page.index(b"done")
            data[start + at : start + at + 4] = b"dead"
            flipped += 1
    assert flipped == 1
    path.write_bytes(bytes(data))
    result = cli("doctor", "--json", "--spool", path)
    assert result.exit_code == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["reindexed"] is True
    assert report["integrity"] == ["ok"]
    assert as_json(cli("status", "--json", "--spool", path))["dead"] == 1
