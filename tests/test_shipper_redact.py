"""The API key echoed back by the endpoint in another spelling (issue 12): upper-cased, cut to
a prefix of 8 characters or more, or to its tail, it is not stored in ``last_error`` or the
blocked reason, nor logged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_program
from test_cli_inspect import cli
from test_faults_security import CANARY, assert_no_canary, span, spool_bytes, spool_env

from shipper._redact import redact_detail
from shipper.testing import FakeSpanServer
from spool import SyncSpoolProcessor

KEY = "sk-live-abcdef1234567890"


@pytest.mark.parametrize(
    ("said", "stored"),
    [
        (f"bad key {KEY}", "bad key ***"),
        (f"bad key {KEY.upper()}", "bad key ***"),
        (f"bad key '{KEY[:10]}...'", "bad key '***...'"),
        (f"bad key {KEY[:8]}", "bad key ***"),
        (f"key ending {KEY[-9:]}", "key ending ***"),
        (f"{KEY}{KEY.upper()}", "******"),
        # Shorter than 8 characters is not the key: ordinary words stay.
        (f"bad key {KEY[:7]}, status ok", f"bad key {KEY[:7]}, status ok"),
    ],
)
def test_every_spelling_of_the_key_is_redacted(said: str, stored: str) -> None:
    assert redact_detail(said, KEY) == stored


def test_no_key_or_a_short_one_changes_nothing() -> None:
    assert redact_detail("Invalid key", None) == "Invalid key"
    assert redact_detail("Invalid key abc", "abc") == "Invalid key abc"


@pytest.mark.parametrize(
    "echo", [CANARY.upper(), CANARY[:12], CANARY.lower()[:20]], ids=["upper", "prefix", "lower"]
)
def test_a_key_echoed_in_another_spelling_is_not_stored_or_logged(
    tmp_path: Path, echo: str
) -> None:
    path = tmp_path / "spool.db"
    processor = SyncSpoolProcessor(path)
    processor.on_span_end(span(0))
    processor.shutdown()
    with FakeSpanServer(api_key=CANARY) as server:
        server.faults.fail_next(1000, status=401, detail=f"Invalid API key {echo!r}")
        env = spool_env(server.base_url)
        done = run_program(["spool-ship", "drain", "--spool", str(path), "--timeout", "1"], env)
    assert done.returncode == 1, done.stderr
    status = json.loads(cli("status", "--json", "--spool", path).stdout)
    assert status["blocked_reason"] == "HTTP 401: Invalid API key '***'"
    for where, text in (("drain's stderr", done.stderr), ("status", json.dumps(status))):
        assert echo not in text, where
        assert_no_canary(where, text)
    assert echo.encode() not in b"".join(spool_bytes(path).values())
