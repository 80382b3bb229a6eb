"""Child process for tests/test_agentex_parity.py: one agentex agent traced by agentex's own
``SGPAsyncTracingProcessor`` (to SGP_BASE_URL) and by spool-ship (``use_spool(PATH)``) at once.

    python parity_agent.py PATH SGP_BASE_URL API_KEY ACCOUNT_ID

The corpus: nested spans, list inputs/outputs/data, errors (an exception in the block, and
agentex's ``set_span_error`` with a category), a span type agentex does not know, naive,
aware and offset timestamps, datetimes inside data, unicode (U+2028 included). Prints the
trace id.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from datetime import UTC, datetime, timedelta, timezone

from agentex.lib import adk
from agentex.lib.core.tracing import shutdown_default_span_queue
from agentex.lib.core.tracing.span_error import set_span_error
from agentex.lib.core.tracing.tracing_processor_manager import add_tracing_processor_config
from agentex.lib.types.tracing import SGPTracingProcessorConfig

from spool.agentex import use_spool

UNICODE = 'é 😀 line\u2028separator \u2029 "quoted" \\ tab\t'


async def corpus(trace: str) -> None:
    tracing = adk.tracing
    async with tracing.span(
        trace_id=trace,
        name=f"turn {UNICODE}",
        input=[{"role": "user", "content": UNICODE}],
        data={"__span_type__": "AGENT_WORKFLOW", "when": datetime(2026, 1, 2, 3, 4, 5)},  # noqa: DTZ001
        task_id=trace,
    ) as root:
        assert root is not None
        async with tracing.span(
            trace_id=trace,
            parent_id=root.id,
            name="llm",
            input={"prompt": UNICODE, "n": 1, "nested": {"list": [1, 2.5, None, True]}},
            data={"__span_type__": "COMPLETION"},
        ) as llm:
            assert llm is not None
            llm.output = [{"role": "assistant", "content": "ok"}]
            assert isinstance(llm.data, dict)
            llm.data["at"] = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
        async with tracing.span(
            trace_id=trace, parent_id=root.id, name="own type", data={"__span_type__": "MY_TYPE"}
        ):
            pass
        async with tracing.span(
            trace_id=trace, parent_id=root.id, name="list data", data=[{"k": 1}, {"k": 2}]
        ) as listed:
            assert listed is not None
            listed.output = {"fine": True}
        async with tracing.span(trace_id=trace, parent_id=root.id, name="bare"):
            pass
        try:
            async with tracing.span(trace_id=trace, parent_id=root.id, name="raises"):
                raise ValueError("boom \u2028")
        except ValueError:
            pass
        span = await tracing.start_span(trace_id=trace, parent_id=root.id, name="platform")
        assert span is not None
        set_span_error(span, RuntimeError("down"), error_category="platform")
        await tracing.end_span(trace_id=trace, span=span)
        # Times the agent sets itself: naive, and another offset (same UTC day as the start).
        now = datetime.now(UTC)
        span = await tracing.start_span(trace_id=trace, parent_id=root.id, name="naive")
        assert span is not None
        span.end_time = now.replace(tzinfo=None) + timedelta(seconds=1)
        await tracing.end_span(trace_id=trace, span=span)
        span = await tracing.start_span(trace_id=trace, parent_id=root.id, name="offset")
        assert span is not None
        span.end_time = (now + timedelta(seconds=2)).astimezone(
            timezone(timedelta(hours=5, minutes=30))
        )
        await tracing.end_span(trace_id=trace, span=span)
        root.output = {"answer": UNICODE}


async def main(path: str, base_url: str, api_key: str, account_id: str) -> None:
    add_tracing_processor_config(
        SGPTracingProcessorConfig(
            sgp_api_key=api_key, sgp_account_id=account_id, sgp_base_url=base_url
        )
    )
    processors = use_spool(path)
    trace = str(uuid.uuid4())
    await corpus(trace)
    await shutdown_default_span_queue(timeout=30)  # agentex's queue: the SGP processor's sends
    await processors.async_processor.shutdown()
    print(trace)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
