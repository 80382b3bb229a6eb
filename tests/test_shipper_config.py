"""ShipperConfig's shipping options: defaults, environment variables and refusals."""

from __future__ import annotations

import re

import pytest

from shipper import ShipperConfig


def test_defaults_suit_a_far_endpoint() -> None:
    config = ShipperConfig()
    assert config.batch_size == 50
    assert config.concurrency == 32
    assert config.batch_max_bytes == 4 * 1024 * 1024
    assert config.start_delay == 5.0


def test_the_new_options_come_from_the_environment() -> None:
    env = {
        "SPOOL_SHIP_BATCH_MAX_BYTES": "65536",
        "SPOOL_SHIP_START_DELAY": " 2.5 ",
        "SPOOL_SHIP_CONCURRENCY": "64",
    }
    config = ShipperConfig.from_env(env)
    assert (config.batch_max_bytes, config.start_delay, config.concurrency) == (65536, 2.5, 64)
    assert ShipperConfig.from_env(env, start_delay=0.0).start_delay == 0.0


@pytest.mark.parametrize(
    ("variable", "value"),
    [("SPOOL_SHIP_BATCH_MAX_BYTES", "4MiB"), ("SPOOL_SHIP_START_DELAY", "soon")],
)
def test_a_bad_value_names_its_variable(variable: str, value: str) -> None:
    with pytest.raises(ValueError, match=variable):
        ShipperConfig.from_env({variable: value})


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("batch_max_bytes", 1023, "batch_max_bytes must be at least 1024"),
        ("start_delay", -1.0, "start_delay must not be negative"),
        ("concurrency", 0, "concurrency must be at least 1"),
        ("batch_size", 1001, "batch_size must be 1 to 1000"),
    ],
)
def test_out_of_range_values_are_refused(option: str, value: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ShipperConfig(**{option: value})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad", ["http://", "https://host:port/", "ftp://example.com", "example.com"]
)
def test_a_base_url_no_request_could_go_to_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(f"base_url={bad!r} is not")):
        ShipperConfig(base_url=bad)
    with pytest.raises(ValueError, match="^" + re.escape(f"SGP_CLIENT_BASE_URL={bad!r} is not")):
        ShipperConfig.from_env({"SGP_CLIENT_BASE_URL": bad})


@pytest.mark.parametrize(
    "good", ["https://api.egp.scale.com", "http://127.0.0.1:8123", "http://[::1]:80/v5"]
)
def test_base_urls_that_requests_can_go_to_are_taken(good: str) -> None:
    assert ShipperConfig(base_url=good).base_url == good
    assert ShipperConfig.from_env({"SGP_CLIENT_BASE_URL": good}).base_url == good
