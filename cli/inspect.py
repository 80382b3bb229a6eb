"""Inspection commands: ``status``, ``stuck``, ``show``, ``export``. They only read the spool
and never create one."""

from __future__ import annotations

import enum
import json
import math
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from spool import Damage, EventRecord, EventState, check_damage, ops

from ._errors import EXIT_USAGE, CommandError
from ._options import (
    BusyTimeoutOption,
    JsonOption,
    SpoolOption,
    choice_option,
    duration_option,
    find_events,
    format_duration,
    open_spool,
    spool_config,
)
from ._render import (
    ago,
    clean,
    decode_payload,
    export_line,
    human_age,
    human_bytes,
    human_time,
    pairs,
    record_dict,
    since,
    status_dict,
    waiting_dict,
    when,
    write_atomic,
)

__all__ = [
    "Format",
    "StuckState",
    "export",
    "show",
    "status",
    "stuck",
    "stuck_reasons",
    "wait_horizon",
]


class Format(enum.StrEnum):
    """How ``status`` writes what it found."""

    TABLE = "table"
    JSON = "json"
    PROMETHEUS = "prometheus"


class StuckState(enum.StrEnum):
    """The states ``stuck`` can look in (done events are never stuck)."""

    DEAD = "dead"
    PENDING = "pending"
    LEASED = "leased"


OutputOption = Annotated[
    Path | None,
    typer.Option(
        "--output",
        "-o",
        metavar="FILE",
        help="Write to FILE (atomically: a temporary file, then a rename) instead of stdout.",
        show_default=False,
    ),
]


# The shipper's waits and lease: variable, option name, ShipperConfig's default. Read here, not
# through shipper.ShipperConfig, so that inspection never imports the SDK; a test holds them
# to ShipperConfig (tests/test_cli_clock.py::test_the_horizon_is_the_shippers).
_BACKOFF_MAX = ("SPOOL_SHIP_BACKOFF_MAX", "backoff_max", 20.0)
_RETRY_AFTER_CAP = ("SPOOL_SHIP_RETRY_AFTER_CAP", "retry_after_cap", 300.0)
_LEASE = ("SPOOL_SHIP_LEASE", "lease_seconds", 60.0)


def wait_horizon(env: Mapping[str, str] | None = None) -> tuple[float, float]:
    """``(max_wait, lease_seconds)`` of the shipper configured by ``env`` (the process's
    environment by default): the horizon its claim draws (see :func:`spool.ops.claim`).
    A next attempt or lease beyond it was written before the wall clock stepped back."""
    env = os.environ if env is None else env

    def read(variable: str, name: str, default: float) -> float:
        raw = env.get(variable)
        if not raw:
            return default
        try:
            return float(raw.strip())
        except ValueError:
            raise CommandError(f"{variable}={raw!r} is not a valid {name}", EXIT_USAGE) from None

    return max(read(*_BACKOFF_MAX), read(*_RETRY_AFTER_CAP)), read(*_LEASE)


# ---- status --------------------------------------------------------------------------------


def status(
    spool: SpoolOption = None,
    as_json: JsonOption = False,
    output_format: Annotated[
        Format | None,
        typer.Option(
            "--format",
            parser=choice_option(Format),
            metavar="[table|json|prometheus]",
            help="table (default), json (same as --json), or prometheus (textfile collector).",
            show_default=False,
        ),
    ] = None,
    output: OutputOption = None,
    check_budget: Annotated[
        float,
        typer.Option(
            "--check-budget",
            metavar="DURATION",
            parser=duration_option,
            help="Time for the damage check (PRAGMA quick_check); a larger spool is reported "
            "'unchecked' rather than slowing the probe down. 0 skips it.",
            show_default="2s",
        ),
    ] = 2.0,
    busy_timeout: BusyTimeoutOption = None,
) -> None:
    """Counts by state, oldest pending, size and limit, last error, blocked reason. Exits 3
    when the spool is damaged."""
    if as_json and output_format not in (None, Format.JSON):
        raise typer.BadParameter(
            f"--json and --format {output_format.value} disagree: use one of them",
            param_hint="--json",
        )
    chosen = Format.JSON if as_json else (output_format or Format.TABLE)
    config = spool_config(spool, busy_timeout)
    max_wait, lease_seconds = wait_horizon()
    with open_spool(config, readonly=True) as opened:
        check = check_damage(opened, check_budget) if check_budget > 0 else None
        if check is not None and check.verdict is Damage.DAMAGED:
            raise check.error(config.path)
        now = time.time()
        snapshot, counters, used = opened.run(ops.status_report(), write=False)
        waits = opened.run(ops.waiting(now, max_wait, lease_seconds), write=False)
    facts = status_dict(opened.with_sizes(snapshot), config.path, now, counters, used, check)
    facts |= waiting_dict(waits, now)
    if chosen is Format.JSON:
        text = json.dumps(facts, indent=2) + "\n"
    elif chosen is Format.PROMETHEUS:
        from ._metrics import prometheus_text  # prometheus_client only when it is asked for

        text = prometheus_text(facts)
    else:
        text = ""
    if output is not None:
        if chosen is Format.TABLE:
            raise typer.BadParameter("--output needs --json or --format", param_hint="--output")
        _write_file(output, [text], mode=0o644)
    elif text:
        sys.stdout.write(text)
    else:
        _print_status(facts)


def _print_status(facts: dict[str, Any]) -> None:
    now = facts["generated_at"]
    rows = [
        ("spool", facts["path"]),
        (
            "size",
            f"{human_bytes(facts['total_bytes'])} (file {human_bytes(facts['file_bytes'])}, "
            f"WAL {human_bytes(facts['wal_bytes'])})",
        ),
        ("limit", _limit_text(facts)),
        ("integrity", _integrity_text(facts)),
    ]
    beyond = facts["beyond_horizon"]
    leased = str(facts["leased"])
    if beyond["leased"]:
        leased += (
            f" ({beyond['leased']} with a lease beyond any lease a shipper writes: the clock "
            "stepped back; such leases count as expired)"
        )
    rows += [
        ("pending", str(facts["pending"])),
        ("leased", leased),
        ("next attempt", _next_attempt_text(facts)),
        ("done", str(facts["done"])),
        ("dead", str(facts["dead"])),
        ("superseded", f"{facts['superseded']} (starts not sent: their end carries the span)"),
        ("dropped", _by_reason(facts["dropped"], facts["dropped_by_reason"])),
        ("refused", _by_reason(facts["refused"], facts["refused_by_reason"])),
        ("oldest pending", since(facts["oldest_pending_at"], now, none="none")),
        ("last success", since(facts["last_success_at"], now, none="never")),
        (
            "last error",
            "none"
            if facts["last_error"] is None
            else f"{since(facts['last_error_at'], now, none='?')}: {facts['last_error']}",
        ),
        ("blocked", f"yes: {facts['blocked_reason']}" if facts["blocked"] else "no"),
    ]
    sys.stdout.write(pairs(rows))


def _next_attempt_text(facts: dict[str, Any]) -> str:
    """When a shipper takes the next pending event: now (how many are due, and how many of
    them only because the clock stepped back), at a time, or none."""
    due, stepped = facts["due_now"], facts["beyond_horizon"]["pending"]
    if due:
        text = f"now: {due} pending event(s) due"
        if stepped:
            text += f", {stepped} set beyond any wait a shipper sets: the clock stepped back"
        return text
    return when(facts["next_attempt_at"], facts["generated_at"], none="none")


def _limit_text(facts: dict[str, Any]) -> str:
    limit = f"{human_bytes(facts['max_bytes'])}"
    if facts["used_bytes"] is None:
        return limit
    return f"{limit}, {100 * facts['fill']:.1f}% full ({human_bytes(facts['used_bytes'])} used)"


def _integrity_text(facts: dict[str, Any]) -> str:
    return {
        None: "not checked",
        Damage.OK.value: "ok (quick check)",
        Damage.UNCHECKED.value: "not fully checked within --check-budget; run "
        "'spool-ship doctor' for a full check",
    }[facts["integrity"]]


def _by_reason(total: int, by_reason: dict[str, int]) -> str:
    if not total:
        return "0"
    return f"{total} (" + ", ".join(f"{r}: {n}" for r, n in by_reason.items()) + ")"


def _clean_lines(text: str) -> str:
    """:func:`clean` for text of several lines, keeping its line breaks."""
    return "\n".join(clean(line) for line in text.split("\n"))


# ---- stuck ---------------------------------------------------------------------------------


def stuck_reasons(
    record: EventRecord,
    min_attempts: int,
    pending_before: float,
    now: float,
    horizon: tuple[float, float] = (math.inf, 0.0),
) -> list[str]:
    """Why ``record`` needs an operator's eye (empty: it does not). The same test as
    :func:`spool.ops.stuck`; ``horizon`` is its ``(max_wait, lease_seconds)``."""
    max_wait, lease_seconds = horizon
    why = []
    if record.state is EventState.DEAD:
        why.append("dead")
    if record.state in (EventState.PENDING, EventState.LEASED) and record.attempts >= min_attempts:
        why.append("retried")
    if record.state is EventState.PENDING and record.enqueued_at < pending_before:
        why.append("old")
    lease = record.lease_expires_at
    if record.state is EventState.LEASED and lease is not None and lease <= now:
        why.append("lease_expired")
    if (record.state is EventState.PENDING and record.next_attempt_at > now + max_wait) or (
        record.state is EventState.LEASED
        and lease is not None
        and lease > now + max_wait + lease_seconds
    ):
        why.append("clock_stepped_back")
    return why


def stuck(
    spool: SpoolOption = None,
    as_json: JsonOption = False,
    min_attempts: Annotated[
        int,
        typer.Option("--min-attempts", min=1, metavar="N", help="Retried at least N times."),
    ] = 3,
    older_than: Annotated[
        float,
        typer.Option(
            "--older-than",
            metavar="DURATION",
            parser=duration_option,
            help="Pending for longer than this (90s, 15m, 2h, 7d, or seconds).",
            show_default="1h",
        ),
    ] = 3600.0,
    states: Annotated[
        list[StuckState] | None,
        typer.Option(
            "--state",
            parser=choice_option(StuckState),
            metavar="[dead|pending|leased]",
            help="Only these states (repeat the option). Default: all three.",
        ),
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", min=1, metavar="N", help="At most N events.")
    ] = 100,
    busy_timeout: BusyTimeoutOption = None,
) -> None:
    """Dead, retried, long-pending or lease-expired events, and those a wall clock step back
    left waiting beyond any wait or lease a shipper sets, with why."""
    config = spool_config(spool, busy_timeout)
    horizon = wait_horizon()
    now = time.time()
    pending_before = now - older_than
    with open_spool(config, readonly=True) as opened:
        if not states:
            query = ops.stuck(
                min_attempts,
                pending_before,
                now,
                limit + 1,
                max_wait=horizon[0],
                lease_seconds=horizon[1],
            )
            records = opened.run(query, write=False)
        else:
            wanted = [EventState(s.value) for s in dict.fromkeys(states)]
            records = []
            for record in opened.export(wanted):
                if stuck_reasons(record, min_attempts, pending_before, now, horizon):
                    records.append(record)
                    if len(records) > limit:
                        break
    more = len(records) > limit
    records = records[:limit]
    found = [(r, stuck_reasons(r, min_attempts, pending_before, now, horizon)) for r in records]
    if as_json:
        rows = [record_dict(r) | {"why": why} for r, why in found]
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
    elif not found:
        typer.echo(
            f"nothing stuck in {config.path} (dead, retried {min_attempts}+ times, pending over "
            f"{format_duration(older_than)}, past its lease, or set beyond any wait or lease "
            "a shipper sets)",
            err=True,
        )
    else:
        _print_stuck(found, now, older_than)
    if more:
        typer.echo(f"showing the first {limit} stuck events; use --limit for more", err=True)


def _why_text(record: EventRecord, why: Sequence[str], now: float, older_than: float) -> str:
    words = {
        "dead": "dead-lettered",
        "retried": f"{record.attempts} attempts",
        "old": f"pending {human_age(now - record.enqueued_at)} "
        f"(over {format_duration(older_than)})",
        "lease_expired": f"lease expired {human_age(now - (record.lease_expires_at or now))} ago",
        "clock_stepped_back": (
            f"lease expires {human_age((record.lease_expires_at or now) - now)} ahead, beyond "
            "any lease a shipper writes: the clock stepped back (shippers take it over now)"
            if record.state is EventState.LEASED
            else f"next attempt {human_age(record.next_attempt_at - now)} ahead, beyond any "
            "wait a shipper sets: the clock stepped back (shippers take it now)"
        ),
    }
    return ", ".join(words[w] for w in why)


def _print_stuck(found: list[tuple[EventRecord, list[str]]], now: float, older_than: float) -> None:
    for record, why in found:
        sys.stdout.write(
            f"seq {record.seq}: {record.state.value} {record.kind.value} of span "
            f"{clean(record.span_id)} (trace {clean(record.trace_id)}), {record.attempts} "
            f"attempt(s), enqueued {ago(record.enqueued_at, now)}\n"
            f"  why         {_why_text(record, why, now, older_than)}\n"
            f"  last error  {clean(record.last_error or '-')}\n"
        )


# ---- show ----------------------------------------------------------------------------------


def show(
    ident: Annotated[str, typer.Argument(metavar="ID", help="A seq number or a span id.")],
    spool: SpoolOption = None,
    as_json: JsonOption = False,
    busy_timeout: BusyTimeoutOption = None,
) -> None:
    """One event in full (by seq or span id), payload included."""
    config = spool_config(spool, busy_timeout)
    with open_spool(config, readonly=True) as opened:
        records = find_events(opened, ident)
    if not records:
        raise CommandError(f"{config.path}: no event with seq or span id {ident!r}")
    if as_json:
        rows = [record_dict(r, payload=True) for r in records]
        # ASCII: escapes for everything else, so span data cannot reach a terminal raw.
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    now = time.time()
    horizon = wait_horizon()
    for i, record in enumerate(records):
        payload = decode_payload(record.payload)
        text = payload if isinstance(payload, str) else json.dumps(payload, indent=2)
        sys.stdout.write(("\n" if i else "") + pairs(_record_rows(record, now, horizon)))
        sys.stdout.write(f"payload:\n{_clean_lines(text)}\n")


def _record_rows(
    record: EventRecord, now: float, horizon: tuple[float, float]
) -> list[tuple[str, str]]:
    """``show``'s rows. A next attempt or lease beyond ``horizon`` (see :func:`wait_horizon`)
    is shown as what a shipper's claim makes of it: due now, or expired."""
    max_wait, lease_seconds = horizon
    lease = "-"
    if record.lease_owner is not None:
        until = record.lease_expires_at
        if until is not None and until > now + max_wait + lease_seconds:
            lease = (
                f"{record.lease_owner} until {human_time(until)} (beyond any lease a shipper "
                "writes: the clock stepped back; it counts as expired)"
            )
        else:
            lease = f"{record.lease_owner} until {when(until, now)}"
    next_attempt = "-"
    if record.state is EventState.PENDING:
        due_at = record.next_attempt_at
        if due_at > now + max_wait:
            next_attempt = (
                f"now (set for {human_time(due_at)}, beyond any wait a shipper sets: the "
                "clock stepped back)"
            )
        else:
            next_attempt = "now" if due_at <= now else when(due_at, now)
    ended = "-"
    if record.done_at is not None:
        how = f", {record.outcome.value}" if record.outcome is not None else ""
        ended = f"{when(record.done_at, now)}{how}"
    return [
        ("seq", str(record.seq)),
        ("span_id", record.span_id),
        ("trace_id", record.trace_id),
        ("kind", record.kind.value),
        ("state", record.state.value),
        ("attempts", str(record.attempts)),
        ("enqueued", since(record.enqueued_at, now)),
        ("next attempt", next_attempt),
        ("lease", lease),
        ("ended", ended),
        ("last error", record.last_error or "-"),
        ("payload bytes", str(len(record.payload))),
    ]


# ---- export --------------------------------------------------------------------------------


def export(
    spool: SpoolOption = None,
    states: Annotated[
        list[EventState] | None,
        typer.Option(
            "--state",
            parser=choice_option(EventState),
            metavar="[pending|leased|done|dead]",
            help="Only these states (repeat the option). Default: all.",
        ),
    ] = None,
    output: OutputOption = None,
    busy_timeout: BusyTimeoutOption = None,
) -> None:
    """All events as JSON Lines (the stuck --json keys plus payload)."""
    config = spool_config(spool, busy_timeout)
    wanted = list(dict.fromkeys(states)) if states else list(EventState)
    count = 0

    def lines(records: Iterator[EventRecord]) -> Iterator[str]:
        nonlocal count
        for record in records:
            count += 1
            yield export_line(record)

    with open_spool(config, readonly=True) as opened:
        if output is None:
            write = sys.stdout.write
            for line in lines(opened.export(wanted)):
                write(line)
            sys.stdout.flush()
        else:
            # Spans hold prompts and outputs: the export is as private as the spool.
            _write_file(output, lines(opened.export(wanted)), mode=0o600)
    where = "stdout" if output is None else str(output)
    typer.echo(f"exported {count} event(s) from {config.path} to {where}", err=True)


def _write_file(path: Path, chunks: Any, mode: int) -> None:
    try:
        write_atomic(path, chunks, mode)
    except OSError as exc:
        raise CommandError(f"cannot write {path}: {exc.strerror or exc}") from None
