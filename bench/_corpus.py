"""What the benchmarks' spans are made of, shared so that every benchmark ships alike spans."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["BASE_TIME", "NAMES", "QUESTIONS", "TYPES"]

NAMES = ("agent.turn", "llm.completion", "tool.search", "tool.fetch", "guardrail.check")
TYPES = ("AGENT_WORKFLOW", "COMPLETION", "CODE_EXECUTION", "DOCUMENT_SEARCH", "GUARDRAIL")
QUESTIONS = (
    "What is the weather in Paris today?",
    "Summarise the last three support tickets for account 4411.",
    "Find the invoice for order 99812 and check whether it was paid.",
    "Translate 'good morning' into Japanese and Korean.",
)
BASE_TIME = datetime(2025, 11, 27, 12, 0, 0, tzinfo=UTC)
