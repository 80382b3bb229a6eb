"""The generic processors fit agentex's tracing processor interface, and a list of spans is one
group commit.

agentex calls whatever sits in its processor lists by its interface's method names, with its
parameters, awaiting the async ones: a mismatch is a TypeError (or an un-awaited coroutine)
inside the agent. The interface checks run against the real agentex-sdk (Python 3.12, ``make
test``'s .venv312) and are skipped without it; the group-commit tests run everywhere on the
agentex-shaped ``Span`` of tests/agentex_standin.py, whose fields are checked against agentex's.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from agentex_standin import Span, new_span

from spool import (
    EventKind,
    EventState,
    Spool,
    SpoolConfig,
    SpoolProcessor,
    SyncSpoolProcessor,
    ops,
)
from spool._committer import acquire_committer, release_committer

# What agentex calls on a registered processor (its constructor is agentex's business).
INTERFACE_METHODS = {
    "async": ("on_span_start", "on_span_end", "on_spans_start", "on_spans_end", "shutdown"),
    "sync": ("on_span_start", "on_span_end", "shutdown"),
}


def agentex_interfaces() -> dict[str, tuple[Any, type]]:
    interface = pytest.importorskip(
        "agentex.lib.core.tracing.processors.tracing_processor_interface",
        reason="agentex-sdk needs Python 3.12",
    )
    return {
        "async": (interface.AsyncTracingProcessor, SpoolProcessor),
        "sync": (interface.SyncTracingProcessor, SyncSpoolProcessor),
    }


def compatibility_problems(ours: Callable[..., object], theirs: Callable[..., object]) -> list[str]:
    """Why ``ours`` cannot be called the way agentex calls ``theirs`` (empty: it can).

    Every parameter of theirs must be ours too, same name, same kind, same place; any extra
    parameter of ours must have a default. Async-ness must match.
    """
    problems: list[str] = []
    if inspect.iscoroutinefunction(ours) != inspect.iscoroutinefunction(theirs):
        problems.append(
            f"async mismatch: ours {inspect.iscoroutinefunction(ours)}, "
            f"agentex {inspect.iscoroutinefunction(theirs)}"
        )
    mine = list(inspect.signature(ours).parameters.values())
    wanted = list(inspect.signature(theirs).parameters.values())
    for index, param in enumerate(wanted):
        if index >= len(mine):
            problems.append(f"missing parameter {param.name!r}")
            continue
        have = mine[index]
        if (have.name, have.kind) != (param.name, param.kind):
            problems.append(
                f"parameter {index}: ours {have.name!r} ({have.kind.description}), "
                f"agentex {param.name!r} ({param.kind.description})"
            )
    for extra in mine[len(wanted) :]:
        if extra.default is inspect.Parameter.empty and extra.kind not in (
            inspect.Parameter.VAR_POSITIONAL,
            inspect.Parameter.VAR_KEYWORD,
        ):
            problems.append(f"extra parameter {extra.name!r} has no default")
    return problems


@pytest.mark.parametrize("flavour", ["async", "sync"])
def test_processors_offer_agentex_methods_with_compatible_signatures(flavour: str) -> None:
    interface, processor = agentex_interfaces()[flavour]
    problems = {
        name: compatibility_problems(getattr(processor, name), getattr(interface, name))
        for name in INTERFACE_METHODS[flavour]
        if hasattr(processor, name)
    }
    missing = [name for name in INTERFACE_METHODS[flavour] if not hasattr(processor, name)]

    assert missing == []
    assert {name: p for name, p in problems.items() if p} == {}
    abstract = {name for name in interface.__abstractmethods__ if name != "__init__"}
    assert abstract <= set(INTERFACE_METHODS[flavour])


def test_the_standin_span_has_agentex_fields() -> None:
    span_module = pytest.importorskip("agentex.types.span", reason="agentex-sdk needs Python 3.12")
    assert set(Span.model_fields) == set(span_module.Span.model_fields)


def test_the_signature_check_catches_a_mismatch() -> None:
    class Wrong:
        def on_span_start(self, item: Span) -> None: ...

        async def shutdown(self, timeout: float) -> None: ...

    assert compatibility_problems(Wrong.on_span_start, SpoolProcessor.on_span_start)
    assert compatibility_problems(Wrong.shutdown, SyncSpoolProcessor.shutdown)


def test_agentex_style_calls_work_on_both_processors(tmp_path: Path) -> None:
    """Call each processor exactly as agentex does (positional span, bare shutdown())."""
    sync = SyncSpoolProcessor(tmp_path / "sync.db")
    span = new_span("s-sync", "t-sync", data={"__span_type__": "COMPLETION"})
    sync.on_span_start(span)
    span.end_time = span.start_time + timedelta(seconds=1)
    sync.on_span_end(span)
    sync.shutdown()

    async def agent() -> None:
        processor = SpoolProcessor(tmp_path / "async.db")
        spans = [new_span(f"s{n}", "t-async", parent_id="root") for n in range(3)]
        await processor.on_span_start(spans[0])
        await processor.on_spans_start(spans[1:])
        for span in spans:
            span.end_time = span.start_time + timedelta(seconds=1)
        await processor.on_span_end(spans[0])
        await processor.on_spans_end(spans[1:])
        await processor.shutdown()

    asyncio.run(agent())

    with Spool.open(tmp_path / "sync.db") as spool:
        kinds = [(r.span_id, r.kind) for r in spool.export(list(EventState))]
    assert kinds == [("s-sync", EventKind.START), ("s-sync", EventKind.END)]
    with Spool.open(tmp_path / "async.db") as spool:
        records = list(spool.export(list(EventState)))
    assert sorted((r.span_id, r.kind.value) for r in records) == sorted(
        (f"s{n}", kind) for n in range(3) for kind in ("start", "end")
    )


class CommitCounter:
    """A committer listener: counts commits that stored events (called on the writer thread)."""

    def __init__(self) -> None:
        self.commits = 0
        self._cond = threading.Condition()

    def __call__(self) -> None:
        with self._cond:
            self.commits += 1
            self._cond.notify_all()

    def wait_for(self, commits: int, timeout: float = 10.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.commits >= commits, timeout)


SPANS = 40


def spans_of(trace: str) -> list[Span]:
    started = datetime.now(UTC)
    return [new_span(f"{trace}-{n}", trace, start_time=started) for n in range(SPANS)]


def ended(spans: list[Span]) -> list[Span]:
    for span in spans:
        span.end_time = span.start_time + timedelta(milliseconds=5)
    return spans


@pytest.mark.parametrize("flavour", ["async", "sync"])
def test_a_list_of_spans_is_one_group_commit(tmp_path: Path, flavour: str) -> None:
    config = SpoolConfig(path=tmp_path / "spool.db")
    # The processor joins this committer (one per spool per process), so the listener sees
    # every commit it makes. Holding a reference also keeps the writer alive until released.
    committer = acquire_committer(config)
    counter = CommitCounter()
    committer.add_listener(counter)
    try:
        spans = spans_of("trace-batch")
        if flavour == "async":
            processor = SpoolProcessor(config=config)

            async def agent() -> tuple[bool, bool]:
                await processor.on_spans_start(spans)
                first = await asyncio.to_thread(counter.wait_for, 1)
                await processor.on_spans_end(ended(spans))
                second = await asyncio.to_thread(counter.wait_for, 2)
                await processor.shutdown()
                return first, second

            first, second = asyncio.run(agent())
        else:
            sync = SyncSpoolProcessor(config=config)
            sync.on_spans_start(spans)
            first = counter.wait_for(1)
            sync.on_spans_end(ended(spans))
            second = counter.wait_for(2)
            sync.shutdown()
    finally:
        committer.remove_listener(counter)
        release_committer(committer, timeout=10.0)  # joins the writer: no commit is still due

    assert (first, second) == (True, True)
    assert counter.commits == 2  # one for the 40 starts, one for the 40 ends
    with Spool.open(config) as spool:
        records = list(spool.export(list(EventState)))
    assert sum(r.kind is EventKind.START for r in records) == SPANS
    assert sum(r.kind is EventKind.END for r in records) == SPANS


def test_agentex_default_fan_out_would_not_be_one_commit(tmp_path: Path) -> None:
    """The counter can tell: span by span (what agentex's default ``on_spans_start`` does
    for a processor that does not override it) is one commit per span here."""
    config = SpoolConfig(path=tmp_path / "spool.db")
    committer = acquire_committer(config)
    counter = CommitCounter()
    committer.add_listener(counter)
    try:
        sync = SyncSpoolProcessor(config=config)
        for span in spans_of("trace-one-by-one")[:5]:
            sync.on_span_start(span)
        reached = counter.wait_for(5)
        sync.shutdown()
    finally:
        committer.remove_listener(counter)
        release_committer(committer, timeout=10.0)
    assert reached
    assert counter.commits == 5


def test_import_spool_does_not_import_agentex() -> None:
    """``spool.agentex`` imports agentex; ``import spool`` must not (agentex is optional)."""
    import subprocess
    import sys

    code = "import sys, spool, spool.processor; print('agentex' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_the_agentex_processors_pass_redact_to_the_spool(tmp_path: Path) -> None:
    """``redact=`` reaches the spool through both agentex processors (and ``use_spool``)."""
    from spool.agentex import AsyncSpoolTracingProcessor, SyncSpoolTracingProcessor

    secret = "sk-" + "q7Zx" * 8
    path = tmp_path / "spool.db"

    def drop_input(params: dict[str, Any]) -> dict[str, Any]:
        return {**params, "input": {"redacted": True}}

    span = new_span("s-1", "t-1", input={"prompt": secret})
    span.end_time = span.start_time + timedelta(seconds=1)
    async_processor = AsyncSpoolTracingProcessor(str(path), redact=drop_input)
    sync_processor = SyncSpoolTracingProcessor(str(path), redact=drop_input)

    async def trace() -> None:
        await async_processor.on_span_start(span)
        await async_processor.on_span_end(span)
        await async_processor.shutdown()

    asyncio.run(trace())
    sync_processor.on_span_end(span)
    sync_processor.shutdown()
    with Spool.open(SpoolConfig(path=path)) as spool:
        payloads = [e.payload for e in spool.run(ops.export_page(list(EventState), 0, 100))]
    assert len(payloads) == 3
    assert all(b'"redacted":true' in p and secret.encode() not in p for p in payloads)
