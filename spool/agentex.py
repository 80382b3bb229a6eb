"""agentex tracing, spooled: every span event committed when the agent's tracing call returns.

>>> from spool.agentex import use_spool
>>> use_spool("/var/lib/agent/spool.db", ship=True)   # once, at startup
>>> async with adk.tracing.span(trace_id=task.id, name="turn") as span:
...     span.output = {"reply": reply}
>>> # the span's end is in the spool here, not in agentex's in-memory queue

:func:`use_spool` registers :class:`AsyncSpoolTracingProcessor` and
:class:`SyncSpoolTracingProcessor` with agentex's processor registry, the way agentex
registers its own (``add_tracing_processor_config``). What reaches Scale GP is what agentex's
``SGPAsyncTracingProcessor`` would send for the same ``Span`` (``spool._mapping`` maps the
span; the metadata agentex's processor adds from its environment is added here).

agentex is imported here, not by ``import spool``: this module needs agentex only for its
base classes and registry, and works without it (the processors are then plain classes).
"""

from __future__ import annotations

import copy
import functools
import logging
import os
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Generic, Literal, NamedTuple, TypeVar, cast

from .config import SpoolConfig
from .processor import SpoolProcessor, SyncSpoolProcessor
from .redact import Redact

__all__ = [
    "PROCESSOR_TYPE",
    "AsyncSpoolTracingProcessor",
    "SpoolTracingConfig",
    "SpoolTracingProcessors",
    "SyncSpoolTracingProcessor",
    "use_spool",
]

log = logging.getLogger("spool")

PROCESSOR_TYPE: Final = "spool"
"""The key of the spool processors in agentex's ``sync/async_config_registry``."""

# The environment variables agentex's SGP processor stamps into every span's metadata
# (agentex.lib.core.tracing.processors.sgp_tracing_processor._add_source_to_span), with the
# defaults of agentex's EnvironmentVariables.
_SOURCE_KEYS = (
    ("ACP_TYPE", "__acp_type__", "async"),
    ("AGENT_NAME", "__agent_name__", None),
    ("AGENT_ID", "__agent_id__", None),
    ("AGENT_VERSION", "__agent_version__", None),
)

if TYPE_CHECKING:
    from agentex.lib.core.tracing.processors.tracing_processor_interface import (
        AsyncTracingProcessor as _AsyncInterface,
    )
    from agentex.lib.core.tracing.processors.tracing_processor_interface import (
        SyncTracingProcessor as _SyncInterface,
    )
else:

    def _interfaces() -> tuple[type, type]:
        try:
            from agentex.lib.core.tracing.processors.tracing_processor_interface import (
                AsyncTracingProcessor,
                SyncTracingProcessor,
            )
        except ImportError:  # agentex is optional: plain classes with the same methods
            return object, object
        return AsyncTracingProcessor, SyncTracingProcessor

    _AsyncInterface, _SyncInterface = _interfaces()


@dataclass(frozen=True, slots=True)
class SpoolTracingConfig:
    """What agentex's registry hands the spool processors (``cls(config)``, as agentex
    constructs its own from ``SGPTracingProcessorConfig``).

    ``path``, ``config`` and ``redact`` as for :class:`spool.SpoolProcessor`; ``ship`` as
    there (``True``: ship in-process with the ``SGP_*`` credentials; a ``ShipperConfig``;
    ``False``).
    """

    path: str | None = None
    ship: object = False
    config: SpoolConfig | None = None
    redact: Redact | None = None
    type: Literal["spool"] = PROCESSOR_TYPE


ProcessorSource = SpoolTracingConfig | SpoolConfig | str | os.PathLike[str] | None
_Spool = TypeVar("_Spool", SpoolProcessor, SyncSpoolProcessor)


def _tracing_config(
    source: ProcessorSource, ship: object, redact: Redact | None
) -> SpoolTracingConfig:
    if isinstance(source, SpoolTracingConfig):
        return source
    if isinstance(source, SpoolConfig):
        return SpoolTracingConfig(config=source, ship=ship, redact=redact)
    path = None if source is None else os.fspath(source)
    return SpoolTracingConfig(path=path, ship=ship, redact=redact)


def _source_metadata() -> dict[str, Any]:
    """The metadata agentex's SGP processor adds to every span with dict-shaped ``data``:
    ``__source__`` and, when set, ``__acp_type__``, ``__agent_name__``, ``__agent_id__``,
    ``__agent_version__`` from the same environment variables (read through agentex's own
    ``EnvironmentVariables`` when it is installed and configured, so ``.env`` files count)."""
    values: Mapping[str, object]
    try:
        from agentex.lib.environment_variables import EnvironmentVariables

        env = EnvironmentVariables.refresh()
        values = {name: getattr(env, name) for name, _, _ in _SOURCE_KEYS}
    except Exception:  # agentex missing, or its required AGENT_NAME/ACP_URL unset
        values = {name: os.environ.get(name, default) for name, _, default in _SOURCE_KEYS}
    metadata: dict[str, Any] = {"__source__": "agentex"}
    for name, key, _ in _SOURCE_KEYS:
        if values[name] is not None:
            metadata[key] = values[name]
    return metadata


def _commit_sha_reader() -> Callable[[], str | None]:
    """agentex's opt-in ``__commit_sha__`` (``AGENT_COMMIT_SHA``), read per span as agentex does."""
    try:
        from agentex.lib.core.tracing import code_revision
    except ImportError:
        return lambda: None
    reader: Callable[[], str | None] = code_revision.commit_sha
    return reader


class _EnrichedSpan:
    """An agentex ``Span`` with the metadata agentex's SGP processor adds: what ``spool._mapping``
    maps, without changing the agent's span (it is serialized before the call returns)."""

    __slots__ = (
        "data",
        "end_time",
        "id",
        "input",
        "name",
        "output",
        "parent_id",
        "start_time",
        "trace_id",
    )

    def __init__(self, span: Any, extra: dict[str, Any]) -> None:
        self.id = getattr(span, "id", None)
        self.name = getattr(span, "name", None)
        self.trace_id = span.trace_id
        self.parent_id = span.parent_id
        self.start_time = span.start_time
        self.end_time = getattr(span, "end_time", None)
        self.input = getattr(span, "input", None)
        self.output = getattr(span, "output", None)
        data = span.data
        if data is None:
            data = extra
        elif type(data) is dict or isinstance(data, Mapping):
            data = {**data, **extra}
        self.data = data  # a list stays as it is: agentex adds nothing to it


class _AgentexSpans:
    """What both agentex processors add to the spool processors: agentex's metadata."""

    def __init__(self) -> None:
        self._source = _source_metadata()
        self._commit_sha = _commit_sha_reader()

    def enrich(self, spans: Iterable[Any]) -> list[Any]:
        extra = self._source
        sha = self._commit_sha()
        if sha is not None:
            extra = {**extra, "__commit_sha__": sha}
        return [_enriched(span, extra) for span in spans]


def _enriched(span: Any, extra: dict[str, Any]) -> Any:
    """``span`` with agentex's metadata when it is an agentex-style span; else as it is."""
    if (
        span is None
        or isinstance(span, Mapping)
        or hasattr(type(span), "to_request_params")
        or not hasattr(span, "start_time")
    ):
        return span  # a dict, a scale-gp-beta span or not a span: the spool's mapping judges it
    try:
        return _EnrichedSpan(span, extra)
    except Exception:  # the span's own code raised: the spool counts it, the agent never sees it
        return span


class _AgentexProcessor(Generic[_Spool]):
    """What both agentex processors are: a spool processor (the I/O edge, async or sync) fed
    spans with agentex's metadata. Built from a path, a ``SpoolConfig`` or, as agentex builds
    its processors, from a config (``cls(config)``)."""

    _spool_processor: type[_Spool]

    def __init__(
        self, config: ProcessorSource = None, *, ship: object = False, redact: Redact | None = None
    ) -> None:
        self.tracing_config = _tracing_config(config, ship, redact)
        self._spans = _AgentexSpans()
        self._processor: _Spool = self._spool_processor(
            self.tracing_config.path,
            config=self.tracing_config.config,
            ship=self.tracing_config.ship,
            redact=self.tracing_config.redact,
        )

    @property
    def config(self) -> SpoolConfig:
        return self._processor.config


class AsyncSpoolTracingProcessor(_AgentexProcessor[SpoolProcessor], _AsyncInterface):
    """agentex's ``AsyncTracingProcessor``, spooling: ``await on_span_end(span)`` returns once
    the event is committed, waiting off the event loop.

    >>> AsyncSpoolTracingProcessor("/var/lib/agent/spool.db", ship=True)
    >>> AsyncSpoolTracingProcessor(SpoolTracingConfig(path="/var/lib/agent/spool.db"))
    """

    _spool_processor = SpoolProcessor

    async def on_span_start(self, span: Any) -> None:
        await self._processor.on_spans_start(self._spans.enrich((span,)))

    async def on_span_end(self, span: Any) -> None:
        await self._processor.on_spans_end(self._spans.enrich((span,)))

    async def on_spans_start(self, spans: list[Any]) -> None:
        """Spool every start in one group commit."""
        await self._processor.on_spans_start(self._spans.enrich(spans))

    async def on_spans_end(self, spans: list[Any]) -> None:
        await self._processor.on_spans_end(self._spans.enrich(spans))

    async def shutdown(self, timeout: float = 10.0) -> None:
        await self._processor.shutdown(timeout)


class SyncSpoolTracingProcessor(_AgentexProcessor[SyncSpoolProcessor], _SyncInterface):
    """agentex's ``SyncTracingProcessor``, spooling: ``on_span_end(span)`` returns once the
    event is committed (agentex's sync ``Trace`` calls it from the agent's own call)."""

    _spool_processor = SyncSpoolProcessor

    def on_span_start(self, span: Any) -> None:
        self._processor.on_spans_start(self._spans.enrich((span,)))

    def on_span_end(self, span: Any) -> None:
        self._processor.on_spans_end(self._spans.enrich((span,)))

    def shutdown(self, timeout: float = 10.0) -> None:
        self._processor.shutdown(timeout)


class SpoolTracingProcessors(NamedTuple):
    """The two processors :func:`use_spool` registered (one of each, per spool)."""

    async_processor: AsyncSpoolTracingProcessor
    sync_processor: SyncSpoolTracingProcessor


_LOCK = threading.Lock()


def use_spool(
    path: str | os.PathLike[str] | None = None,
    *,
    ship: object = False,
    config: SpoolConfig | None = None,
    redact: Redact | None = None,
) -> SpoolTracingProcessors:
    """Spool all of agentex's tracing, durable at the agent's own call.

    Registers the spool processors with agentex (``add_tracing_processor_config``, sync and
    async) and makes ``AsyncTrace.start_span``/``end_span`` (what ``adk.tracing.span`` and
    ``AsyncTracer`` call) commit to the spool before they return, instead of leaving the event
    in agentex's in-memory queue. agentex's other processors are served as before. Calling it
    again with the same arguments returns the processors already registered.

    >>> use_spool("/var/lib/agent/spool.db", ship=True)  # credentials from SGP_* variables
    """
    try:
        from agentex.lib.core.tracing import tracing_processor_manager as manager
    except ImportError as exc:
        raise ImportError(
            "spool.agentex.use_spool needs agentex: pip install 'spool-ship[agentex]'"
        ) from exc
    wanted = SpoolTracingConfig(
        path=None if path is None else os.fspath(path), ship=ship, config=config, redact=redact
    )
    registry = manager.GLOBAL_TRACING_PROCESSOR_MANAGER
    with _LOCK:
        registered = _registered(registry.async_processors, registry.sync_processors, wanted)
        if registered is None:
            registry.sync_config_registry[PROCESSOR_TYPE] = SyncSpoolTracingProcessor
            registry.async_config_registry[PROCESSOR_TYPE] = AsyncSpoolTracingProcessor
            # agentex's own way: the registry builds one processor of each kind from the config.
            # (Its config type is a closed union of its own; the registry reads ``.type``.)
            manager.add_tracing_processor_config(cast(Any, wanted))
            registered = _registered(registry.async_processors, registry.sync_processors, wanted)
            assert registered is not None, "agentex did not register the spool processors"
        _install_durable_calls()
    return registered


def _registered(
    async_processors: Iterable[object], sync_processors: Iterable[object], wanted: object
) -> SpoolTracingProcessors | None:
    found_async = [
        p
        for p in async_processors
        if isinstance(p, AsyncSpoolTracingProcessor) and p.tracing_config == wanted
    ]
    found_sync = [
        p
        for p in sync_processors
        if isinstance(p, SyncSpoolTracingProcessor) and p.tracing_config == wanted
    ]
    if found_async and found_sync:
        return SpoolTracingProcessors(found_async[0], found_sync[0])
    return None


# ---- durable at the agent's call -------------------------------------------------------------
# agentex's AsyncTrace.start_span/end_span (agentex-sdk 0.28) hand each event to its
# AsyncSpanQueue with a synchronous ``enqueue`` and return; the queue calls the async
# processors later, from a task that lingers 250 ms to fill a batch. agentex offers no
# awaited hook on the agent's path, so a processor alone is not durable at the call: measured
# with agentex-sdk 0.28.4, a child agent SIGKILLed right after its last ``async with
# adk.tracing.span(...)`` exits had 0 of 20 events spooled, 20 of 20 a second later
# (tests/test_agentex_durable.py holds both: agentex's queue alone, and with use_spool). So
# use_spool wraps those two public methods: the spool processors are taken out of the list the
# queue gets and awaited after agentex's own work, on the agent's call. The wait for the commit
# happens off the event loop (SpoolProcessor). tests/test_agentex_durable.py also checks the
# methods' names, signatures and the ``processors`` attribute this relies on; pyproject.toml
# bounds agentex-sdk below 0.29.

_WRAPPED = "__spool_ship_durable__"


def _install_durable_calls() -> None:
    from agentex.lib.core.tracing.trace import AsyncTrace

    for name, hook in (("start_span", "on_span_start"), ("end_span", "on_span_end")):
        method = getattr(AsyncTrace, name)
        if not getattr(method, _WRAPPED, False):
            setattr(AsyncTrace, name, _durable(method, hook))


def _durable(method: Callable[..., Awaitable[Any]], hook: str) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(method)
    async def durable(trace: Any, *args: Any, **kwargs: Any) -> Any:
        processors = trace.processors
        spooling = [p for p in processors if isinstance(p, AsyncSpoolTracingProcessor)]
        if not spooling:
            return await method(trace, *args, **kwargs)
        # A shallow copy whose queue gets agentex's other processors: the trace object may be
        # shared by concurrent tasks, so it is not changed.
        others = copy.copy(trace)
        others.processors = [p for p in processors if p not in spooling]
        span = await method(others, *args, **kwargs)
        for processor in spooling:
            try:
                await getattr(processor, hook)(span)
            except Exception:  # never into the agent; SpoolProcessor counts its own trouble
                log.exception("spool: %s failed for span %r", hook, getattr(span, "id", None))
        return span

    setattr(durable, _WRAPPED, True)
    return durable
