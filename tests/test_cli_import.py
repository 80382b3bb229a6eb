"""``spool-ship import``: exported events come back into a spool (issue 13's decommission
procedure: drain, export the leftovers, import them elsewhere), idempotent, byte for byte."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import span_events
from test_cli_inspect import cli

from cli.importer import BadLine, parse_line, raw_member
from spool import EventKind, EventState, NewEvent, Spool, SpoolConfig, ops

# Payloads a re-encoding would change: non-ASCII text, escapes, float spellings, key order.
ODD_PAYLOADS = [
    '{"name":"caf\u00e9 \u2603","id":"u1","trace_id":"t","x":1e16}',
    '{"id":"u2","trace_id":"t","name":"tab\\tand \\"quote\\" and \\u001b","n":1.10}',
    '{"z":1,"a":{"nested":[1,2,{"k":null}]},"id":"u3","trace_id":"t","name":"\\u00e9"}',
]


def build(path: Path) -> dict[str, bytes]:
    """Pending, leased, dead and done events; the span id -> payload of those to come back."""
    with Spool.open(path) as spool:
        spool.append(
            [
                NewEvent(f"u{i}", "t", EventKind.END, body.encode())
                for i, body in enumerate(ODD_PAYLOADS, 1)
            ]
        )
        spool.append(span_events(["done", "leased", "dead"], EventKind.END))
        claimed = spool.run(ops.claim("old-shipper", 100, 60, 0.0))
        by_id = {e.span_id: e.seq for e in claimed}
        spool.run(ops.ack([by_id["done"]], 1.0))
        spool.run(ops.dead_letter({by_id["dead"]: "HTTP 422: bad"}, 1.0))
        spool.run(ops.release([s for k, s in by_id.items() if k.startswith("u")], "old-shipper"))
        return {
            r.span_id: r.payload
            for r in spool.export(list(EventState))
            if r.state is not EventState.DONE
        }


def records(path: Path) -> dict[str, tuple[EventState, bytes, str | None]]:
    with Spool.open(SpoolConfig(path=path), create=False) as spool:
        return {
            r.span_id: (r.state, r.payload, r.last_error) for r in spool.export(list(EventState))
        }


def test_export_then_import_brings_back_every_event_byte_for_byte_once(tmp_path: Path) -> None:
    old, new, dump = tmp_path / "old.db", tmp_path / "new.db", tmp_path / "leftovers.jsonl"
    expected = build(old)
    assert cli("export", "--spool", old, "-o", dump).exit_code == 0

    first = cli("import", dump, "--spool", new, "--create")
    assert first.exit_code == 0, first.stderr
    assert f"imported 5 event(s) from {dump} into {new}: 0 already there, 1 done" in first.stderr
    got = records(new)
    assert {k: v[1] for k, v in got.items()} == expected
    assert got["leased"][0] is EventState.PENDING  # its old shipper is gone
    assert got["u1"][0] is EventState.PENDING
    assert got["dead"][0] is EventState.DEAD
    assert got["dead"][2] == "HTTP 422: bad"

    again = cli("import", dump, "--spool", new)
    assert again.exit_code == 0
    assert "imported 0 event(s)" in again.stderr
    assert "5 already there" in again.stderr
    assert records(new) == got


def test_bad_lines_are_reported_by_number_and_every_other_line_is_imported(
    tmp_path: Path,
) -> None:
    old, new, dump = tmp_path / "old.db", tmp_path / "new.db", tmp_path / "mixed.jsonl"
    build(old)
    good = cli("export", "--spool", old, "--state", "pending").stdout.splitlines()
    lines = [
        good[0],
        "not json at all",
        "[1, 2]",
        json.dumps({**json.loads(good[1]), "kind": "middle"}),
        json.dumps({**json.loads(good[1]), "payload": "a string"}),
        "",
        *good[1:],
    ]
    dump.write_text("\n".join(lines) + "\n")
    Spool.open(new).close()

    result = cli("import", dump, "--spool", new)

    assert result.exit_code == 1
    assert f"{dump}:2: skipped: not JSON" in result.stderr
    assert f"{dump}:3: skipped: not a JSON object" in result.stderr
    assert f"{dump}:4: skipped: 'kind' must be start or end, not 'middle'" in result.stderr
    assert f"{dump}:5: skipped: 'payload' must be a JSON object" in result.stderr
    assert "4 bad line(s)" in result.stderr
    assert set(records(new)) == {json.loads(line)["span_id"] for line in good}


def test_import_reads_stdin_and_refuses_to_create_a_spool_unasked(tmp_path: Path) -> None:
    old, new = tmp_path / "old.db", tmp_path / "new.db"
    build(old)
    dump = cli("export", "--spool", old).stdout
    missing = cli("import", "-", "--spool", new, input=dump)
    assert missing.exit_code == 3
    assert not new.exists()
    Spool.open(new).close()
    assert cli("import", "-", "--spool", new, input=dump).exit_code == 0
    assert len(records(new)) == 5


def test_an_import_that_would_pass_the_limit_stops_with_what_it_did(tmp_path: Path) -> None:
    old, new, dump = tmp_path / "old.db", tmp_path / "new.db", tmp_path / "big.jsonl"
    with Spool.open(old) as spool:
        spool.append(span_events([f"s{i}" for i in range(700)], EventKind.END))
    cli("export", "--spool", old, "-o", dump)
    Spool.open(SpoolConfig(path=new, max_bytes=64 * 1024)).close()

    result = cli("import", dump, "--spool", new)

    assert result.exit_code == 1
    assert "importing would take the spool past its limit (65536 bytes)" in result.stderr
    assert "imported 0 event(s) before it" in result.stderr
    assert records(new) == {}  # the chunk that did not fit left nothing behind


def test_raw_member_is_the_text_as_written() -> None:
    text = '{ "a" : 1 , "payload" :  {"x": [1, 2.50, "\\u00e9"]}  , "b": "payload"}'
    assert raw_member(text, "payload") == '{"x": [1, 2.50, "\\u00e9"]}'
    assert raw_member(text, "b") == '"payload"'
    assert raw_member('{"k": 1, "k": 2}', "k") == "2"
    assert raw_member("{}", "k") is None
    assert raw_member("[1]", "k") is None


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"span_id": ""}, "'span_id' must be a non-empty string"),
        ({"trace_id": 7}, "'trace_id' must be a non-empty string"),
        ({"state": "lost"}, "'state' must be an event state"),
        ({"enqueued_at": "yesterday"}, "'enqueued_at' must be a number"),
        ({"enqueued_at": True}, "'enqueued_at' must be a number"),
    ],
)
def test_parse_line_says_what_is_wrong(changes: dict[str, object], why: str) -> None:
    line = {
        "span_id": "s",
        "trace_id": "t",
        "kind": "end",
        "state": "pending",
        "enqueued_at": 1.0,
        "payload": {"id": "s"},
    }
    with pytest.raises(BadLine, match=why):
        parse_line(json.dumps(line | changes))
