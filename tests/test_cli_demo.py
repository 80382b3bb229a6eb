"""``spool-ship demo``: the whole story (an agent SIGKILLed, a flaky endpoint, a drain, the
status) as a user runs it, in a real process, in well under a minute."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

from typer.testing import CliRunner

from cli import app
from spool import Spool

SCRIPT = Path(sys.executable).with_name("spool-ship")
STEPS = (
    "1. an agent spools spans, then is SIGKILLed",
    "2. the endpoint is flaky",
    "3. drain, through the faults",
    "4. status",
)


def test_the_demo_loses_nothing_and_delivers_everything(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPOOL_SHIP_", "SGP_"))}
    # Its spool goes under tmp_path; wide lines keep long paths whole.
    env |= {"TMPDIR": str(tmp_path), "NO_COLOR": "1", "COLUMNS": "400"}
    env.pop("FORCE_COLOR", None)

    began = time.monotonic()
    done = subprocess.run(
        [str(SCRIPT), "demo", "--events", "2000"],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    took = time.monotonic() - began

    assert done.returncode == 0, done.stderr
    assert took < 60, f"the demo took {took:.0f}s"
    story = " ".join(done.stderr.split())  # rich wraps at 80 columns off a terminal
    positions = [story.find(step) for step in STEPS]
    assert -1 not in positions, story
    assert positions == sorted(positions), story
    killed = re.search(r"agent killed after (\d+) acknowledged span events", story)
    assert killed is not None, story
    assert int(killed[1]) >= 2000
    assert "acknowledged but missing: 0" in story
    assert re.search(r"drain: shipped \d+ in [\d.]+s; pending 0, leased 0, dead 0: every", story)
    assert " 0 duplicate deliveries" in story

    table = dict(line.split(None, 1) for line in done.stdout.splitlines() if line.strip())
    assert (table["pending"], table["leased"], table["dead"]) == ("0", "0", "0"), done.stdout
    path = Path(table["spool"])
    assert path.is_relative_to(tmp_path)
    with Spool.open(path, create=False) as spool:
        stats = spool.stats()
    assert (stats.pending, stats.leased, stats.dead) == (0, 0, 0)
    assert stats.done == int(table["done"]) >= 2000
    assert f"spool-ship stuck --spool {path}" in story


def test_the_demo_never_touches_an_existing_spool(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    path.write_bytes(b"mine")

    argv = ["demo", "--spool", str(path), "--events", "100"]
    result = CliRunner().invoke(app, argv, env={"COLUMNS": "400"})  # a long path stays whole

    assert result.exit_code == 2, result.output
    assert f"{path} exists; the demo needs a new spool" in result.stderr
    assert path.read_bytes() == b"mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spool.db"]
