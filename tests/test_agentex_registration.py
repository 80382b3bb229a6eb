"""With the real agentex (Python 3.12): ``use_spool`` registers the spool processors through
agentex's own registry, the processors are agentex's interfaces, agentex's tracing calls return
after the commit, and a typed agent using ``use_spool`` passes ``mypy --strict`` (issue 10)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("agentex.lib.core.tracing", reason="agentex-sdk needs Python 3.12")

from agentex import Agentex, AsyncAgentex
from agentex.lib.core.tracing import shutdown_default_span_queue
from agentex.lib.core.tracing import tracing_processor_manager as manager
from agentex.lib.core.tracing.processors.tracing_processor_interface import (
    AsyncTracingProcessor,
    SyncTracingProcessor,
)
from agentex.lib.core.tracing.tracer import AsyncTracer, Tracer
from agentex.types.span import Span

from spool import EventState, Spool, SpoolConfig
from spool.agentex import (
    AsyncSpoolTracingProcessor,
    SpoolTracingConfig,
    SyncSpoolTracingProcessor,
    use_spool,
)

REGISTRY = manager.GLOBAL_TRACING_PROCESSOR_MANAGER


@pytest.fixture(autouse=True)
def clean_registry() -> Iterator[None]:
    """agentex's registry is process-wide: each test starts from and leaves it as it was."""
    saved = (
        list(REGISTRY.async_processors),
        list(REGISTRY.sync_processors),
        dict(REGISTRY.async_config_registry),
        dict(REGISTRY.sync_config_registry),
    )
    yield
    REGISTRY.async_processors[:] = saved[0]
    REGISTRY.sync_processors[:] = saved[1]
    REGISTRY.async_config_registry.clear()
    REGISTRY.async_config_registry.update(saved[2])
    REGISTRY.sync_config_registry.clear()
    REGISTRY.sync_config_registry.update(saved[3])


def spooled(path: Path) -> list[tuple[str, str]]:
    """What is committed, read through a connection of its own."""
    with Spool.open(SpoolConfig(path=path), create=False) as spool:
        return [(r.span_id, r.kind.value) for r in spool.export(list(EventState))]


def shutdown(*processors: Any) -> None:
    for processor in processors:
        result = processor.shutdown()
        if asyncio.iscoroutine(result):
            asyncio.run(result)


def test_use_spool_registers_both_processors_the_agentex_way(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"

    registered = use_spool(path)
    again = use_spool(path)

    assert again == registered
    assert isinstance(registered.async_processor, AsyncTracingProcessor)
    assert isinstance(registered.sync_processor, SyncTracingProcessor)
    assert REGISTRY.async_config_registry["spool"] is AsyncSpoolTracingProcessor
    assert REGISTRY.sync_config_registry["spool"] is SyncSpoolTracingProcessor
    assert [p for p in REGISTRY.async_processors if isinstance(p, AsyncSpoolTracingProcessor)] == [
        registered.async_processor
    ]
    assert [p for p in REGISTRY.sync_processors if isinstance(p, SyncSpoolTracingProcessor)] == [
        registered.sync_processor
    ]
    assert registered.async_processor.config.path == path
    shutdown(*registered)


def test_agentex_constructs_the_processors_from_a_config(tmp_path: Path) -> None:
    """``cls(config)``, as agentex's ``add_tracing_processor_config`` does."""
    config = SpoolTracingConfig(path=str(tmp_path / "spool.db"))
    async_processor = AsyncSpoolTracingProcessor(config)
    sync_processor = SyncSpoolTracingProcessor(config)
    by_path = AsyncSpoolTracingProcessor(tmp_path / "spool.db")

    assert async_processor.tracing_config == config
    assert sync_processor.config.path == tmp_path / "spool.db"
    assert by_path.config.path == tmp_path / "spool.db"
    shutdown(async_processor, sync_processor, by_path)


class Recording(AsyncTracingProcessor):
    """Another async processor, as agentex would call it from its queue."""

    def __init__(self, config: object = None) -> None:
        self.ended: list[str] = []

    async def on_span_start(self, span: Span) -> None:
        pass

    async def on_span_end(self, span: Span) -> None:
        self.ended.append(span.id)

    async def shutdown(self) -> None:
        pass


def test_async_tracer_returns_after_the_commit_and_others_still_queue(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    registered = use_spool(path)
    other = Recording()
    REGISTRY.async_processors.append(other)
    client = AsyncAgentex(base_url="http://127.0.0.1:9", api_key="unused")

    async def agent() -> tuple[list[tuple[str, str]], list[str], list[str], str]:
        trace = AsyncTracer(client).trace("trace-1")
        async with trace.span("step", input=[{"role": "user"}]) as span:
            assert span is not None
            after_start = await asyncio.to_thread(spooled, path)
        after_end = await asyncio.to_thread(spooled, path)
        queued_before = list(other.ended)
        await shutdown_default_span_queue(timeout=10)
        return after_start + after_end, queued_before, list(other.ended), span.id

    seen, queued_before, queued_after, span_id = asyncio.run(agent())

    assert seen == [(span_id, "start"), (span_id, "start"), (span_id, "end")]
    assert queued_before == []  # agentex's queue had not run yet when the block exited
    assert queued_after == [span_id]  # and then served the other processor as before
    shutdown(*registered)
    assert spooled(path) == [(span_id, "start"), (span_id, "end")]  # not again from the queue


def test_sync_tracer_returns_after_the_commit(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    registered = use_spool(path)
    trace = Tracer(Agentex(base_url="http://127.0.0.1:9", api_key="unused")).trace("trace-2")

    span = trace.start_span("sync step", data={"__span_type__": "CUSTOM"})
    after_start = spooled(path)
    trace.end_span(span)
    after_end = spooled(path)

    assert after_start == [(span.id, "start")]
    assert after_end == [(span.id, "start"), (span.id, "end")]
    shutdown(*registered)


TYPED_AGENT = """
from __future__ import annotations

from agentex.lib.core.tracing.processors.tracing_processor_interface import (
    AsyncTracingProcessor,
    SyncTracingProcessor,
)
from spool.agentex import SpoolTracingProcessors, use_spool


def main(path: str) -> tuple[AsyncTracingProcessor, SyncTracingProcessor]:
    processors: SpoolTracingProcessors = use_spool(path, ship=True)
    return processors.async_processor, processors.sync_processor
"""

# The same agent with a mistake: mypy must see the real types to catch it.
MISTYPED_AGENT = """
from spool.agentex import use_spool

count: int = use_spool("/tmp/spool.db")
"""


@pytest.mark.slow
def test_mypy_strict_accepts_a_typed_agent_using_use_spool(tmp_path: Path) -> None:
    (tmp_path / "agent.py").write_text(TYPED_AGENT)
    (tmp_path / "mistyped.py").write_text(MISTYPED_AGENT)
    # About 2.5 minutes here: mypy reads agentex and what it imports (the client, temporalio).
    command = [sys.executable, "-m", "mypy", "--strict", "--config-file=/dev/null"]
    done = subprocess.run(
        [*command, f"--cache-dir={tmp_path / 'cache'}", "agent.py", "mistyped.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    errors = [line for line in done.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 1, done.stdout + done.stderr
    assert errors[0].startswith("mistyped.py:4: error: Incompatible types in assignment")
