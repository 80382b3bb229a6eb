"""``doctor`` on damaged spools: real files with pages overwritten or cut off. The damaged file
is moved aside, what can be read is salvaged into a fresh spool, and losses are counted."""

from __future__ import annotations

import json
import random
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from test_cli_inspect import as_json, build_spool, cli, event, payload

from cli import maintain
from spool import EventKind, EventState, MetaKey, Spool, SpoolConfig, maintenance
from spool.salvage import marker, move_aside

PAGE = 4096


def fill(path: Path, events: int, *, start: int = 0) -> None:
    now = time.time()
    with Spool.open(path) as spool:
        spool.append(
            [
                event(f"s{i}", f"t{i % 5}", EventKind.END, now - i, input="x" * 300)
                for i in range(start, start + events)
            ]
        )
        spool.checkpoint("TRUNCATE")


def overwrite_pages(path: Path, first: int, count: int, seed: int = 11) -> None:
    """Random bytes over ``count`` pages from page number ``first`` (1-based, as SQLite)."""
    with path.open("r+b") as f:
        f.seek((first - 1) * PAGE)
        f.write(random.Random(seed).randbytes(count * PAGE))


def root_page(path: Path, name: str) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(
            conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (name,)).fetchone()[0]
        )
    finally:
        conn.close()


def doctor(path: Path, *args: str, input: str | None = None) -> tuple[int, dict[str, Any]]:
    result = cli("doctor", "--json", "--spool", path, *args, input=input)
    assert "Traceback" not in result.stderr
    return result.exit_code, json.loads(result.stdout) if result.stdout.strip() else {}


def records(path: Path) -> list[Any]:
    with Spool.open(SpoolConfig(path=path), create=False) as spool:
        return list(spool.export(list(EventState)))


def aside_files(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.glob(f"{path.name}.corrupt-*"))


def test_random_pages_in_the_middle_are_lost_and_the_rest_salvaged(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    fill(path, 1500)
    pages = path.stat().st_size // PAGE
    overwrite_pages(path, pages // 2, 3)
    assert cli("status", "--spool", path).exit_code == 3

    code, report = doctor(path, "--yes")

    assert code == 1
    assert report["repaired"] is True
    assert report["salvaged"] > 1300
    assert report["lost"] + report["unreadable"] > 0
    # Every seq is accounted for: salvaged, known lost, or unreadable.
    assert report["salvaged"] + report["lost"] + report["unreadable"] == 1500
    assert report["table_readable"] is True
    moved = Path(report["moved_to"])
    assert moved.exists()
    assert moved.name.startswith("spool.db.corrupt-")
    # The fresh spool is sound, holds the salvaged events byte for byte, and counts the loss.
    facts = as_json(cli("status", "--json", "--spool", path))
    assert facts["pending"] == report["salvaged"]
    assert facts["dropped_by_reason"].get("salvage_lost", 0) == report["lost"]
    for record in records(path):
        i = int(record.span_id[1:])
        assert record.payload == payload(record.span_id, f"t{i % 5}", end=True, input="x" * 300)
        assert record.state is EventState.PENDING
    assert doctor(path)[0] == 0


def test_a_truncated_spool_keeps_what_is_before_the_cut(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    fill(path, 1500)
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size // 2 + 1000)  # mid-page, too
    before = path.read_bytes()

    code, report = doctor(path, "--yes")

    assert code == 1
    assert report["salvaged"] > 400
    assert report["salvaged"] + report["lost"] + report["unreadable"] == 1500
    # The damaged copy is kept exactly as it was found (the padding was on a scratch copy).
    assert Path(report["moved_to"]).read_bytes() == before
    assert not list(tmp_path.glob("*.padded*"))
    assert as_json(cli("status", "--json", "--spool", path))["pending"] == report["salvaged"]


def test_states_errors_counters_and_facts_survive_a_salvage(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    built = build_spool(path, time.time())
    with Spool.open(path) as spool:
        spool.checkpoint("TRUNCATE")
    before = {r.seq: r for r in records(path)}
    # Damage only an index the salvage does not need: the table is intact.
    overwrite_pages(path, root_page(path, "events_by_span"), 1)

    code, report = doctor(path, "--yes")

    assert code == 1
    assert report["integrity"] != ["ok"]
    assert (report["salvaged"], report["salvaged_dead"]) == (5, 2)
    assert (report["lost"], report["unreadable"], report["done_left_behind"]) == (0, 0, 4)
    after = records(path)
    by_span = {(r.span_id, r.kind): r for r in after}
    assert sorted(by_span) == [(s, EventKind.END) for s in "cdefg"]
    for record in after:
        old = next(
            r for r in before.values() if r.span_id == record.span_id and r.kind is EventKind.END
        )
        assert record.payload == old.payload
        assert record.enqueued_at == old.enqueued_at
        assert record.trace_id == old.trace_id
        if old.state is EventState.DEAD:
            assert record.state is EventState.DEAD
            assert record.last_error == old.last_error
        else:  # pending and leased go back to pending, attempts reset
            assert record.state is EventState.PENDING
            assert record.attempts == 0
            assert record.lease_owner is None
    facts = as_json(cli("status", "--json", "--spool", path))
    assert facts["dropped_by_reason"] == {"spool_full": 2}
    assert facts["refused_by_reason"] == {"too_large": 1}
    assert facts["superseded"] == 2
    assert facts["blocked_reason"] == "401 Unauthorized: check SGP_API_KEY"
    assert facts["last_error"] == "HTTP 503: attempt 4"
    assert facts["last_success_at"] == pytest.approx(built.now - 6990)
    assert [r["span_id"] for r in as_json(cli("stuck", "--json", "--spool", path))] == ["c", "g"]


def test_events_only_in_the_wal_are_salvaged(tmp_path: Path) -> None:
    live = tmp_path / "live.db"
    fill(live, 600)
    copy = tmp_path / "spool.db"
    with Spool.open(live) as spool:
        spool.append(
            [event(f"s{i}", f"t{i % 5}", EventKind.END, time.time()) for i in range(600, 650)]
        )
        # A snapshot while the spool is open: the last 50 events are only in the WAL.
        shutil.copyfile(live, copy)
        shutil.copyfile(f"{live}-wal", f"{copy}-wal")
    assert Path(f"{copy}-wal").stat().st_size > 0
    overwrite_pages(copy, 10, 2)

    code, report = doctor(copy, "--yes")

    assert code == 1
    assert report["salvaged"] + report["lost"] + report["unreadable"] == 650
    spans = {r.span_id for r in records(copy)}
    assert {f"s{i}" for i in range(600, 650)} <= spans
    moved = Path(report["moved_to"])
    assert Path(f"{moved}-wal").exists()
    assert not Path(f"{copy}-wal").exists() or Path(f"{copy}-wal").stat().st_size < 100_000


def test_without_yes_and_without_a_terminal_a_damaged_spool_is_left_alone(
    tmp_path: Path,
) -> None:
    path = tmp_path / "spool.db"
    fill(path, 800)
    overwrite_pages(path, 20, 4)
    before = path.read_bytes()
    result = cli("doctor", "--spool", path)
    assert result.exit_code == 3
    assert "damaged" in result.stderr
    assert "pass --yes" in result.stderr
    assert path.read_bytes() == before
    assert aside_files(path) == []


def test_on_a_terminal_doctor_asks_before_moving_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(maintain, "stdin_is_tty", lambda: True)
    path = tmp_path / "spool.db"
    fill(path, 800)
    overwrite_pages(path, 20, 4)
    before = path.read_bytes()
    declined = cli("doctor", "--spool", path, input="n\n")
    assert declined.exit_code == 1
    assert "Move " in declined.stderr
    assert path.read_bytes() == before
    accepted = cli("doctor", "--spool", path, input="y\n")
    assert accepted.exit_code == 1
    assert "was damaged, replaced by a fresh spool" in accepted.stdout
    assert "salvaged" in accepted.stdout
    assert len([n for n in aside_files(path) if not n.endswith(("-wal", "-shm"))]) == 1


def test_a_spool_whose_table_cannot_be_read_at_all_is_still_replaced(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    fill(path, 800)
    # The events table's root page and the pages after it: nothing leads to the rows.
    overwrite_pages(path, root_page(path, "events"), 6)
    result = cli("doctor", "--yes", "--spool", path)
    assert result.exit_code == 1
    assert "could not be read at all" in result.stdout
    assert ".recover" in result.stdout
    assert as_json(cli("status", "--json", "--spool", path))["pending"] == 0


def test_moving_aside_twice_in_the_same_second_keeps_both(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    now = time.time()
    moved = []
    for content in (b"first", b"second"):
        path.write_bytes(content)
        Path(f"{path}-wal").write_bytes(content + b"-wal")
        moved.append(move_aside(path, now))
    assert moved[0] != moved[1]
    assert [m.read_bytes() for m in moved] == [b"first", b"second"]
    assert [Path(f"{m}-wal").read_bytes() for m in moved] == [b"first-wal", b"second-wal"]
    assert not path.exists()
    assert not Path(f"{path}-wal").exists()


@pytest.mark.parametrize("seed", [3, 17, 29, 41])
def test_every_seq_is_accounted_for_whatever_pages_are_hit(tmp_path: Path, seed: int) -> None:
    path = tmp_path / "spool.db"
    fill(path, 1200)
    rnd = random.Random(seed)
    pages = path.stat().st_size // PAGE
    for _ in range(3):
        overwrite_pages(path, rnd.randint(8, pages), rnd.randint(1, 4), seed=rnd.randrange(1000))
    code, report = doctor(path, "--yes")
    assert code == 1
    assert report["table_readable"] is True
    assert report["salvaged"] + report["lost"] + report["unreadable"] == 1200
    assert as_json(cli("status", "--json", "--spool", path))["pending"] == report["salvaged"]


# ---- a salvage stopped part-way (issue 12) -------------------------------------------------

KILL_BOUND = 120.0


def salvage_progress(path: Path) -> dict[str, Any] | None:
    """The progress a running salvage has committed to the fresh spool at ``path``, read
    without creating anything."""
    if not path.exists():
        return None
    try:
        conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
        try:
            row = conn.execute(
                "SELECT value FROM meta WHERE key = ?", (MetaKey.SALVAGE.value,)
            ).fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return None  # not created yet, or its schema not yet committed
    progress: dict[str, Any] | None = json.loads(row[0]) if row else None
    return progress


def damaged_copy(path: Path, events: int) -> None:
    fill(path, events)
    pages = path.stat().st_size // PAGE
    overwrite_pages(path, pages // 2, 3)


def span_ids(path: Path) -> list[tuple[str, str]]:
    return sorted((r.span_id, r.state.value) for r in records(path))


@pytest.mark.slow
def test_a_doctor_killed_part_way_is_finished_by_the_next_one(tmp_path: Path) -> None:
    events = 60_000
    path = tmp_path / "spool.db"
    damaged_copy(path, events)
    reference = tmp_path / "reference" / "spool.db"
    reference.parent.mkdir()
    shutil.copyfile(path, reference)
    code, expected = doctor(reference, "--yes")
    assert code == 1

    command = [str(Path(sys.executable).with_name("spool-ship")), "doctor", "--yes"]
    with subprocess.Popen(
        [*command, "--spool", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    ) as proc:
        give_up = time.monotonic() + KILL_BOUND
        while (progress := salvage_progress(path)) is None:
            assert proc.poll() is None, "doctor finished before it could be killed"
            assert time.monotonic() < give_up, "no salvage progress in time"
            time.sleep(0.005)
        proc.kill()
    assert not progress["done"]
    assert progress["next_seq"] < events
    aside = Path(progress["source"])
    assert aside.exists()
    assert marker(path).exists(), "the kill came after the salvage had finished"

    # Events sit only in the moved-aside copy: no doctor says the spool is fine.
    code, report = doctor(path)
    assert code == 3
    assert report == {}
    code, report = doctor(path, "--yes")

    assert code == 1
    assert report["moved_to"] == str(aside)
    assert report["resumed"] == 1
    for key in ("salvaged", "lost", "unreadable", "done_left_behind", "salvaged_dead"):
        assert report[key] == expected[key], key
    assert report["salvaged"] + report["lost"] + report["unreadable"] == events
    # Nothing lost, nothing twice: the same events as an uninterrupted salvage.
    assert span_ids(path) == span_ids(reference)
    facts = as_json(cli("status", "--json", "--spool", path))
    assert facts["dropped_by_reason"].get("salvage_lost", 0) == report["lost"]
    assert not marker(path).exists()
    assert doctor(path)[0] == 0


def test_a_salvage_stopped_before_the_move_is_taken_up(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    damaged_copy(path, 1500)
    aside = path.with_name(f"{path.name}.corrupt-20250101T000000Z")
    marker(path).write_text(f"{aside}\n")  # written, then killed before the rename

    code, report = doctor(path)  # without --yes and without a terminal: left alone
    assert code == 3
    assert path.exists()
    assert not aside.exists()
    code, report = doctor(path, "--yes")

    assert code == 1
    assert report["moved_to"] == str(aside)
    assert aside.exists()
    assert report["salvaged"] + report["lost"] + report["unreadable"] == 1500
    assert not marker(path).exists()


def test_a_salvage_stopped_after_it_finished_copies_nothing_twice(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    damaged_copy(path, 1500)
    code, first = doctor(path, "--yes")
    assert code == 1
    salvaged = span_ids(path)
    marker(path).write_text(f"{first['moved_to']}\n")  # killed before the marker was removed

    code, again = doctor(path, "--yes")

    assert code == 1
    assert {k: again[k] for k in ("salvaged", "lost", "moved_to")} == {
        k: first[k] for k in ("salvaged", "lost", "moved_to")
    }
    assert span_ids(path) == salvaged
    facts = as_json(cli("status", "--json", "--spool", path))
    assert facts["dropped_by_reason"].get("salvage_lost", 0) == first["lost"]
    assert not marker(path).exists()


def test_vacuum_puts_the_connections_temporary_storage_back(tmp_path: Path) -> None:
    """VACUUM's copy goes to a file beside the spool (bounded memory, bench/doctor_memory.py);
    the connection's own small sorts stay in memory afterwards."""
    path = tmp_path / "spool.db"
    fill(path, 200)
    with Spool.open(path, create=False) as opened:
        maintenance.vacuum(opened)
        assert opened.conn.execute("PRAGMA temp_store").fetchone()[0] == 2  # MEMORY
        assert opened.conn.execute("PRAGMA temp_store_directory").fetchone() in (None, ("",))
        assert maintenance.integrity(opened) == ["ok"]
        assert len(list(opened.export(list(EventState)))) == 200
