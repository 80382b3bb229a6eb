"""``redact=``: the hook runs before anything is serialized or written, on both processors and
the scale-gp-beta integration; a failing hook is a counted refusal; the built-in
:class:`spool.redact.Redactor` masks common secrets. A secret the hook removes is found in none
of the spool's files (raw bytes of the main file, -wal and -shm)."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel
from scale_gp_beta.lib.tracing import create_span, create_trace

from shipper.sgp_tracing import SpoolingTraceQueueManager
from spool import (
    EventState,
    Redactor,
    Spool,
    SpoolConfig,
    SpoolProcessor,
    SyncSpoolProcessor,
    default_redactor,
)
from spool.redact import DEFAULT_PATTERNS, Pattern, Redact

T0 = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
SECRET = "sk-proj-Zq8vT4mW2xY7bN1cR5dF9gH3jK6lP0sA"
EMAIL = "ada.lovelace@example.org"
BEARER = "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"


def span(i: int, **extra: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": f"span-{i}",
        "trace_id": "trace-1",
        "name": "llm call",
        "start_timestamp": (T0 + timedelta(seconds=i)).isoformat(),
        "end_timestamp": (T0 + timedelta(seconds=i + 1)).isoformat(),
    }
    return item | extra


def spooled(config: SpoolConfig) -> list[dict[str, Any]]:
    with Spool.open(config) as spool:
        return [json.loads(r.payload) for r in spool.export(list(EventState))]


def refused(config: SpoolConfig) -> dict[str, int]:
    with Spool.open(config) as spool:
        return dict(spool.stats().refused)


def spool_bytes(path: Path) -> dict[str, bytes]:
    """The raw bytes of the spool's main file, WAL and shared-memory file, as they lie."""
    return {
        suffix or "main": Path(f"{path}{suffix}").read_bytes()
        for suffix in ("", "-wal", "-shm")
        if Path(f"{path}{suffix}").exists()
    }


def holding(files: dict[str, bytes], secret: str) -> list[str]:
    return [name for name, data in files.items() if secret.encode() in data]


def drop_secret(params: dict[str, Any]) -> dict[str, Any]:
    """A hand-written hook: the prompt's key goes, the rest stays."""
    params["input"].pop("api_key", None)
    return params


# ---- the built-in redactor ----------------------------------------------------------------


def test_the_default_redactor_masks_keys_tokens_and_emails_recursively() -> None:
    redact = default_redactor()
    params = span(
        1,
        input={"messages": [{"role": "user", "content": f"my key is {SECRET}, mail {EMAIL}"}]},
        output={"text": f"use header {BEARER}"},
        metadata={
            "headers": {"Authorization": "Basic dXNlcjpwYXNz", "X-Api-Key": "k-123"},
            "nested": [[{"deep": f"AKIAIOSFODNN7EXAMPLE and {SECRET}"}]],
            "count": 3,
            "none": None,
        },
    )
    out = redact(params)
    text = json.dumps(out)
    for secret in (SECRET, EMAIL, "eyJhbGciOiJIUzI1NiJ9", "dXNlcjpwYXNz", "k-123", "AKIAIOSF"):
        assert secret not in text
    assert out["input"]["messages"][0]["content"] == (
        "my key is [REDACTED:api_key], mail [REDACTED:email]"
    )
    assert out["output"]["text"] == "use header [REDACTED:bearer_token]"
    assert out["metadata"]["headers"] == {"Authorization": "[REDACTED]", "X-Api-Key": "[REDACTED]"}
    assert out["metadata"]["nested"] == [[{"deep": "[REDACTED:aws_access_key] and "
                                                   "[REDACTED:api_key]"}]]  # fmt: skip
    assert out["metadata"]["count"] == 3
    assert out["metadata"]["none"] is None
    # Identity, names and times are not redacted; the input dict is not changed in place.
    assert {k: out[k] for k in ("id", "trace_id", "name", "start_timestamp")} == {
        k: params[k] for k in ("id", "trace_id", "name", "start_timestamp")
    }
    assert SECRET in params["input"]["messages"][0]["content"]


def test_a_redactor_takes_extra_patterns_keys_and_fields() -> None:
    ssn = Pattern("ssn", r"\b\d{3}-\d{2}-\d{4}\b")
    assert default_redactor(ssn)(span(1, input={"q": "ssn 123-45-6789"}))["input"] == {
        "q": "ssn [REDACTED:ssn]"
    }
    only_input = Redactor([ssn], keys={"Session-Id"}, fields=["input"])
    out = only_input(span(1, input={"session_id": "s", "q": SECRET}, output={"a": "123-45-6789"}))
    assert out["input"] == {"session_id": "[REDACTED]", "q": SECRET}  # sk- not in its patterns
    assert out["output"] == {"a": "123-45-6789"}  # not one of its fields
    grouped = Redactor([Pattern("ticket", r"TCK-(?P<number>\d+)")])
    assert grouped.text("see TCK-42") == "see [REDACTED:ticket]"
    # Hints skip the search of strings without them, and only those.
    hinted = Redactor([Pattern("ticket", r"(?i)tck-\d+", ("TCK", "tck"))])
    assert hinted.text("TCK-1 and Tck-3") == "[REDACTED:ticket] and [REDACTED:ticket]"
    assert hinted.text("only Tck-3") == "only Tck-3"  # the pattern matches; no hint, no search


def test_bad_patterns_are_refused_before_any_span() -> None:
    with pytest.raises(ValueError, match="identifier"):
        Pattern("not a name", "x")
    with pytest.raises(re.error, match=r"missing \)"):
        Redactor([Pattern("bad", "(x")])
    with pytest.raises(ValueError, match="hints"):
        Pattern("one_hint", "x", "x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="hints"):
        Pattern("empty_hint", "x", ("",))
    with pytest.raises(ValueError, match="differ"):
        Redactor([*DEFAULT_PATTERNS, Pattern("email", "x")])


# Secrets of each default kind, and text around them that does not run into them (a separator
# first: ``sk-`` glued to a word is not a key).
SECRETS = st.sampled_from(
    [
        SECRET,
        EMAIL,
        BEARER,
        "AKIAIOSFODNN7EXAMPLE",
        "ghp_" + "a1B2c3D4" * 5,
        "AIza" + "Sy0123456789abcdefghijklmnopqrstuvw",
        "xoxb-123456789012-abcdefABCDEF",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI0MiJ9.sig_part-1",
    ]
)
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=20)
SEPARATOR = st.sampled_from([" ", "\n", "\t", ": ", "=", "(", '"', "'", ",", "<"])


@st.composite
def with_secret(draw: st.DrawFn) -> tuple[str, str]:
    secret = draw(SECRETS)
    return secret, draw(TEXT) + draw(SEPARATOR) + secret + draw(SEPARATOR) + draw(TEXT)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=12,
)


@given(st.data())
def test_a_secret_anywhere_in_input_output_or_metadata_is_redacted(data: st.DataObject) -> None:
    secret, text = data.draw(with_secret())
    field = data.draw(st.sampled_from(["input", "output", "metadata"]))
    container = data.draw(st.dictionaries(TEXT, JSON, max_size=3))
    # The secret's string somewhere in the tree: at the top, or nested in lists and objects.
    holder: Any = text
    for wrap in data.draw(st.lists(st.sampled_from(["list", "dict"]), max_size=4)):
        holder = [holder] if wrap == "list" else {data.draw(TEXT): holder}
    container[data.draw(TEXT)] = holder
    params = span(1, **{field: container})
    redacted = default_redactor()(params)
    assert secret not in json.dumps(redacted, ensure_ascii=False)
    # What held no secret and is not under a secret-named key is as it was.
    assert {k: v for k, v in redacted.items() if k != field} == {
        k: v for k, v in params.items() if k != field
    }


def test_strings_without_secrets_are_left_alone() -> None:
    text = "The sk- prefix alone, a bearer of news, an @ sign, user@localhost."
    assert default_redactor().text(text) == text


# ---- the hook on the processors -----------------------------------------------------------


class ModelInput(BaseModel):
    prompt: str


def run_async(config: SpoolConfig, redact: Redact, spans: list[Any]) -> None:
    async def main() -> None:
        processor = SpoolProcessor(config=config, redact=redact)
        await processor.on_span_start(spans[0])
        await processor.on_spans_end(spans)
        await processor.shutdown()

    asyncio.run(main())


def run_sync(config: SpoolConfig, redact: Redact, spans: list[Any]) -> None:
    processor = SyncSpoolProcessor(config=config, redact=redact)
    processor.on_span_start(spans[0])
    processor.on_spans_end(spans)
    processor.shutdown()


@pytest.fixture(params=[run_async, run_sync], ids=["async", "sync"])
def run(request: pytest.FixtureRequest) -> Any:
    return request.param


def test_the_hook_sees_json_values_and_what_it_returns_is_spooled(
    run: Any, spool_config: SpoolConfig
) -> None:
    seen: list[dict[str, Any]] = []

    def hook(params: dict[str, Any]) -> dict[str, Any]:
        seen.append(params)
        return default_redactor()(params)

    agent_input = {"model": ModelInput(prompt=f"key {SECRET}"), "api_key": SECRET}
    spans = [
        span(1, input=agent_input, start_timestamp=T0),
        span(2, metadata={"when": T0, "to": EMAIL}),
    ]
    run(spool_config, hook, spans)
    # The hook saw plain JSON: the model as an object, the datetime as its string.
    assert seen[0]["input"] == {"model": {"prompt": f"key {SECRET}"}, "api_key": SECRET}
    assert seen[0]["start_timestamp"] == T0.isoformat()
    assert "end_timestamp" not in seen[0]  # a start event
    assert seen[2]["metadata"] == {"when": T0.isoformat(), "to": EMAIL}
    stored = spooled(spool_config)
    assert [p["id"] for p in stored] == ["span-1", "span-1", "span-2"]
    assert stored[1]["input"] == {
        "model": {"prompt": "key [REDACTED:api_key]"},
        "api_key": "[REDACTED]",
    }
    assert stored[2]["metadata"] == {"when": T0.isoformat(), "to": "[REDACTED:email]"}
    # The agent's own objects are untouched.
    assert agent_input["api_key"] == SECRET


def test_a_hook_changing_its_dict_in_place_does_not_touch_the_agents_span(
    run: Any, spool_config: SpoolConfig
) -> None:
    agent_span = span(1, input={"api_key": SECRET, "q": "why"})
    run(spool_config, drop_secret, [agent_span])
    assert agent_span["input"] == {"api_key": SECRET, "q": "why"}
    assert [p["input"] for p in spooled(spool_config)] == [{"q": "why"}, {"q": "why"}]


def test_a_failing_hook_is_a_counted_refusal_and_never_reaches_the_agent(
    run: Any, spool_config: SpoolConfig
) -> None:
    def hook(params: dict[str, Any]) -> Any:
        if params["id"] == "span-2":
            raise KeyError(f"cannot redact {SECRET}")
        if params["id"] == "span-3":
            return [params]  # not a dict
        if params["id"] == "span-4":
            return {"name": "no trace id"}  # a dict the endpoint would refuse
        return params

    run(spool_config, hook, [span(1), span(2), span(3), span(4), span(5)])
    assert [p["id"] for p in spooled(spool_config)] == ["span-1", "span-1", "span-5"]
    assert refused(spool_config) == {"redact_failed": 2, "missing_trace_id": 1}


def test_the_event_size_limit_applies_to_the_redacted_event(tmp_path: Path) -> None:
    config = SpoolConfig(path=tmp_path / "spool.db", max_event_bytes=2000)
    big = span(1, input={"blob": "x" * 5000})
    run_sync(config, lambda p: p | {"input": {"blob": "dropped"}}, [big])
    assert [p["input"] for p in spooled(config)] == [{"blob": "dropped"}] * 2
    run_sync(config, lambda p: p, [span(2, input={"blob": "x" * 5000})])
    assert refused(config) == {"too_large": 2}


def test_redact_must_be_callable(spool_config: SpoolConfig) -> None:
    with pytest.raises(TypeError, match="callable"):
        SyncSpoolProcessor(config=spool_config, redact="yes")  # type: ignore[arg-type]


def test_scale_gp_tracing_spans_are_redacted_before_they_are_spooled(tmp_path: Path) -> None:
    path = tmp_path / "sgp.db"
    manager = SpoolingTraceQueueManager(path, redact=default_redactor())
    try:
        with (
            create_trace("agent", queue_manager=manager, input={"q": f"mail {EMAIL}"}),
            create_span("llm", queue_manager=manager, input={"api_key": SECRET}) as llm,
        ):
            llm.output = {"text": f"token {SECRET}"}
    finally:
        manager.shutdown(timeout=10)
    stored = spooled(SpoolConfig(path=path))
    assert len(stored) == 4
    assert holding(spool_bytes(path), SECRET) == []
    assert holding(spool_bytes(path), EMAIL) == []
    llm_end = next(p for p in stored if p["name"] == "llm" and "end_timestamp" in p)
    assert llm_end["input"] == {"api_key": "[REDACTED]"}
    assert llm_end["output"] == {"text": "token [REDACTED:api_key]"}


# ---- nothing removed reaches disk ---------------------------------------------------------


@pytest.fixture
def leaky_config(tmp_path: Path) -> SpoolConfig:
    return SpoolConfig(path=tmp_path / "leaky.db")


def spool_many(config: SpoolConfig, redact: Redact | None, n: int) -> list[dict[str, bytes]]:
    """``n`` spans, each started and ended, from both processors, the secret everywhere a span
    holds data: input, output and metadata, nested. The spool's files while a processor still
    has it open (the WAL not yet checkpointed away), and after."""

    def secret_span(i: int) -> dict[str, Any]:
        return span(
            i,
            input={"api_key": SECRET, "messages": [{"content": f"here: {SECRET}"}]},
            output={"text": f"{SECRET} for {EMAIL}"},
            metadata={"headers": {"authorization": BEARER}, "echo": [SECRET]},
        )

    spans = [secret_span(i) for i in range(n)]
    sync = SyncSpoolProcessor(config=config, redact=redact)
    for item in spans[: n // 2]:
        sync.on_span_start(item)
        sync.on_span_end(item)

    async def rest() -> None:
        processor = SpoolProcessor(config=config, redact=redact)
        await processor.on_spans_start(spans[n // 2 :])
        await asyncio.gather(*(processor.on_span_end(item) for item in spans[n // 2 :]))
        await processor.shutdown()

    asyncio.run(rest())
    files_open = spool_bytes(config.path)
    sync.shutdown()
    return [files_open, spool_bytes(config.path)]


def test_a_secret_the_hook_removes_is_in_none_of_the_spools_files(
    spool_config: SpoolConfig, leaky_config: SpoolConfig
) -> None:
    # Without the hook the secret is on disk: the byte search finds what is there.
    leaky_open, _ = spool_many(leaky_config, None, 50)
    assert "-wal" in holding(leaky_open, SECRET)
    files_open, files_closed = spool_many(spool_config, default_redactor(), 600)
    assert set(files_open) == {"main", "-wal", "-shm"}
    for files in (files_open, files_closed):
        for secret in (SECRET, EMAIL, BEARER, "eyJzdWIiOiIxIn0"):
            assert holding(files, secret) == []
    assert len(spooled(spool_config)) == 1200
    # Free pages: with SQLite told to leave deleted bytes in place (some builds default to
    # secure_delete, some do not), the rows deleted and checkpointed: no redacted byte is there.
    delete_rows(spool_config.path)
    assert holding(spool_bytes(spool_config.path), SECRET) == []
    # What a deleted row leaves in free pages without the hook: why redaction runs first.
    delete_rows(leaky_config.path)
    assert holding(spool_bytes(leaky_config.path), SECRET) == ["main"]


def delete_rows(path: Path) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA secure_delete = OFF")
        conn.execute("DELETE FROM events")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        assert conn.execute("PRAGMA freelist_count").fetchone()[0] > 0
    finally:
        conn.close()


# ---- the guide's snippet ------------------------------------------------------------------


def test_the_guides_redaction_snippet_runs_as_written(tmp_path: Path) -> None:
    guide = (Path(__file__).resolve().parents[1] / "docs" / "integrating.md").read_text()
    section = guide.split("\n## Redaction\n", 1)[1]
    found = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert found is not None
    path = tmp_path / "spool.db"
    code = found.group(1).replace("/var/lib/agent/spool.db", str(path))
    namespace: dict[str, Any] = {}
    exec(compile(code, "docs/integrating.md", "exec"), namespace)

    redact_ssn = namespace["default_redactor"](namespace["ssn"])
    assert redact_ssn(span(1, input={"q": f"{EMAIL} 123-45-6789"}))["input"] == {
        "q": "[REDACTED:email] [REDACTED:ssn]"
    }
    processor: SpoolProcessor = namespace["processor"]  # the last one: the own hook

    async def main() -> None:
        await processor.on_span_end(
            span(1, input={"q": "private"}, metadata={"user_email": EMAIL, "n": 1})
        )
        await processor.shutdown()

    asyncio.run(main())
    (stored,) = spooled(SpoolConfig(path=path))
    assert "input" not in stored
    assert stored["metadata"] == {"n": 1}
