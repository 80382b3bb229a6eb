"""Foreign files (issue 12): a spool path in a shared directory where another user created the
file first, made it readable by others, or planted a symbolic link.

The spool, its -wal and its -shm must each be a regular file of this user's that group and
others cannot read or write; anything else is refused. An agent's processor never raises:
the drop is counted (``unsafe_file``) and said once in the log. The CLI exits 3 naming the
file and why. CI runs as root, so "another user's file" is made with ``os.chown``.
"""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_program, span_item

from spool import Spool, SyncSpoolProcessor, UnsafeSpoolError, ops
from spool._files import private_copy

OTHER_UID = 54321


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def spool_file(path: Path) -> bytes:
    """A real spool at ``path`` (closed, checkpointed): the bytes it holds."""
    with Spool.open(path) as opened:
        opened.checkpoint("TRUNCATE")
    return path.read_bytes()


def refused_by_a_processor(path: Path, caplog: pytest.LogCaptureFixture) -> dict[str, int]:
    """Two calls of a processor on ``path``: they return; what it counted, and the log."""
    processor = SyncSpoolProcessor(path)
    with caplog.at_level(logging.WARNING, logger="spool"):
        processor.on_span_start(span_item("a", end=False))
        processor.on_span_end(span_item("a", end=True))
        processor.shutdown()
    return processor.unrecorded()


def needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("making a file another user owns needs root (os.chown); CI runs as root")


def test_another_users_spool_is_refused_counted_and_left_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    needs_root()
    path = tmp_path / "spool.db"
    before = spool_file(path)
    os.chown(path, OTHER_UID, OTHER_UID)

    assert refused_by_a_processor(path, caplog) == {"dropped:unsafe_file": 2}

    assert path.read_bytes() == before
    lines = [
        r.getMessage()
        for r in caplog.records
        if "unsafe" in r.getMessage() or "uid" in r.getMessage()
    ]
    assert len([line for line in lines if f"uid {OTHER_UID}" in line]) == 1, lines
    with pytest.raises(UnsafeSpoolError, match=f"belongs to uid {OTHER_UID}"):
        Spool.open(path)


@pytest.mark.parametrize("loose", [0o666, 0o644, 0o640])
def test_a_spool_group_or_others_can_read_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, loose: int
) -> None:
    path = tmp_path / "spool.db"
    before = spool_file(path)
    os.chmod(path, loose)

    assert refused_by_a_processor(path, caplog) == {"dropped:unsafe_file": 2}

    assert path.read_bytes() == before
    assert mode(path) == loose
    with pytest.raises(UnsafeSpoolError, match=f"mode {loose:04o}"):
        Spool.open(path)


def test_a_symlink_at_the_path_is_not_followed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    target = tmp_path / "elsewhere.db"
    before = spool_file(target)  # a private spool of ours: only the link is wrong
    path = tmp_path / "spool.db"
    path.symlink_to(target)

    assert refused_by_a_processor(path, caplog) == {"dropped:unsafe_file": 2}

    assert target.read_bytes() == before
    assert not Path(f"{target}-wal").exists()
    with pytest.raises(UnsafeSpoolError, match="symbolic link"):
        Spool.open(path)


def test_a_dangling_symlink_is_not_created_through(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "spool.db"
    target = tmp_path / "planted-target.db"
    path.symlink_to(target)

    assert refused_by_a_processor(path, caplog) == {"dropped:unsafe_file": 2}

    assert not target.exists()


@pytest.mark.parametrize("suffix", ["-wal", "-shm"])
def test_a_planted_wal_or_shm_link_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, suffix: str
) -> None:
    """SQLite creates -wal and -shm by name and follows links: they are checked too."""
    path = tmp_path / "spool.db"
    spool_file(path)
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    Path(f"{path}{suffix}").symlink_to(victim)

    assert refused_by_a_processor(path, caplog) == {"dropped:unsafe_file": 2}

    assert victim.read_bytes() == b"precious"


def test_another_users_wal_is_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    needs_root()
    path = tmp_path / "spool.db"
    spool_file(path)
    wal = Path(f"{path}-wal")
    wal.touch(mode=0o600)
    os.chown(wal, OTHER_UID, OTHER_UID)

    assert refused_by_a_processor(path, caplog) == {"dropped:unsafe_file": 2}


def test_the_cli_names_the_file_and_why_and_exits_3(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    spool_file(path)
    os.chmod(path, 0o666)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPOOL_SHIP_", "SGP_"))}

    for command in (["status"], ["drain", "--timeout", "1"], ["doctor", "--yes"]):
        done = run_program(["spool-ship", *command, "--spool", str(path)], env)
        assert done.returncode == 3, (command, done.stdout, done.stderr)
        assert f"{path}" in done.stderr
        assert "mode 0666" in done.stderr
        assert "Traceback" not in done.stderr
    assert mode(path) == 0o666


def test_missing_parents_are_made_0700_all_the_way(tmp_path: Path) -> None:
    previous = os.umask(0)
    try:
        path = tmp_path / "a" / "b" / "c" / "spool.db"
        processor = SyncSpoolProcessor(path)
        processor.on_span_start(span_item("a", end=False))
        processor.shutdown()
    finally:
        os.umask(previous)
    for directory in (tmp_path / "a", tmp_path / "a" / "b", tmp_path / "a" / "b" / "c"):
        assert mode(directory) == 0o700, directory
    assert mode(path) == 0o600


def test_a_scratch_copy_is_0600_whatever_the_source_and_umask(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.write_bytes(b"x" * 5000)
    os.chmod(source, 0o644)
    previous = os.umask(0)
    try:
        private_copy(source, tmp_path / "copy")
    finally:
        os.umask(previous)
    assert mode(tmp_path / "copy") == 0o600
    assert (tmp_path / "copy").read_bytes() == source.read_bytes()


def test_drain_does_not_turn_an_empty_file_into_a_spool(tmp_path: Path) -> None:
    """drain never creates a spool: a zero-byte file is not one, and nothing was delivered."""
    path = tmp_path / "spool.db"
    path.touch(mode=0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPOOL_SHIP_", "SGP_"))}
    env |= {"SGP_API_KEY": "k", "SGP_ACCOUNT_ID": "a", "SGP_CLIENT_BASE_URL": "http://127.0.0.1:9"}

    for command in (["drain", "--timeout", "1"], ["status"]):
        done = run_program(["spool-ship", *command, "--spool", str(path)], env)
        assert done.returncode == 3, (command, done.stdout, done.stderr)
        assert "empty file, not a spool" in done.stderr
        assert "delivered" not in done.stdout
    assert path.stat().st_size == 0
    assert not Path(f"{path}-wal").exists()


def test_a_deleted_wal_surfaces_the_io_error(tmp_path: Path) -> None:
    """A process holds the spool with commits only in its WAL; the -wal is removed; another
    process opening the spool meets an I/O error and must say so, not "cannot rollback"."""
    path = tmp_path / "spool.db"
    holder = Spool.open(path)  # the schema it creates stays in its WAL while it is open
    holder.run(ops.add_counters({"dropped:spool_full": 1}))
    Path(f"{path}-wal").unlink()
    try:
        code = (
            "import sys\nfrom spool import Spool, SpoolError\n"
            "try:\n    Spool.open(sys.argv[1]).stats()\n"
            "except SpoolError as exc:\n    print(exc)\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", code, str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
    finally:
        holder.close()
    assert "disk I/O error" in done.stdout, done.stdout
    assert "cannot rollback" not in done.stdout
