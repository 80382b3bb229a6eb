"""With the real agentex (Python 3.12): the spans spool-ship delivers are field for field the
ones agentex's own ``SGPAsyncTracingProcessor`` delivers for the same agent run (issue 10).

One child agent is traced by both at once: agentex's processor sends to one FakeSpanServer,
spool-ship spools, and ``spool-ship drain`` ships the spool to another. The metadata agentex
adds from its environment (``__source__``, ``__acp_type__``, ``__agent_name__``,
``__agent_id__``, ``__agent_version__``, ``__commit_sha__``) is set in the child's environment.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("agentex.lib.core.tracing", reason="agentex-sdk needs Python 3.12")

from conftest import SHIP_ACCOUNT, SHIP_KEY, run_program

from shipper.testing import FakeSpanServer

CHILD = Path(__file__).parent / "agentex_children" / "parity_agent.py"
SPANS = 9  # the corpus's spans (parity_agent.py)

AGENT_ENV = {
    "AGENT_NAME": "parity-agent",
    "AGENT_ID": "agent-1234",
    "AGENT_VERSION": "v1.2.3",
    "ACP_TYPE": "sync",
    "ACP_URL": "http://127.0.0.1:1",
    "AGENT_COMMIT_SHA": "0123456789abcdef0123456789abcdef01234567",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
}


def differences(theirs: dict[Any, Any], ours: dict[Any, Any]) -> list[str]:
    found = [f"only agentex's: {key}" for key in theirs.keys() - ours.keys()]
    found += [f"only spool-ship's: {key}" for key in ours.keys() - theirs.keys()]
    for key in theirs.keys() & ours.keys():
        for field in theirs[key].keys() | ours[key].keys():
            if theirs[key].get(field, "<absent>") != ours[key].get(field, "<absent>"):
                found.append(
                    f"{key} {field}: agentex {theirs[key].get(field, '<absent>')!r}, "
                    f"spool-ship {ours[key].get(field, '<absent>')!r}"
                )
    return found


@pytest.mark.slow
def test_spool_ship_delivers_what_agentex_delivers(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    with (
        FakeSpanServer(api_key=SHIP_KEY) as agentex_endpoint,
        FakeSpanServer(api_key=SHIP_KEY) as spool_endpoint,
    ):
        env = {**os.environ, **AGENT_ENV}
        child = run_program(
            [str(CHILD), str(path), agentex_endpoint.base_url, SHIP_KEY, SHIP_ACCOUNT],
            env,
            timeout=180,
        )
        assert child.returncode == 0, child.stderr[-3000:]
        ship_env = {
            **env,
            "SGP_API_KEY": SHIP_KEY,
            "SGP_ACCOUNT_ID": SHIP_ACCOUNT,
            "SGP_CLIENT_BASE_URL": spool_endpoint.base_url,
        }
        drained = run_program(
            ["spool-ship", "drain", "--spool", str(path), "--timeout", "60"], ship_env
        )
        assert drained.returncode == 0, drained.stdout + drained.stderr
        theirs, ours = agentex_endpoint.spans(), spool_endpoint.spans()

    assert len(theirs) == SPANS
    assert differences(theirs, ours) == []
    # The corpus did reach what it is about (so an empty comparison cannot pass).
    items = list(theirs.values())
    enriched = [item["metadata"] for item in items if isinstance(item["metadata"], dict)]
    assert {m.get("__agent_name__") for m in enriched} == {"parity-agent"}
    assert {m.get("__commit_sha__") for m in enriched} == {AGENT_ENV["AGENT_COMMIT_SHA"]}
    assert sum(item["status"] == "ERROR" for item in items) == 2
    assert any(item["type"] == "MY_TYPE" for item in items)
    assert any(isinstance(item["input"], list) for item in items)
    assert any(isinstance(item["metadata"], list) for item in items)
    assert any("\u2028" in item["name"] for item in items)
    assert any(not item["end_timestamp"].endswith(("Z", "+00:00")) for item in items)
