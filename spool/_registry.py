"""The process's shared per-spool workers (the writer, the embedded shipper), one registry.

Each entry is keyed by its kind and the spool's resolved path and counted by reference: the
first user starts it, the last one stops it. A forked child inherits the entries but none of
their threads, so after a fork the registry forgets them (``os.register_at_fork``, as
OpenTelemetry's processors do) and moves on to a new :attr:`Registry.epoch`; holders compare
the epoch they acquired in to notice the fork and acquire afresh in the child.

>>> writer = REGISTRY.acquire("writer", path, lambda: GroupCommitter(config))
>>> if REGISTRY.release("writer", path, writer):   # the last user
...     writer.close()
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = ["REGISTRY", "Registry"]

T = TypeVar("T")


@dataclass(slots=True)
class _Entry:
    item: Any
    refs: int


class Registry:
    """Reference-counted workers by (kind, path), forgotten in a forked child."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str], _Entry] = {}
        # What a fork left behind: kept referenced, never stopped (their threads do not
        # exist in the child). Their SQLite connections were closed by spool/_fork.py.
        self._orphans: list[object] = []
        self.epoch = 0

    def acquire(
        self,
        kind: str,
        path: str | os.PathLike[str],
        start: Callable[[], T],
        alive: Callable[[T], bool] = lambda _: True,
    ) -> T:
        """The ``kind`` worker of ``path``, started with ``start()`` on first use (or when the
        one registered is no longer ``alive``); one more reference to it."""
        key = (kind, os.fspath(path))
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or not alive(entry.item):
                entry = self._entries[key] = _Entry(start(), 0)
            entry.refs += 1
            item: T = entry.item
            return item

    def release(self, kind: str, path: str | os.PathLike[str], item: object) -> bool:
        """Drop one reference to ``item``; True when it was the last (the caller stops it)."""
        key = (kind, os.fspath(path))
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.item is not item:
                # Replaced (it had died) or forgotten (at exit): its last user stops it.
                return True
            entry.refs -= 1
            if entry.refs > 0:
                return False
            del self._entries[key]
            return True

    def take_all(self, kind: str) -> list[Any]:
        """Forget every ``kind`` worker and return them (to stop them at interpreter exit)."""
        with self._lock:
            keys = [key for key in self._entries if key[0] == kind]
            return [self._entries.pop(key).item for key in keys]

    def _after_fork_in_child(self) -> None:
        # The parent's lock may have been held by a thread that does not exist here.
        self._lock = threading.Lock()
        self._orphans.extend(entry.item for entry in self._entries.values())
        self._entries = {}
        self.epoch += 1


REGISTRY = Registry()
"""The one registry of this process."""

os.register_at_fork(after_in_child=REGISTRY._after_fork_in_child)
