"""In-process shipping: a :class:`~shipper.Shipper` on its own daemon thread and event loop.

The agent's processors append on whatever loop or thread they run on (a new loop per request,
a blocked loop, plain threads); shipping goes on undisturbed on its own loop. There is one
embedded shipper per spool per process, started on first use and shared by reference count
in the process's one registry (:mod:`spool._registry`), which a forked child starts afresh.
:func:`start_embedded` is what ``SpoolProcessor(path, ship=True)`` calls.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import threading
import time
from concurrent.futures import Future

from spool import REGISTRY, SpoolConfig

from .config import ShipperConfig
from .lifecycle import Shipper

__all__ = ["EmbeddedShipper", "start_embedded", "stop_embedded"]

log = logging.getLogger("shipper")

# What a process still ships at interpreter exit if nobody called shutdown().
EXIT_TIMEOUT = 5.0


class EmbeddedShipper:
    """A shipper running in a daemon thread. Obtain it with :func:`start_embedded`."""

    def __init__(self, spool: SpoolConfig, config: ShipperConfig) -> None:
        self.spool_config = spool
        self.shipper = Shipper(spool, config)
        self._loop = asyncio.new_event_loop()
        self._started: Future[None] = Future()
        self._stopped = threading.Event()
        self._thread = threading.Thread(
            target=self._main, name=f"spool-shipper:{spool.path.name}", daemon=True
        )
        self._thread.start()
        self._started.result()  # raises the open error (bad credentials config, bad spool)

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        finally:
            self._loop.close()
            self._stopped.set()

    async def _serve(self) -> None:
        try:
            await self.shipper.open()
        except BaseException as exc:
            self._started.set_exception(exc)
            return
        self._started.set_result(None)
        try:
            await self.shipper.run()
        except Exception:
            log.exception("embedded shipper failed")
        finally:
            await self.shipper.aclose()

    def running(self) -> bool:
        """Whether its thread is still shipping (not stopped)."""
        return not self._stopped.is_set()

    def release(self, timeout: float) -> None:
        """Drop one user of this shipper (see :func:`stop_embedded`)."""
        stop_embedded(self, timeout)

    def shutdown(self, timeout: float) -> None:
        """Ship what can be shipped within ``timeout``, then stop; returns within the bound."""
        deadline = time.monotonic() + timeout
        if self._stopped.is_set():
            return
        try:
            asyncio.run_coroutine_threadsafe(self.shipper.finish(timeout * 0.9), self._loop)
        except RuntimeError:  # the loop already closed
            return
        self._thread.join(max(0.0, deadline - time.monotonic()))


_SHIPPER = "embedded-shipper"


def start_embedded(spool: SpoolConfig, config: object | None = None) -> EmbeddedShipper:
    """The process's shipper for ``spool``, started on first use (config from the environment
    unless given), and afresh in a forked child. Pair every call with :func:`stop_embedded`."""

    def start() -> EmbeddedShipper:
        chosen = ShipperConfig.from_env() if config is None else config
        if not isinstance(chosen, ShipperConfig):
            raise TypeError(f"ship= takes True or a ShipperConfig, not {type(chosen).__name__}")
        return EmbeddedShipper(spool, chosen)

    return REGISTRY.acquire(_SHIPPER, _key(spool), start, alive=EmbeddedShipper.running)


def stop_embedded(embedded: EmbeddedShipper, timeout: float) -> None:
    """Drop one reference; the last one ships what it can within ``timeout`` and stops."""
    if REGISTRY.release(_SHIPPER, _key(embedded.spool_config), embedded):
        embedded.shutdown(timeout)


def _key(spool: SpoolConfig) -> str:
    return os.path.realpath(spool.path)


def _shutdown_all() -> None:
    for embedded in REGISTRY.take_all(_SHIPPER):
        embedded.shutdown(EXIT_TIMEOUT)


# Run before the interpreter shuts down thread pools (the event loop's resolver needs one), the
# way concurrent.futures registers itself; plain atexit would run too late.
_register = getattr(threading, "_register_atexit", atexit.register)
_register(_shutdown_all)
