"""The fake endpoint's lognormal latency (a real backend's long tail, for the benchmarks)."""

from __future__ import annotations

import statistics

import pytest

from shipper.testing import Faults


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
