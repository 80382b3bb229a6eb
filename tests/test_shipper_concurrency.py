"""The adaptive concurrency controller, driven by an injected clock (no network, no sleeps)."""

from __future__ import annotations

import doctest
import heapq
import math
import random

import pytest

from shipper import concurrency
from shipper.concurrency import AdaptiveConcurrency, AimdSettings, Signal


class Clock:
    """A clock the test moves: each answer arrives ``rtt`` after the previous one."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def answer(aimd: AdaptiveConcurrency, clock: Clock, rtt: float, signal: Signal = Signal.OK) -> None:
    clock.now += rtt
    aimd.record(rtt, signal)


def one_window(
    aimd: AdaptiveConcurrency, clock: Clock, rtt: float, signal: Signal = Signal.OK
) -> None:
    """A volley of ``limit`` requests sent together, all answered ``rtt`` later."""
    clock.now += rtt
    for _ in range(aimd.limit):
        aimd.record(rtt, signal)


def test_the_module_docstring_examples_hold() -> None:
    assert doctest.testmod(concurrency).failed == 0


def test_starts_at_initial() -> None:
    assert AdaptiveConcurrency(10).limit == 1
    assert AdaptiveConcurrency(10, initial=7).limit == 7


@pytest.mark.parametrize(("maximum", "initial"), [(0, 1), (5, 0), (5, 6)])
def test_rejects_limits_out_of_range(maximum: int, initial: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        AdaptiveConcurrency(maximum, initial=initial)


@pytest.mark.parametrize("rtt", [-0.1, float("nan")])
def test_rejects_a_nonsense_rtt(rtt: float) -> None:
    with pytest.raises(ValueError, match="rtt"):
        AdaptiveConcurrency(4, clock=Clock()).record(rtt, Signal.OK)


def test_settings_reject_ratios_outside_zero_to_one() -> None:
    with pytest.raises(ValueError, match="backpressure_ratio"):
        AimdSettings(backpressure_ratio=1.0)
    with pytest.raises(ValueError, match="rtt_tolerance"):
        AimdSettings(rtt_tolerance=-1)
    with pytest.raises(ValueError, match="min_samples"):
        AimdSettings(min_samples=0)


def test_a_window_waits_for_enough_answers_but_not_beyond_a_round_trips_worth() -> None:
    clock = Clock()
    aimd = AdaptiveConcurrency(64, initial=8, clock=clock)

    def answers(at: float, n: int) -> None:
        clock.now = at
        for _ in range(n):
            aimd.record(0.1, Signal.OK)

    answers(0.1, 4)  # the baseline; the window runs to 0.2
    answers(0.2, 3)  # past its end, but three answers are too few to judge
    answers(0.25, 1)
    assert aimd.limit == 8
    answers(0.3, 1)  # the window of four closes
    assert aimd.limit == 16
    # At limit 1 a round trip brings one answer: one is enough there. (The first answer is
    # the baseline; a window closes on the first answer after it.)
    slow = AdaptiveConcurrency(64, clock=clock)
    for _ in range(3):
        answer(slow, clock, 0.1)
    assert slow.limit == 2


def test_steady_rtt_ramps_up_to_the_maximum_and_stays() -> None:
    clock = Clock()
    aimd = AdaptiveConcurrency(64, clock=clock)
    seen = []
    for _ in range(20):
        one_window(aimd, clock, 0.15)
        seen.append(aimd.limit)
    assert seen == sorted(seen)
    assert seen[-1] == 64
    # Slow start: 1 -> 64 in a handful of round trips, not 63.
    assert seen.index(64) <= 8


def test_after_a_decrease_the_climb_is_one_per_window() -> None:
    clock = Clock()
    aimd = AdaptiveConcurrency(100, initial=20, clock=clock)
    one_window(aimd, clock, 0.1, Signal.BACKPRESSURE)
    assert aimd.limit == 10
    limits = []
    for _ in range(6):
        one_window(aimd, clock, 0.1)
        limits.append(aimd.limit)
    # The first answer sets the baseline; each later window adds one.
    assert limits == [10, 11, 12, 13, 14, 15]


def test_noisy_but_steady_latency_still_reaches_the_maximum() -> None:
    """The benchmark's endpoint: lognormal, p50 150 ms, p95 330 ms, independent of load."""
    rng = random.Random(7)
    clock = Clock()
    aimd = AdaptiveConcurrency(32, clock=clock)
    for _ in range(3000):
        answer(aimd, clock, rng.lognormvariate(-1.897, 0.479) / aimd.limit, Signal.OK)
    assert aimd.limit >= 28


@pytest.mark.parametrize("seed", range(8))
def test_a_long_tailed_steady_latency_reaches_the_maximum_soon_and_stays(seed: int) -> None:
    """Requests kept in flight at the limit, each answered after a lognormal delay (p50 150 ms,
    p95 330 ms): the tail alone never brings the limit down."""
    rng = random.Random(seed)
    clock = Clock()
    aimd = AdaptiveConcurrency(32, clock=clock)
    answers: list[tuple[float, float]] = []  # (arrives at, rtt), a heap
    reached = None
    while clock.now < 20.0:
        while len(answers) < aimd.limit:
            rtt = rng.lognormvariate(math.log(0.15), 0.479)
            heapq.heappush(answers, (clock.now + rtt, rtt))
        clock.now, rtt = heapq.heappop(answers)
        aimd.record(rtt, Signal.OK)
        if aimd.limit == 32 and reached is None:
            reached = clock.now
        if reached is not None:
            assert aimd.limit == 32
    assert reached is not None
    assert reached < 3.0


def test_rtt_growing_with_load_stops_the_climb() -> None:
    """An endpoint that serves 8 at a time: beyond that, requests queue and RTT grows."""
    clock = Clock()
    aimd = AdaptiveConcurrency(64, clock=clock)
    limits = []
    for _ in range(200):
        rtt = 0.1 * max(1.0, aimd.limit / 8)
        one_window(aimd, clock, rtt)
        limits.append(aimd.limit)
    # Slow start overshoots (the answers of a volley arrive a round trip later), the rise
    # brings it down, and then the lagging baseline holds it well short of the maximum. A
    # sustained rise is absorbed into the baseline over time: back-pressure is the firm brake.
    peak = max(limits[:20])
    assert peak > limits[20]
    assert max(limits[100:]) <= 40


def test_rising_rtt_decreases_multiplicatively() -> None:
    clock = Clock()
    aimd = AdaptiveConcurrency(40, initial=40, clock=clock)
    for _ in range(4):
        one_window(aimd, clock, 0.1)
    assert aimd.limit == 40
    one_window(aimd, clock, 0.3)
    assert aimd.limit == 40
    answer(aimd, clock, 0.3)  # closes the window of slow answers
    assert aimd.limit == 36


def test_backpressure_halves_at_once_and_once_per_window() -> None:
    clock = Clock()
    aimd = AdaptiveConcurrency(32, initial=32, clock=clock)
    one_window(aimd, clock, 0.2)
    clock.now += 0.2
    aimd.record(0.2, Signal.BACKPRESSURE)
    assert aimd.limit == 16
    for _ in range(31):  # the rest of the same volley
        aimd.record(0.2, Signal.BACKPRESSURE)
    assert aimd.limit == 16
    one_window(aimd, clock, 0.2, Signal.BACKPRESSURE)
    assert aimd.limit == 8


def test_backpressure_before_any_answer_still_halves() -> None:
    aimd = AdaptiveConcurrency(10, initial=10, clock=Clock())
    aimd.record(30.0, Signal.BACKPRESSURE)
    assert aimd.limit == 5
    assert aimd.baseline_rtt is None


def test_never_below_one_under_a_storm() -> None:
    clock = Clock()
    aimd = AdaptiveConcurrency(8, initial=8, clock=clock)
    for _ in range(50):
        one_window(aimd, clock, 0.05, Signal.BACKPRESSURE)
        assert aimd.limit >= 1
    assert aimd.limit == 1


def test_never_above_the_maximum() -> None:
    clock = Clock()
    aimd = AdaptiveConcurrency(3, clock=clock)
    for _ in range(100):
        one_window(aimd, clock, 0.001)
        assert aimd.limit <= 3
    assert aimd.limit == 3


def test_other_outcomes_change_nothing() -> None:
    clock = Clock()
    aimd = AdaptiveConcurrency(16, initial=4, clock=clock)
    for _ in range(20):
        one_window(aimd, clock, 5.0, Signal.OTHER)
    assert aimd.limit == 4
    assert aimd.baseline_rtt is None
    one_window(aimd, clock, 0.1)
    assert aimd.baseline_rtt == pytest.approx(0.1)


def test_a_storm_then_calm_recovers() -> None:
    clock = Clock()
    aimd = AdaptiveConcurrency(16, initial=16, clock=clock)
    one_window(aimd, clock, 0.1)
    for _ in range(5):
        one_window(aimd, clock, 0.1, Signal.BACKPRESSURE)
    assert aimd.limit == 1
    for _ in range(30):
        one_window(aimd, clock, 0.1)
    assert aimd.limit == 16


def test_answers_within_one_window_count_once() -> None:
    """Many fast answers inside one baseline RTT move the limit by at most one step."""
    clock = Clock()
    aimd = AdaptiveConcurrency(100, initial=10, clock=clock)
    one_window(aimd, clock, 1.0, Signal.BACKPRESSURE)  # leave slow start
    one_window(aimd, clock, 1.0)
    assert aimd.limit == 5
    clock.now += 1.0
    for _ in range(50):
        clock.now += 0.001
        aimd.record(1.0, Signal.OK)
    assert aimd.limit == 6
