"""Peak resident memory of this process while a piece of work runs, sampled 100 times a second."""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["measure_rss"]

T = TypeVar("T")


def measure_rss(work: Callable[[], T]) -> tuple[T, int, int]:
    """``(work(), rss before, peak rss)`` in bytes."""
    psutil: Any = importlib.import_module("psutil")  # psutil ships no type hints
    process = psutil.Process()
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, process.memory_info().rss)
            stop.wait(0.01)

    before = int(process.memory_info().rss)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = work()
    finally:
        stop.set()
        sampler.join()
    return result, before, max(peak, int(process.memory_info().rss))
