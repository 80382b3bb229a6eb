"""The fake endpoint's lognormal latency and capacity limit (a real backend's long tail and
rate limiter, for the latency benchmarks)."""

from __future__ import annotations

import json
import statistics
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from shipper.testing import BATCH_PATH, FakeSpanServer, Faults


def test_a_lognormal_latency_has_the_median_and_p95_asked_for() -> None:
    faults = Faults()
    faults.set_latency(0.15, p95=0.33)
    # The delay each request would wait, drawn as the handler draws it.
    delays = sorted(faults._draw()[1] for _ in range(20_000))
    assert statistics.median(delays) == pytest.approx(0.15, rel=0.03)
    assert delays[int(0.95 * len(delays))] == pytest.approx(0.33, rel=0.05)
    assert min(delays) > 0


def test_without_p95_the_latency_stays_fixed_or_uniform() -> None:
    faults = Faults()
    faults.set_latency(0.15, p95=0.33)
    faults.set_latency(0.2)
    assert {faults._draw()[1] for _ in range(10)} == {0.2}


@pytest.mark.parametrize(("seconds", "p95"), [(0.0, 0.3), (0.3, 0.2), ((0.1, 0.2), 0.3)])
def test_a_lognormal_needs_a_positive_median_below_p95(
    seconds: float | tuple[float, float], p95: float
) -> None:
    with pytest.raises(ValueError, match="lognormal"):
        Faults().set_latency(seconds, p95=p95)


# ---- capacity: a rate limiter in front of the backend -------------------------------------------

KEY = "k"


def put(url: str, span_id: str) -> httpx.Response:
    item = {"id": span_id, "trace_id": "t", "name": "n", "start_timestamp": "2025-01-01T00:00:00Z"}
    body = json.dumps({"items": [item]}).encode()
    return httpx.put(f"{url}{BATCH_PATH}", content=body, headers={"x-api-key": KEY}, timeout=30)


def test_requests_beyond_the_capacity_are_refused_at_once() -> None:
    # The server stops first, dropping the two it holds, then the pool joins them.
    with ThreadPoolExecutor(2) as pool, FakeSpanServer(api_key=KEY) as server:
        server.faults.set_capacity(2, retry_after=0.5)
        server.faults.set_latency(30.0)  # the first two stay in flight
        held = [pool.submit(put, server.base_url, f"s{i}") for i in range(2)]
        assert server.wait_for(lambda: server.stats().in_flight == 2)
        refused = put(server.base_url, "s2")
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "0.5"
        assert refused.json() == {"detail": "too many requests"}
        server.faults.set_capacity(None)
        server.faults.set_latency(0.0)
        assert put(server.base_url, "s3").status_code == 200
    assert all(isinstance(f.exception(), httpx.TransportError) for f in held)


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity"):
        Faults().set_capacity(0)
