"""An OpenTelemetry-traced program whose spans are spooled, redacted, and shipped to Scale GP.

    pip install 'spool-ship[otel]'
    SGP_API_KEY=... SGP_ACCOUNT_ID=... python examples/otel_tracing.py /var/lib/agent/spool.db

``SpoolSpanProcessor`` is an OpenTelemetry SDK span processor: each span's start and end is
committed to the spool before ``start_as_current_span``/``end`` returns. Instrumentation
libraries (OpenInference, OpenTelemetry GenAI) on the same provider are spooled the same way.
``default_redactor()`` masks API keys, bearer tokens and e-mail addresses before anything is
written.
"""

from __future__ import annotations

import json
import sys

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from spool.otel import SpoolSpanProcessor
from spool.redact import default_redactor

QUESTIONS = ["what is a spool?", "why SQLite?", "mail the answer to ada@example.org"]


def answer(tracer: trace.Tracer, question: str) -> str:
    with tracer.start_as_current_span("answer-question") as turn:
        turn.set_attribute("input.value", question)  # OpenInference: the span's input
        with tracer.start_as_current_span("chat gpt-4o-mini") as llm:  # GenAI conventions
            llm.set_attribute("gen_ai.operation.name", "chat")  # type COMPLETION in Scale GP
            llm.set_attribute("gen_ai.request.model", "gpt-4o-mini")
            messages = [{"role": "user", "parts": [{"type": "text", "content": question}]}]
            llm.set_attribute("gen_ai.input.messages", json.dumps(messages))
            text = f"an answer to {question!r}"
            reply = [{"role": "assistant", "parts": [{"type": "text", "content": text}]}]
            llm.set_attribute("gen_ai.output.messages", json.dumps(reply))
        turn.set_attribute("output.value", text)
    return text


def main(path: str) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": "support-bot"}))
    # Credentials from SGP_* variables; the address is never spooled, let alone shipped.
    provider.add_span_processor(SpoolSpanProcessor(path, ship=True, redact=default_redactor()))
    trace.set_tracer_provider(provider)
    tracer = trace.get_tracer("support-bot")
    try:
        for question in QUESTIONS:
            answer(tracer, question)
    finally:
        provider.shutdown()  # ships what is spooled within 10 s; the rest stays spooled
    print(f"traced {2 * len(QUESTIONS)} spans into {path}")


if __name__ == "__main__":
    main(sys.argv[1])
