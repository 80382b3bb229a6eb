"""The spool's own house (issue 12): the layers between the three packages, the one private
dependency API the spool leans on (aiosqlite), the C JSON encoder's fallback, and the counter
names as one enum."""

from __future__ import annotations

import ast
import asyncio
import re
import subprocess
import sys
import threading
from pathlib import Path

import aiosqlite
import pytest

from spool import Counter, EventKind, encode_span
from spool._model import DROPPED_PREFIX, REFUSED_PREFIX

ROOT = Path(__file__).parent.parent
# What each package may import of the others: cli -> shipper -> spool, never back.
LAYERS = {"spool": set(), "shipper": {"spool"}, "cli": {"spool", "shipper"}}
# What the spool never imports, even lazily: it knows SQLite, not HTTP.
NOT_IN_SPOOL = {"httpx", "scale_gp_beta", "aiohttp", "httpx_aiohttp", "tenacity"}


def imported_packages(path: Path) -> set[str]:
    """Top-level names every import statement of ``path`` names, at any depth (lazy ones too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_imports_point_one_way(package: str) -> None:
    forbidden = set(LAYERS) - LAYERS[package] - {package}
    if package == "spool":
        forbidden |= NOT_IN_SPOOL
    wrong = {
        str(module.relative_to(ROOT)): sorted(imported_packages(module) & forbidden)
        for module in sorted((ROOT / package).rglob("*.py"))
    }
    assert {k: v for k, v in wrong.items() if v} == {}


def test_importing_each_package_loads_no_layer_above_it() -> None:
    code = (
        "import sys, importlib\n"
        "importlib.import_module(sys.argv[1])\n"
        "print(','.join(sorted({m.split('.')[0] for m in sys.modules} & set(sys.argv[2:]))))"
    )
    for package, above in (("spool", ["shipper", "cli"]), ("shipper", ["cli"])):
        done = subprocess.run(
            [sys.executable, "-c", code, package, *above],
            capture_output=True,
            text=True,
            check=True,
        )
        assert done.stdout.strip() == "", (package, done.stdout)


# ---- aiosqlite: Connection._thread and Connection._execute (spool/store.py) -------------------


def test_aiosqlite_is_a_version_whose_private_api_was_checked() -> None:
    """spool/store.py uses ``Connection._thread`` (made a daemon) and ``Connection._execute``
    (a whole transaction in one hand-off). Both exist as used from 0.22 (before, Connection
    was the thread itself); pyproject.toml bounds aiosqlite to the versions checked. A new
    version fails here until store.py is checked against it and the bound widened."""
    major, minor = (int(part) for part in aiosqlite.__version__.split(".")[:2])
    assert (major, minor) == (0, 22), aiosqlite.__version__


def test_aiosqlite_private_api_behaves_as_the_store_uses_it(tmp_path: Path) -> None:
    import sqlite3

    async def main() -> tuple[threading.Thread, str, int]:
        conn = sqlite3.connect(tmp_path / "x.db", check_same_thread=False)
        db = aiosqlite.Connection(lambda: conn, iter_chunk_size=64)
        worker = db._thread
        assert isinstance(worker, threading.Thread)
        worker.daemon = True  # before start, as AsyncSpool.open does
        await db

        def on_worker(value: int) -> tuple[str, int]:
            return threading.current_thread().name, value * 2

        try:
            name, doubled = await db._execute(on_worker, 21)  # type: ignore[no-untyped-call]
        finally:
            await db.close()
        return worker, name, doubled

    worker, name, doubled = asyncio.run(main())
    assert worker.daemon
    assert name == worker.name
    assert doubled == 42


# ---- the C JSON encoder --------------------------------------------------------------------


def test_import_spool_survives_a_c_encoder_that_takes_other_arguments() -> None:
    """``_json.make_encoder`` is private: on a Python where it raises TypeError, the spool
    imports and encodes with json.dumps instead."""
    code = (
        "import json, sys, types\n"  # json keeps the real encoder it imported
        "fake = types.ModuleType('_json')\n"
        "def make_encoder(*args):\n    raise TypeError('make_encoder() takes other arguments')\n"
        "fake.make_encoder = make_encoder\n"
        "sys.modules['_json'] = fake\n"
        "from spool import EventKind, encode_span\n"
        "span = {'name': 'n', 'id': 's', 'trace_id': 't', "
        "'start_timestamp': '2024-01-01T00:00:00+00:00', 'metadata': {'x': None}}\n"
        "sys.stdout.buffer.write(encode_span(span, EventKind.START, 1 << 20)[2])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True)
    span = {
        "name": "n",
        "id": "s",
        "trace_id": "t",
        "start_timestamp": "2024-01-01T00:00:00+00:00",
        "metadata": {"x": None},
    }
    assert done.stdout == encode_span(span, EventKind.START, 1 << 20)[2]


# ---- counters ------------------------------------------------------------------------------


def test_every_refusal_reason_the_mapping_raises_is_a_counter() -> None:
    source = (ROOT / "spool" / "_mapping.py").read_text()
    reasons = set(re.findall(r'Refused\(\s*"([a-z_]+)"', source))
    reasons |= set(re.findall(r'"([a-z_]+)"\s*\n?\s*if getattr', source))  # computed ones
    assert reasons, "the pattern no longer finds the mapping's reasons"
    known = {c.reason for c in Counter if c.value.startswith(REFUSED_PREFIX)}
    assert reasons - known == set()


def test_an_unknown_refusal_reason_counts_as_invalid_span_and_never_raises() -> None:
    assert Counter.refused("missing_name") is Counter.REFUSED_MISSING_NAME
    assert Counter.refused("something new") is Counter.REFUSED_INVALID_SPAN


def test_every_counter_is_documented() -> None:
    doc = (ROOT / "docs" / "reliability.md").read_text()
    missing = [c.value for c in Counter if f"`{c.reason or c.value}`" not in doc]
    assert missing == []


def test_no_counter_name_is_spelled_out_as_a_bare_string() -> None:
    """Counter names are Counter members; the only bare strings are output keys
    (``"superseded"`` in ``status --json``), which this does not look for."""
    pattern = re.compile(rf"[\"'](?:{DROPPED_PREFIX}|{REFUSED_PREFIX})")
    found = [
        f"{module.relative_to(ROOT)}:{n}"
        for package in LAYERS
        for module in sorted((ROOT / package).rglob("*.py"))
        if module.name != "_model.py"
        for n, line in enumerate(module.read_text().splitlines(), 1)
        if pattern.search(line) and not line.lstrip().startswith("#")
    ]
    assert found == []
