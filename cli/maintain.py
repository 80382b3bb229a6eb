"""Maintenance commands: ``retry``, ``purge``, ``doctor``. They change the spool, so the
destructive ones ask first (or take ``--yes``)."""

from __future__ import annotations

import enum
import json
import sys
import time
from typing import Annotated, Any

import typer

from spool import (
    EventState,
    Spool,
    SpoolConfig,
    SpoolCorruptError,
    SpoolError,
    file_sizes,
    maintenance,
    ops,
    salvage,
)

from ._errors import EXIT_FAILED, EXIT_SPOOL, EXIT_USAGE, CommandError
from ._options import (
    BusyTimeoutOption,
    JsonOption,
    SpoolOption,
    duration_option,
    find_events,
    format_duration,
    open_spool,
    spool_config,
)
from ._render import human_bytes

__all__ = ["PurgeState", "doctor", "purge", "retry", "stdin_is_tty"]

YesOption = Annotated[
    bool, typer.Option("--yes", "-y", help="Do it without asking (needed without a terminal).")
]


class PurgeState(enum.StrEnum):
    """The states ``purge`` may delete: events that are finished, one way or the other."""

    DONE = "done"
    DEAD = "dead"


def stdin_is_tty() -> bool:
    """Whether a person can answer a question (tests replace this)."""
    return sys.stdin.isatty()


def _confirm(question: str, yes: bool, refusal: str, refusal_code: int = EXIT_USAGE) -> None:
    if yes:
        return
    if not stdin_is_tty():
        raise CommandError(refusal, refusal_code)
    if not typer.confirm(question, default=False, err=True):
        raise CommandError("not confirmed; nothing was changed", EXIT_FAILED)


def _say(as_json: bool, data: dict[str, Any], line: str) -> None:
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    else:
        typer.echo(line)


# ---- retry ---------------------------------------------------------------------------------


def retry(
    ids: Annotated[
        list[str] | None,
        typer.Argument(metavar="ID", help="Seqs or span ids of dead events.", show_default=False),
    ] = None,
    every: Annotated[bool, typer.Option("--all", help="Every dead event.")] = False,
    trace_ids: Annotated[
        list[str] | None,
        typer.Option("--trace-id", metavar="TRACE", help="Dead events of this trace (repeatable)."),
    ] = None,
    spool: SpoolOption = None,
    as_json: JsonOption = False,
    busy_timeout: BusyTimeoutOption = None,
) -> None:
    """Move dead events back to pending (attempts reset)."""
    if every and (ids or trace_ids):
        raise typer.BadParameter("--all selects every dead event; drop the IDs and --trace-id")
    if not (every or ids or trace_ids):
        raise typer.BadParameter(
            "say which dead events to retry: --all, one or more IDs, or --trace-id",
            param_hint="ID",
        )
    config = spool_config(spool, busy_timeout)
    skipped: list[str] = []
    with open_spool(config) as opened:
        if every:
            retried = opened.run(ops.retry_dead(None))
        else:
            seqs = _select_dead(opened, ids or [], trace_ids or [], skipped)
            retried = opened.run(ops.retry_dead(sorted(seqs))) if seqs else 0
    for line in skipped:
        typer.echo(line, err=True)
    _say(
        as_json,
        {"retried": retried, "path": str(config.path)},
        f"moved {retried} dead event(s) back to pending in {config.path}",
    )


def _select_dead(
    opened: Spool, ids: list[str], trace_ids: list[str], skipped: list[str]
) -> set[int]:
    seqs: set[int] = set()
    unknown = []
    for ident in ids:
        records = find_events(opened, ident)
        if not records:
            unknown.append(ident)
        for record in records:
            if record.state is EventState.DEAD:
                seqs.add(record.seq)
            else:
                skipped.append(
                    f"seq {record.seq} ({record.kind.value} of span {record.span_id}) is "
                    f"{record.state.value}, not dead: skipped"
                )
    if unknown:
        names = ", ".join(repr(i) for i in unknown)
        raise CommandError(
            f"{opened.config.path}: no event with seq or span id {names}; nothing was retried"
        )
    if trace_ids:
        wanted = set(trace_ids)
        seqs.update(r.seq for r in opened.export([EventState.DEAD]) if r.trace_id in wanted)
    return seqs


# ---- purge ---------------------------------------------------------------------------------


def purge(
    states: Annotated[
        list[PurgeState] | None,
        typer.Option("--state", help="done and/or dead (repeat the option). Default: done."),
    ] = None,
    older_than: Annotated[
        float,
        typer.Option(
            "--older-than",
            metavar="DURATION",
            parser=duration_option,
            help="Only events that ended longer ago than this (90s, 15m, 2h, 7d).",
            show_default="0s: all of them",
        ),
    ] = 0.0,
    yes: YesOption = False,
    spool: SpoolOption = None,
    as_json: JsonOption = False,
    busy_timeout: BusyTimeoutOption = None,
) -> None:
    """Delete done or dead events older than a given age (asks first)."""
    chosen = [EventState(s.value) for s in dict.fromkeys(states or [PurgeState.DONE])]
    names = " and ".join(s.value for s in chosen)
    config = spool_config(spool, busy_timeout)
    age = f"more than {format_duration(older_than)} ago" if older_than else "at any time"
    with open_spool(config) as opened:
        _confirm(
            f"Delete the {names} events of {config.path} that ended {age}?",
            yes,
            f"refusing to delete {names} events without confirmation: stdin is not a "
            "terminal; pass --yes",
        )
        deleted = opened.run(ops.purge(chosen, time.time() - older_than))
    _say(
        as_json,
        {"deleted": deleted, "states": [s.value for s in chosen], "path": str(config.path)},
        f"deleted {deleted} {names} event(s) that ended {age} from {config.path}",
    )


# ---- doctor --------------------------------------------------------------------------------


def doctor(
    yes: YesOption = False,
    spool: SpoolOption = None,
    as_json: JsonOption = False,
    busy_timeout: BusyTimeoutOption = None,
) -> None:
    """Integrity check, checkpoint, vacuum; salvage a damaged spool.

    Exit 0: the spool is sound. Exit 1: it was damaged and has been replaced by a fresh
    spool holding what could be salvaged. Exit 3: it cannot be opened, or is damaged and
    was left alone. A salvage that was stopped part-way is taken up again where it stopped.
    """
    config = spool_config(spool, busy_timeout)
    before = sum(file_sizes(config.path))
    report: dict[str, Any] = {"path": str(config.path), "bytes_before": before}
    stopped = salvage.unfinished(config.path)
    if stopped is None:
        problem = _check_and_compact(config, report)
        if problem is None:
            report["bytes_after"] = sum(file_sizes(config.path))
            report["repaired"] = False
            _print_doctor(as_json, report)
            return
        typer.echo(f"{config.path}: damaged: {problem}", err=True)
        _confirm(
            f"Move {config.path} aside and salvage what it holds into a fresh spool? "
            "(Stop the agents and shippers that use it first.)",
            yes,
            f"{config.path} is damaged and was left as it is: stdin is not a terminal; pass "
            "--yes to move it aside and salvage what it holds",
            refusal_code=EXIT_SPOOL,
        )
    else:
        problem = f"a salvage from {stopped} was stopped part-way"
        report["integrity"] = [problem]
        typer.echo(f"{config.path}: {problem}; events may be only in that copy", err=True)
        _confirm(
            f"Finish the salvage from {stopped} into {config.path}?",
            yes,
            f"{config.path}: {problem} and was left as it is: stdin is not a terminal; pass "
            "--yes to finish it",
            refusal_code=EXIT_SPOOL,
        )
    try:
        aside = salvage.begin(config.path, time.time())
    except OSError as exc:
        raise CommandError(
            f"{config.path}: cannot move the damaged spool aside: {exc.strerror or exc}",
            EXIT_SPOOL,
        ) from None
    try:
        with Spool.open(config) as fresh:
            found = salvage.salvage(aside, fresh)
    except SpoolError as exc:
        raise CommandError(
            f"{config.path}: salvage from {aside} failed: {exc}; the events not yet salvaged "
            "are still in that copy: run 'spool-ship doctor' again to take it up where it "
            "stopped",
            EXIT_SPOOL,
        ) from None
    salvage.finish(config.path)
    report |= {
        "integrity": report.get("integrity") or [problem],
        "repaired": True,
        "moved_to": str(aside),
        "bytes_after": sum(file_sizes(config.path)),
    } | found.as_dict()
    _print_doctor(as_json, report)
    raise typer.Exit(EXIT_FAILED)


def _check_and_compact(config: SpoolConfig, report: dict[str, Any]) -> str | None:
    """Run the checks and the upkeep on a sound spool; the problem, if it is not sound."""
    try:
        with open_spool(config) as opened:
            verdict = report["integrity"] = maintenance.integrity(opened)
            if verdict != ["ok"] and maintenance.only_indexes(verdict):
                # The rows are intact and only an index disagrees: rebuild it in place.
                maintenance.reindex(opened)
                report["reindexed"] = True
                verdict = report["integrity"] = maintenance.integrity(opened)
            if verdict != ["ok"]:
                shown = "; ".join(verdict[:3]) + ("; ..." if len(verdict) > 3 else "")
                return f"integrity check failed: {shown}"
            busy, frames, copied = opened.checkpoint("TRUNCATE")
            report["checkpoint"] = {"busy": bool(busy), "wal_frames": frames, "copied": copied}
            maintenance.vacuum(opened)
            report["vacuumed"] = True
            opened.checkpoint("TRUNCATE")
    except SpoolCorruptError as exc:
        return str(exc).removeprefix(f"{config.path}: ").split("; run 'spool-ship doctor'")[0]
    return None


def _print_doctor(as_json: bool, report: dict[str, Any]) -> None:
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
        return
    size = f"{human_bytes(report['bytes_before'])} -> {human_bytes(report['bytes_after'])}"
    if not report["repaired"]:
        checkpoint = report["checkpoint"]
        wal = (
            "WAL busy (another process is reading): not truncated"
            if checkpoint["busy"]
            else f"checkpointed {checkpoint['copied']} WAL frame(s), WAL truncated"
        )
        integrity = "ok, after rebuilding the indexes" if report.get("reindexed") else "ok"
        for line in (
            f"spool      {report['path']}",
            f"integrity  {integrity}",
            f"wal        {wal}",
            f"vacuum     done, {size}",
        ):
            typer.echo(line)
        return
    for line in (
        f"spool      {report['path']}: was damaged, replaced by a fresh spool",
        f"moved to   {report['moved_to']} (with its -wal and -shm, if any; kept)",
        f"salvaged   {report['salvaged']} event(s) ({report['salvaged_dead']} of them dead)",
        f"lost       {report['lost']} event(s) that were not done "
        f"(counted as dropped: salvage_lost)",
        f"left       {report['done_left_behind']} done event(s) (already delivered)",
        f"unreadable {report['unreadable']} seq(s) unaccounted for: deleted rows or lost events "
        "(their index pages are unreadable too)",
    ):
        typer.echo(line)
    if report["resumed"]:
        typer.echo(
            f"resumed    a salvage stopped part-way was taken up where it stopped "
            f"({report['resumed']} time(s)); nothing was copied twice"
        )
    if not report["table_readable"]:
        typer.echo(
            f"warning    the events table could not be read at all: nothing was salvaged and "
            f"losses cannot be counted; try 'sqlite3 {report['moved_to']} .recover'"
        )
    if report["refused_by_new_spool"]:
        typer.echo(
            f"refused    {report['refused_by_new_spool']} event(s): the fresh spool is at its "
            "size limit (SPOOL_SHIP_MAX_BYTES)"
        )
