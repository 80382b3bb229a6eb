"""With the real agentex (Python 3.12): the agentex snippets of README.md and
docs/integrating.md run as they are, copied into a file (issue 10). The example file the guide
shows is run by tests/test_integration_examples.py."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

pytest.importorskip("agentex.lib.core.tracing", reason="agentex-sdk needs Python 3.12")

from conftest import run_program

from spool import EventState, Spool, SpoolConfig

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "docs" / "integrating.md"]


def agentex_snippets() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        for block in re.findall(r"```python\n(.*?)```", doc.read_text(), re.DOTALL):
            if "spool.agentex" in block and "examples/agentex_processor.py" not in block:
                found.append((doc.name, block))
    return found


def test_both_documents_have_a_snippet() -> None:
    assert sorted({name for name, _ in agentex_snippets()}) == ["README.md", "integrating.md"]


def unique_snippets() -> list[str]:
    """Each different snippet once (the two documents show the same program)."""
    return sorted({snippet for _, snippet in agentex_snippets()})


@pytest.mark.slow
@pytest.mark.parametrize("snippet", unique_snippets())
def test_the_snippet_runs_and_spools(tmp_path: Path, snippet: str) -> None:
    (tmp_path / "agent.py").write_text(snippet)
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    done = run_program([str(tmp_path / "agent.py")], env, timeout=180, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    with Spool.open(SpoolConfig(path=tmp_path / "spool.db"), create=False) as spool:
        kinds = sorted(r.kind.value for r in spool.export(list(EventState)))
    assert kinds == ["end", "start"]
