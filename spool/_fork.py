"""The spool's SQLite connections across ``os.fork()``: none is inside SQLite when a fork
happens, and a forked child closes the ones it inherited before it opens its own.

SQLite keeps, per process, one record of the locks held on each file, shared by every
connection to it. A child inherits the parent's connections in memory but none of their
POSIX locks and none of their threads. Two failures follow, both seen with real forks:

- a fork while the parent's writer or shipper is inside a transaction leaves the child a
  record saying the WAL's write lock is held, by a connection no thread will ever finish:
  the child's own writer and shipper then wait on it forever (a hung ``on_span_end``);
- while the inherited connections stay open, the child's new ones join their record instead
  of taking real locks. When the parent then closes its last connection it finds no other
  process holding the file, checkpoints and deletes the WAL under the child: the child's
  later commits go to a deleted file and are lost.

So every SQLite call a worker (the writer thread, a shipper's connection thread) makes runs
inside :data:`GATE`; ``os.register_at_fork`` closes the gate before a fork, waiting for the
calls inside to finish, and opens it after. In the child, the connections the workers had
open (:func:`track`) are closed, which drops the inherited record: with no transaction open
their closing touches nothing the parent uses, and the parent's real locks keep it from
checkpointing. The child's own connections then take real locks of their own.

A worker's three calls (a sketch, not a doctest)::

    conn = track(connect(config))        # its connection
    with GATE:                           # around each of its SQLite calls or transactions
        _run_tx(conn, ops.stats(), write=False)
    close_tracked(conn)
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable
from typing import ParamSpec, TypeVar

__all__ = ["GATE", "ForkGate", "close_tracked", "gated", "track"]

P = ParamSpec("P")
T = TypeVar("T")


class ForkGate:
    """Entered around SQLite calls (reentrant per thread); a fork waits until it is empty.

    ``waiting`` is set while a fork waits for calls to leave (tests use it to know that the
    fork has begun without a sleep).
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._inside = 0
        self._forks = 0
        self._depth = threading.local()
        self.waiting = threading.Event()
        # Whether the last fork happened with nothing inside (always, unless the forking
        # thread was itself inside: it cannot wait for itself).
        self.quiet = True

    def __enter__(self) -> None:
        depth = getattr(self._depth, "n", 0)
        if depth == 0:
            with self._cond:
                while self._forks:
                    self._cond.wait()
                self._inside += 1
        self._depth.n = depth + 1

    def __exit__(self, *exc: object) -> None:
        self._depth.n -= 1
        if self._depth.n == 0:
            with self._cond:
                self._inside -= 1
                if not self._inside:
                    self._cond.notify_all()

    def before_fork(self) -> None:
        with self._cond:
            self._forks += 1
            mine = getattr(self._depth, "n", 0)
            self.quiet = mine == 0
            if self._inside > mine:
                self.waiting.set()
            while self._inside > mine:
                self._cond.wait()
            self.waiting.clear()

    def after_fork_in_parent(self) -> None:
        with self._cond:
            self._forks -= 1
            self._cond.notify_all()

    def after_fork_in_child(self) -> None:
        quiet = self.quiet
        # The condition's lock may have been held by a thread that does not exist here.
        self._reset()
        self.quiet = quiet


GATE = ForkGate()
"""The one gate of this process."""

# By id: sqlite3 connections take no weak references. Each leaves with close_tracked().
_tracked: dict[int, sqlite3.Connection] = {}


def track(conn: sqlite3.Connection) -> sqlite3.Connection:
    """Mark ``conn`` as a worker's, one that a forked child closes; returns ``conn``. The
    worker closes it with :func:`close_tracked`."""
    _tracked[id(conn)] = conn
    return conn


def close_tracked(conn: sqlite3.Connection) -> None:
    """Close a worker's connection, inside the gate, and forget it."""
    with GATE, contextlib.suppress(sqlite3.Error):
        conn.close()
    _tracked.pop(id(conn), None)


def gated(fn: Callable[P, T]) -> Callable[P, T]:
    """``fn``, called inside :data:`GATE` (for a function run on another thread)."""

    def call(*args: P.args, **kwargs: P.kwargs) -> T:
        with GATE:
            return fn(*args, **kwargs)

    return call


def _close_inherited() -> None:
    if not GATE.quiet:
        # Forked from inside a transaction: closing could roll back into memory the parent
        # shares. Leave them be (the child's spool may then wait on their locks).
        _tracked.clear()
        return
    for conn in list(_tracked.values()):
        close_tracked(conn)


def _after_fork_in_child() -> None:
    GATE.after_fork_in_child()
    _close_inherited()


os.register_at_fork(
    before=GATE.before_fork,
    after_in_parent=GATE.after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)
