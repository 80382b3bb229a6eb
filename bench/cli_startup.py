"""CLI startup: how long ``spool-ship status --json`` takes, as an operator's probe runs it.

    .venv/bin/python bench/cli_startup.py             # 15 runs of each command
    .venv/bin/python bench/cli_startup.py --runs 30 --json
    git archive f8e0eaf | tar -x -C /tmp/before     # an older tree, to compare with
    .venv/bin/python bench/cli_startup.py --before /tmp/before [--before /tmp/other ...]

A package unpacked into such a tree (e.g. another typer) is used by that tree's runs only.

Each command runs as a fresh process (the console script), on a spool of a few thousand
events, alternating (A B C A B C ...) so that drift on a shared machine spreads over all of
them. Measured against two baselines run in the same process run: a bare interpreter
(``python -c pass``), and the import of the SDK alone (what every command paid before issue 13).
The goal: ``status --json`` (and ``stuck``, ``show``) under 0.3 s at the median on this
machine. Results and what stands in the way: docs/performance.md, "CLI startup".
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from spool import EventKind, NewEvent, Spool

GOAL_S = 0.3
GOALS = ("status --json", "stuck --json", "show 1")
SCRIPT = str(Path(sys.executable).with_name("spool-ship"))


def make_spool(path: Path, events: int) -> None:
    with Spool.open(path) as spool:
        for start in range(0, events, 500):
            spool.append(
                [
                    NewEvent(f"s{i}", "t", EventKind.END, b'{"name":"op","id":"s%d"}' % i)
                    for i in range(start, min(start + 500, events))
                ]
            )


def timed(argv: list[str], cwd: Path | None = None) -> float:
    began = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=cwd)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--before",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="also time status --json from the source tree DIR (python -m cli run in DIR, so "
        "that DIR comes first on the path), in the same rounds; repeatable",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "spool.db"
        make_spool(path, args.events)
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "import scale_gp_beta": [sys.executable, "-c", "import scale_gp_beta"],
            "status --json": [SCRIPT, "status", "--json", "--spool", str(path)],
            "status --format prometheus": [
                SCRIPT, "status", "--format", "prometheus", "--spool", str(path),
            ],
            "stuck --json": [SCRIPT, "stuck", "--json", "--spool", str(path)],
            "show 1": [SCRIPT, "show", "1", "--spool", str(path)],
            "drain --help": [SCRIPT, "drain", "--help"],
        }  # fmt: skip
        where: dict[str, Path | None] = dict.fromkeys(commands)
        for tree in args.before:
            name = f"{tree.name}: status --json"
            commands[name] = [sys.executable, "-m", "cli", "status", "--json", "--spool", str(path)]
            where[name] = tree
        samples: dict[str, list[float]] = {name: [] for name in commands}
        for name, argv in commands.items():  # warm the page cache once
            timed(argv, where[name])
        for _ in range(args.runs):
            for name, argv in commands.items():
                samples[name].append(timed(argv, where[name]))

    medians = {name: statistics.median(times) for name, times in samples.items()}
    base = medians["python -c pass"]
    result = {
        "runs": args.runs,
        "events": args.events,
        "median_s": {k: round(v, 4) for k, v in medians.items()},
        "status_json_over_bare_python": round(medians["status --json"] / base, 2),
        "status_json_over_sdk_import": round(
            medians["status --json"] / medians["import scale_gp_beta"], 2
        ),
        "goal_s": GOAL_S,
        "goal_met": {name: medians[name] < GOAL_S for name in GOALS},
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for name, median in medians.items():
        print(f"{name:<28} median {median * 1000:7.1f} ms   ({median / base:4.1f}x bare python)")
    print(f"status --json: {result['status_json_over_sdk_import']}x the SDK's import alone")
    for name in GOALS:
        print(f"{name}: goal under {GOAL_S} s {'met' if medians[name] < GOAL_S else 'NOT met'}")


if __name__ == "__main__":
    main()
