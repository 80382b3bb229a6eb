"""The API key echoed back by the endpoint in another spelling (issue 12): upper-cased, cut to
a prefix of 8 characters or more, or to its tail, it becomes ``***``. Through a whole drain:
``test_faults_security.py::test_a_key_echoed_back_by_the_endpoint_is_not_stored_or_logged``."""

from __future__ import annotations

import pytest

from shipper._redact import redact_detail

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
