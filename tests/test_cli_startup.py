"""Issue 13: inspection commands start without the SDK. A command's module is imported when
that command runs, and reading a spool loads neither asyncio nor the write path. The speed
itself is measured by bench/cli_startup.py (docs/performance.md), not here."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer
from test_cli_inspect import build_spool
from typer.main import get_command

from cli import app
from cli.app import COMMANDS

# Loaded only by the commands that ship, serve metrics, write, or run the demo.
HEAVY = (
    "aiosqlite",
    "asyncio",
    "cli.demo",
    "cli.importer",
    "cli.maintain",
    "cli.settings",
    "cli.ship",
    "httpx",
    "orjson",
    "prometheus_client",
    "pydantic",  # typer 0.29 parses options with it: pyproject.toml bounds typer below
    "pydantic_core",
    "rich",
    "scale_gp_beta",
    "shipper",
    "spool._committer",  # the writer
    "spool._mapping",
    "spool.processor",
)

# Runs one command in a fresh interpreter, then reports which modules it loaded.
PROBE = """
import json, sys
from cli.app import main
sys.argv = ["spool-ship", *json.loads(sys.argv[1])]
code = 0
try:
    main()
except SystemExit as stop:
    code = stop.code or 0
sys.stderr.write("\\nMODULES " + json.dumps(sorted(sys.modules)) + "\\n")
sys.exit(code)
"""


@pytest.fixture(scope="module")
def spool_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_spool(tmp_path_factory.mktemp("startup") / "spool.db", time.time()).path


def loaded_by(*args: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    line = done.stderr.rsplit("\nMODULES ", 1)[1]
    return done, set(json.loads(line))


def heavy_in(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m in HEAVY or m.startswith(tuple(f"{h}." for h in HEAVY)))


@pytest.mark.parametrize(
    "args",
    [
        ["status", "--json"],
        ["status"],
        ["stuck", "--json"],
        ["show", "d"],
    ],
)
def test_inspection_commands_load_no_sdk_nor_asyncio(spool_path: Path, args: list[str]) -> None:
    done, modules = loaded_by(*args, "--spool", str(spool_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout  # the command did its work
    assert "cli.inspect" in modules
    assert heavy_in(modules) == []


def test_drain_still_loads_the_shipper(spool_path: Path) -> None:
    """The probe sees a command's imports: ``drain --help`` builds the drain command."""
    done, modules = loaded_by("drain", "--help")
    assert done.returncode == 0, done.stderr
    assert "cli.ship" in modules


def test_every_command_is_listed_and_built_from_its_module() -> None:
    group = get_command(app)
    context = typer.Context(group)
    assert group.list_commands(context) == list(COMMANDS)  # type: ignore[attr-defined]
    for name in COMMANDS:
        command = group.get_command(context, name)  # type: ignore[attr-defined]
        assert command is not None
        assert command.name == name
        assert command.callback.__module__ == f"cli.{COMMANDS[name][0]}"
    assert group.get_command(context, "no-such-command") is None  # type: ignore[attr-defined]
