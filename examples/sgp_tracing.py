"""scale-gp-beta tracing code, unchanged, spooled instead of queued in memory.

    SGP_API_KEY=... SGP_ACCOUNT_ID=... python examples/sgp_tracing.py /var/lib/agent/spool.db

``use_spool()`` makes a ``SpoolingTraceQueueManager`` the SDK's default, so every
``create_trace``/``create_span`` without ``queue_manager=`` is spooled. To spool only some
traces, pass ``queue_manager=SpoolingTraceQueueManager(path, ship=True)`` to them instead.
"""

from __future__ import annotations

import sys

from scale_gp_beta.lib.tracing import create_span, create_trace

from shipper.sgp_tracing import use_spool

QUESTIONS = ["what is a spool?", "why SQLite?", "what happens offline?"]


def answer(question: str) -> str:
    with create_trace("answer-question", input={"question": question}) as trace:
        with create_span("retrieve", span_type="KB_RETRIEVAL", input={"q": question}) as span:
            span.output = {"documents": 2}
        with create_span("generate", span_type="COMPLETION") as span:
            text = f"an answer to {question!r}"
            span.output = {"text": text}
        trace.output = {"answer": text}
    return text


def main(path: str) -> None:
    manager = use_spool(path, ship=True)  # credentials from SGP_* variables
    try:
        for question in QUESTIONS:
            answer(question)
    finally:
        manager.shutdown(timeout=10)
    print(f"traced {3 * len(QUESTIONS)} spans into {path}")


if __name__ == "__main__":
    main(sys.argv[1])
