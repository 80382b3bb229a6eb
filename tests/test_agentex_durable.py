"""With the real agentex (Python 3.12, ``make test``'s .venv312): a span event is in the spool
when the agent's own tracing call returns, so a SIGKILL right after the last
``async with adk.tracing.span(...)`` exits loses nothing (issue 10).

agentex alone hands events to its in-memory ``AsyncSpanQueue``, which calls processors later;
the second test holds that (the reason spool.agentex wraps ``AsyncTrace.start_span``/
``end_span``), and the third fails when agentex changes what the wrapper relies on.
"""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("agentex.lib.core.tracing", reason="agentex-sdk needs Python 3.12")

from agentex.lib.core.tracing.trace import AsyncTrace

from spool import EventState, Spool, SpoolConfig

CHILD = Path(__file__).parent / "agentex_children" / "durable_agent.py"
SPANS = 10


def child_env() -> dict[str, str]:
    # litellm (imported by agentex.lib.adk) fetches a price list from the internet otherwise.
    return {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}


def run_agent(path: Path, mode: str) -> list[str]:
    """Run the child until it SIGKILLs itself; the span ids it saw exit their blocks."""
    done = subprocess.run(
        [sys.executable, str(CHILD), str(path), mode, str(SPANS)],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == -9, done.stderr[-2000:]
    return [line.split()[1] for line in done.stdout.splitlines() if line.startswith("span ")]


def spooled(path: Path) -> Counter[tuple[str, str]]:
    if not path.exists():
        return Counter()
    with Spool.open(SpoolConfig(path=path), create=False) as spool:
        return Counter((r.span_id, r.kind.value) for r in spool.export(list(EventState)))


@pytest.mark.slow
def test_sigkill_right_after_the_last_span_exits_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"

    ids = run_agent(path, "use_spool")

    assert len(ids) == SPANS
    expected = {(span_id, kind) for span_id in ids for kind in ("start", "end")}
    stored = spooled(path)
    assert set(stored) == expected  # 20 of 20, the last span's end included
    assert max(stored.values()) == 1


@pytest.mark.slow
def test_agentex_queue_alone_is_not_durable_at_the_call(tmp_path: Path) -> None:
    """The measured reason for the wrapper: registered only through agentex's registry, the
    processors are called from agentex's queue, after the agent's call returned. If agentex
    ever awaits its processors on the agent's call, this fails: the wrapper can go."""
    path = tmp_path / "spool.db"

    ids = run_agent(path, "queue")

    assert len(ids) == SPANS
    assert (ids[-1], "end") not in spooled(path)


def test_what_the_wrapper_relies_on_is_still_there() -> None:
    """spool.agentex wraps these two public coroutine methods and reads ``processors``: a
    change here needs a look at spool.agentex before raising agentex-sdk's upper bound."""
    for name in ("start_span", "end_span"):
        method = getattr(AsyncTrace, name)
        original = inspect.unwrap(method)
        assert inspect.iscoroutinefunction(original), name
    start = list(inspect.signature(inspect.unwrap(AsyncTrace.start_span)).parameters)
    end = list(inspect.signature(inspect.unwrap(AsyncTrace.end_span)).parameters)
    assert start == ["self", "name", "parent_id", "input", "data", "task_id"]
    assert end == ["self", "span"]
    init = inspect.signature(AsyncTrace.__init__).parameters
    assert "processors" in init
    source = inspect.getsource(inspect.unwrap(AsyncTrace.end_span))
    assert "self._span_queue.enqueue(" in source
    assert "self.processors" in source
