"""The tracing processors an agent calls: they spool each span event and return once it is
committed. No network on this path.

>>> processor = SpoolProcessor("/var/lib/agent/spool.db")
>>> await processor.on_span_start(span)      # committed to the spool when this returns
>>> await processor.on_span_end(span)
>>> await processor.shutdown()

Both processors share one implementation (:class:`_SpoolWriter`); only the wait differs:
the async one waits on its event loop, the sync one blocks its thread.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import orjson

from ._committer import GroupCommitter, Row, acquire_committer, release_committer
from ._mapping import NotASpan, Refused, encode_span
from ._model import Counter, EventKind
from ._ratelog import RateLimitedLog
from ._registry import REGISTRY
from ._shipping import ShippingHandle, start_shipping
from .config import SpoolConfig
from .redact import Redact

__all__ = ["SpoolProcessor", "SyncSpoolProcessor"]

log = logging.getLogger("spool")

# ``kind.value`` is a Python-level property on enums: look it up once.
_KIND_VALUES = {kind: kind.value for kind in EventKind}

_Encode = Callable[[object, EventKind, int], tuple[str, str, bytes]]


def _redacting(redact: Redact) -> _Encode:
    """``encode_span`` with the ``redact=`` hook between mapping and the final encoding.

    The hook gets the event as plain JSON values (what would be spooled: a secret inside a
    model object is a string it can see), its own copy; its result is checked and encoded as
    any dict span is. Nothing reaches SQLite before the hook has run.
    """

    def encode(span: object, kind: EventKind, max_bytes: int) -> tuple[str, str, bytes]:
        _, _, unredacted = encode_span(span, kind, sys.maxsize)  # the limit applies after
        params = orjson.loads(unredacted)
        try:
            redacted = redact(params)
        except Exception as exc:
            # The message may quote the very data being redacted: name the type only.
            raise Refused("redact_failed", f"the redact hook raised {type(exc).__name__}") from None
        if not isinstance(redacted, dict):
            raise Refused(
                "redact_failed",
                f"the redact hook returned {type(redacted).__name__}, not a dict",
            )
        return encode_span(redacted, kind, max_bytes)

    return encode


class _SpoolWriter:
    """What both processors do: map and check spans, hand rows to the group committer, count
    what could not be spooled. Never raises for tracing trouble."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        config: SpoolConfig | None,
        ship: object,
        redact: Redact | None = None,
    ) -> None:
        if redact is not None and not callable(redact):
            raise TypeError(f"redact= takes a callable, not {type(redact).__name__}")
        # Without a hook the append path is exactly what it was: encode_span itself.
        self._encode: _Encode = encode_span if redact is None else _redacting(redact)
        if config is None:
            config = SpoolConfig.from_env(path)
        elif path is not None:
            config = config.with_path(path)
        self.config = config
        self._committer: GroupCommitter | None = None
        self._ship = ship
        self._shipping: ShippingHandle | None = None
        self._lock = threading.Lock()
        # The registry's epoch when the committer (and shipping) were acquired: another one
        # means this is a forked child, where the parent's writer and shipper threads do
        # not exist.
        self._epoch = REGISTRY.epoch
        self._ratelog = RateLimitedLog(log)
        # Counted at shutdown: drops the spool could not record (it could not be written).
        self._unrecorded: dict[str, int] = {}

    @property
    def started(self) -> GroupCommitter | None:
        """The committer once the first append has started it (None again after a fork)."""
        if self._epoch != REGISTRY.epoch:
            self._forget_parent()
        return self._committer

    @property
    def committer(self) -> GroupCommitter:
        committer = self.started
        if committer is None:
            with self._lock:
                if self._committer is None:
                    self._committer = acquire_committer(self.config)
                    if self._ship is not False and self._shipping is None:
                        self._shipping = self._start_shipping()
                committer = self._committer
        return committer

    def _forget_parent(self) -> None:
        """In a forked child: drop the parent's writer and shipper without stopping them
        (the registry keeps them); the next append starts this process's own."""
        # The parent's lock may have been held by a thread that does not exist here.
        self._lock = threading.Lock()
        self._committer = None
        self._shipping = None
        self._epoch = REGISTRY.epoch

    def rows(self, spans: Iterable[object], kind: EventKind) -> list[Row]:
        """Snapshot each span as its exact JSON; refused spans are counted, not returned."""
        rows: list[Row] = []
        now = time.time()
        value = _KIND_VALUES[kind]
        max_bytes = self.config.max_event_bytes
        encode = self._encode
        for span in spans:
            if span is None:
                raise TypeError("expected a span, got None")
            try:
                span_id, trace_id, payload = encode(span, kind, max_bytes)
            except Refused as refused:
                counter = Counter.refused(refused.reason)
                self.count(counter, f"spool: refused a span event: {refused}")
                continue
            except NotASpan:
                raise
            except Exception as exc:
                # Whatever else a span's own code raises (properties, __repr__, model_dump)
                # is tracing trouble, not the agent's: count it and carry on.
                message = f"spool: cannot serialize a span: {exc!r}"
                self.count(Counter.REFUSED_UNSERIALIZABLE, message)
                continue
            rows.append((span_id, trace_id, value, payload, now))
        return rows

    def count(self, counter: Counter, message: str, n: int = 1) -> None:
        self._ratelog.warning(counter, message)
        try:
            self.committer.count(counter, n)
        except Exception:
            log.debug("spool: could not count %s", counter, exc_info=True)

    def dropped(self, rows: list[Row], exc: BaseException) -> None:
        message = f"spool: dropped span event(s): {exc}"
        self.count(Counter.DROPPED_SPOOL_ERROR, message, len(rows))

    def _start_shipping(self) -> ShippingHandle | None:
        try:
            return start_shipping(self.config, None if self._ship is True else self._ship)
        except Exception as exc:
            # Shipping is a convenience: events stay spooled for `spool-ship run` or `drain`.
            log.error("spool: cannot ship in-process, events stay in the spool: %s", exc)
            return None

    def close(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        if self._epoch != REGISTRY.epoch:
            self._forget_parent()  # the parent's writer and shipper are not ours to stop
        with self._lock:
            committer, self._committer = self._committer, None
            shipping, self._shipping = self._shipping, None
        # Only the last user's release makes the writer's last try; until then another
        # processor of this spool may still write the counts.
        if committer is not None and release_committer(committer, timeout):
            self._report_unrecorded(committer.local_counts())
        if shipping is not None:
            shipping.release(max(0.0, deadline - time.monotonic()))

    def _report_unrecorded(self, counts: dict[str, int]) -> None:
        """Say, with the exact count, what the spool does not record: the rate-limited log
        lines did not name every drop."""
        self._unrecorded = counts
        if counts:
            total = sum(counts.values())
            detail = ", ".join(f"{name}={n}" for name, n in sorted(counts.items()))
            log.error(
                "spool: %d span event(s) were not spooled and %s could not record it (%s)",
                total,
                self.config.path,
                detail,
            )

    def unrecorded(self) -> dict[str, int]:
        """What shutdown left uncounted in the spool (it could not be written)."""
        return dict(self._unrecorded)


class SpoolProcessor:
    """An asyncio tracing processor (agentex ``AsyncTracingProcessor`` shape).

    ``await on_span_start(span)`` returns once the event is committed to the spool. The wait
    happens off the event loop, so the agent's other tasks keep running. ``redact=`` (see
    :mod:`spool.redact`) rewrites each event before it is serialized and written.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        config: SpoolConfig | None = None,
        ship: object = False,
        redact: Redact | None = None,
    ) -> None:
        self._writer = _SpoolWriter(path, config, ship, redact)

    @property
    def config(self) -> SpoolConfig:
        return self._writer.config

    async def on_span_start(self, span: Any) -> None:
        waiter = self._submit((span,), EventKind.START)
        if waiter is not None:
            await waiter

    async def on_span_end(self, span: Any) -> None:
        waiter = self._submit((span,), EventKind.END)
        if waiter is not None:
            await waiter

    async def on_spans_start(self, spans: Iterable[Any]) -> None:
        """Spool many starts in one group commit."""
        waiter = self._submit(spans, EventKind.START)
        if waiter is not None:
            await waiter

    async def on_spans_end(self, spans: Iterable[Any]) -> None:
        waiter = self._submit(spans, EventKind.END)
        if waiter is not None:
            await waiter

    def _submit(self, spans: Iterable[Any], kind: EventKind) -> Awaitable[object] | None:
        """Queue the events of ``spans``; what to await until they are committed (None:
        nothing to wait for). A plain function: a coroutine here would cost each call a frame."""
        rows = self._writer.rows(spans, kind)
        if not rows:
            return None
        committer = self._writer.started
        if committer is None:
            return self._first_append(rows)
        try:
            return committer.submit(rows)
        except Exception as exc:
            self._writer.dropped(rows, exc)
            return None

    async def _first_append(self, rows: list[Row]) -> None:
        try:
            # The first call opens the spool (and may start the shipper): off the loop.
            committer = await asyncio.to_thread(lambda: self._writer.committer)
            await committer.submit(rows)
        except Exception as exc:
            self._writer.dropped(rows, exc)

    async def shutdown(self, timeout: float = 10.0) -> None:
        """Commit what is queued and stop this processor's use of the spool (harmless twice)."""
        await asyncio.to_thread(self._writer.close, timeout)

    def unrecorded(self) -> dict[str, int]:
        """After :meth:`shutdown`: events not spooled whose count the spool could not record
        either (it stayed unwritable), by counter name (``dropped:spool_locked``). Also
        logged at shutdown with the exact count. Empty when the spool holds every count."""
        return self._writer.unrecorded()


class SyncSpoolProcessor:
    """A threaded tracing processor (agentex ``SyncTracingProcessor`` shape).

    ``on_span_start(span)`` returns once the event is committed to the spool. ``redact=`` as
    for :class:`SpoolProcessor`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        config: SpoolConfig | None = None,
        ship: object = False,
        redact: Redact | None = None,
    ) -> None:
        self._writer = _SpoolWriter(path, config, ship, redact)

    @property
    def config(self) -> SpoolConfig:
        return self._writer.config

    def on_span_start(self, span: Any) -> None:
        self._append((span,), EventKind.START)

    def on_span_end(self, span: Any) -> None:
        self._append((span,), EventKind.END)

    def on_spans_start(self, spans: Iterable[Any]) -> None:
        self._append(spans, EventKind.START)

    def on_spans_end(self, spans: Iterable[Any]) -> None:
        self._append(spans, EventKind.END)

    def _append(self, spans: Iterable[Any], kind: EventKind) -> None:
        rows = self._writer.rows(spans, kind)
        if not rows:
            return
        try:
            self._writer.committer.append(rows)
        except Exception as exc:
            self._writer.dropped(rows, exc)

    def shutdown(self, timeout: float = 10.0) -> None:
        self._writer.close(timeout)

    def unrecorded(self) -> dict[str, int]:
        """As :meth:`SpoolProcessor.unrecorded`."""
        return self._writer.unrecorded()
