"""Every program in examples/ runs against FakeSpanServer (credentials from the environment, as
a user would run it) and its spans arrive; docs/integrating.md shows each example verbatim."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
from conftest import run_program, status_json

from shipper.testing import FakeSpanServer

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
GUIDE = ROOT / "docs" / "integrating.md"

# Spans each example makes (its own constants, restated: the check is not circular).
SPANS = {
    "plain_asyncio.py": 5 * (1 + 3),
    "threads.py": 8 * (1 + 2),
    "sgp_tracing.py": 3 * 3,
    "agentex_processor.py": 3,
    "otel_tracing.py": 3 * 2,
}


def agentex_installed() -> bool:
    try:
        return importlib.util.find_spec("agentex.lib") is not None
    except ModuleNotFoundError:
        return False


def test_every_example_is_covered() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(SPANS)


@pytest.mark.parametrize("example", sorted(SPANS))
def test_example_ships_its_spans(
    example: str, tmp_path: Path, span_server: FakeSpanServer, ship_env: dict[str, str]
) -> None:
    path = tmp_path / "spool.db"

    done = run_program([str(EXAMPLES / example), str(path)], ship_env)

    assert done.returncode == 0, done.stderr
    assert f"traced {SPANS[example]} spans into {path}" in done.stdout
    if example == "agentex_processor.py":  # make test runs it with agentex too (.venv312)
        assert ("through agentex" in done.stdout) == agentex_installed()
    stored = span_server.spans()
    assert len(stored) == SPANS[example]
    assert all("end_timestamp" in item for item in stored.values())
    assert span_server.duplicates() == 0
    assert span_server.order_violations() == []
    facts = status_json(path, ship_env)
    assert (facts["pending"], facts["leased"], facts["dead"]) == (0, 0, 0)
    assert (facts["refused"], facts["dropped"]) == (0, 0)


def python_blocks(markdown: str) -> list[str]:
    return [m.group(1) for m in re.finditer(r"```python\n(.*?)```", markdown, re.DOTALL)]


@pytest.mark.parametrize("example", sorted(SPANS))
def test_the_guide_shows_the_example_as_it_is(example: str) -> None:
    source = (EXAMPLES / example).read_text()
    guide = GUIDE.read_text()

    assert f"examples/{example}" in guide
    assert source in python_blocks(guide), f"docs/integrating.md is out of step with {example}"
