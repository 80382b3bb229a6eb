"""scale-gp-beta tracing, spooled: a ``TraceQueueManager`` that writes every span event to the
spool instead of an in-memory queue.

>>> from scale_gp_beta.lib.tracing import create_span
>>> from shipper.sgp_tracing import SpoolingTraceQueueManager, use_spool
>>> manager = SpoolingTraceQueueManager("/var/lib/agent/spool.db", ship=True)
>>> with create_span("retrieve", queue_manager=manager):
...     ...
>>> use_spool("/var/lib/agent/spool.db", ship=True)   # or: the default for every span
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from scale_gp_beta.lib.tracing import trace_queue_manager as _sdk_queue

from spool import SpoolConfig, SyncSpoolProcessor
from spool.redact import Redact

from .config import ShipperConfig

if TYPE_CHECKING:
    from scale_gp_beta.lib.tracing.span import Span
    from scale_gp_beta.lib.tracing.trace import Trace

__all__ = ["SpoolingTraceQueueManager", "use_spool"]


class SpoolingTraceQueueManager(_sdk_queue.TraceQueueManager):
    """Drop-in for the SDK's queue manager: no worker thread, no 4,000-span queue, no drops.

    Each span start and end is committed to the spool before the SDK call returns; shipping
    happens in-process with ``ship=True`` (or by a ``spool-ship run`` sidecar). ``redact=``
    rewrites each event before it is written (see :mod:`spool.redact`).
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        config: SpoolConfig | None = None,
        ship: bool | ShipperConfig = False,
        redact: Redact | None = None,
    ) -> None:
        super().__init__(client=None, worker_enabled=False)
        self.processor = SyncSpoolProcessor(path, config=config, ship=ship, redact=redact)

    def report_span_start(self, span: Span) -> None:
        self.processor.on_span_start(span)

    def report_span_end(self, span: Span) -> None:
        self.processor.on_span_end(span)

    def enqueue(self, span: Span) -> None:
        # ``span.flush(blocking=False)``: the span as it stands now, ended or not.
        if span.end_time is not None:
            self.processor.on_span_end(span)
        else:
            self.processor.on_span_start(span)

    def export_now(self, span: Span) -> None:
        # ``span.flush()``: durable on return is the strongest promise a spool makes.
        self.enqueue(span)

    def flush_queue(self) -> None:
        """Nothing to flush: every event is already committed to the spool."""

    def report_trace_start(self, trace: Trace) -> None:
        """Traces have no event of their own; their root span carries them."""

    def report_trace_end(self, trace: Trace) -> None:
        """See :meth:`report_trace_start`."""

    def shutdown(self, timeout: float | None = None) -> None:
        self.processor.shutdown(10.0 if timeout is None else timeout)


def use_spool(
    path: str | os.PathLike[str] | None = None,
    *,
    config: SpoolConfig | None = None,
    ship: bool | ShipperConfig = True,
    redact: Redact | None = None,
) -> SpoolingTraceQueueManager:
    """Make a :class:`SpoolingTraceQueueManager` the process default, so spans made with
    ``create_span``/``create_trace`` without ``queue_manager=`` are spooled too."""
    manager = SpoolingTraceQueueManager(path, config=config, ship=ship, redact=redact)
    # The SDK keeps its default in a module global and offers no setter; ``init()`` would
    # build its own in-memory manager.
    with _sdk_queue._queue_manager_lock:
        previous = _sdk_queue._global_tracing_queue_manager
        _sdk_queue._global_tracing_queue_manager = manager
    if previous is not None and previous is not manager:
        previous.shutdown(timeout=1.0)
    return manager
