"""The shipping commands: ``drain`` (ship the backlog, then exit) and ``run`` (a sidecar).

``drain`` exits 0 when everything was delivered, 2 when nothing is pending but some events
are dead-lettered, 1 when it stopped with events pending (timeout, credentials refused,
endpoint unreachable, no credentials, SIGTERM/SIGINT); the reason is printed. Spool trouble
exits 3. Both commands stop gracefully on SIGTERM or SIGINT: in-flight batches are finished or
handed back to the spool, never left leased.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Annotated, Any

import typer

from spool import SpoolConfig

from ._errors import EXIT_FAILED, EXIT_USAGE, CommandError
from ._logging import LogFormat, configure_logging
from ._options import (
    BusyTimeoutOption,
    SpoolOption,
    choice_option,
    duration_option,
    spool_config,
)

if TYPE_CHECKING:
    # The SDK (through shipper) and rich's progress bar load only when a command ships:
    # ``status`` and the other inspection commands stay quick to start.
    from rich.console import Console
    from rich.progress import Progress, TaskID

    from shipper import DrainResult, ShipperConfig
    from shipper import Progress as ShipProgress

__all__ = [
    "configure_logging",
    "drain",
    "drain_spool",
    "load_shipper_config",
    "run",
]

log = logging.getLogger("spool_ship.cli")

# How often a drain without a terminal logs its progress, and a sidecar its heartbeat.
PLAIN_PROGRESS_EVERY = 5.0
HEARTBEAT_EVERY = 60.0
# What a drain interrupted by SIGTERM/SIGINT gives in-flight requests before handing them back.
DRAIN_STOP_TIMEOUT = 3.0

TimeoutOption = Annotated[
    float | None,
    typer.Option(
        "--timeout",
        metavar="DURATION",
        parser=duration_option,
        help="Give up after this long (exit 1), leaving what is left in the spool.",
        show_default=False,
    ),
]
BatchSizeOption = Annotated[
    int | None,
    typer.Option("--batch-size", help="Events per request (1-1000). Default 50.", min=1, max=1000),
]
ConcurrencyOption = Annotated[
    int | None,
    typer.Option(
        "--concurrency",
        help="The most requests in flight (the number adapts below it). Default 32.",
        min=1,
    ),
]


LogFormatOption = Annotated[
    LogFormat,
    typer.Option(
        "--log-format",
        parser=choice_option(LogFormat),
        metavar="[text|json]",
        help="Log lines as text, or as one JSON object per line.",
    ),
]


def load_shipper_config(batch_size: int | None, concurrency: int | None) -> ShipperConfig:
    """The shipper's configuration from the environment and options; exit 2 if it is bad."""
    from shipper import ShipperConfig

    try:
        config = ShipperConfig.from_env(batch_size=batch_size, concurrency=concurrency)
    except (ValueError, TypeError) as exc:
        raise CommandError(f"configuration: {exc}", EXIT_USAGE) from None
    return config


def drain(
    spool: SpoolOption = None,
    timeout: TimeoutOption = None,
    batch_size: BatchSizeOption = None,
    concurrency: ConcurrencyOption = None,
    busy_timeout: BusyTimeoutOption = None,
    progress: Annotated[
        bool | None,
        typer.Option(
            "--progress/--no-progress",
            help="A progress bar (default on a terminal); else a log line every 5s.",
            show_default=False,
        ),
    ] = None,
    progress_every: Annotated[
        float,
        typer.Option(
            "--progress-every",
            metavar="DURATION",
            parser=duration_option,
            help="Without a bar: how often to log a progress line (0: after every batch).",
        ),
    ] = PLAIN_PROGRESS_EVERY,
    log_format: LogFormatOption = LogFormat.TEXT,
) -> None:
    """Ship until nothing is pending, then exit: 0 all delivered, 2 some dead, 1 pending left."""
    from rich.console import Console

    config = spool_config(spool, busy_timeout)
    shipper_config = load_shipper_config(batch_size, concurrency)
    console = Console(stderr=True)
    bar = console.is_terminal if progress is None else progress
    if not bar:
        configure_logging(log_format=log_format)
    result = drain_spool(
        config, shipper_config, timeout, console if bar else None, progress_every=progress_every
    )
    message = f"drain: {result.describe()}"
    console.print(message, highlight=False, soft_wrap=True) if bar else log.info(message)
    raise typer.Exit(result.exit_code)


def drain_spool(
    config: SpoolConfig,
    shipper_config: ShipperConfig,
    timeout: float | None,
    console: Console | None,
    *,
    progress_every: float = PLAIN_PROGRESS_EVERY,
) -> DrainResult:
    """Drain ``config.path`` (an existing spool) with a progress bar on ``console``, or with
    a log line every ``progress_every`` seconds when it is None. SIGTERM or SIGINT stops it
    gracefully (the result says ``stopped``)."""
    from shipper import Shipper, ShipperConfigError

    async def go() -> DrainResult:
        shipper = Shipper(config, shipper_config, create=False)
        try:
            await shipper.open()
        except ShipperConfigError as exc:
            raise CommandError(str(exc), EXIT_FAILED) from None
        try:
            # Without this a SIGTERM (a cancelled CI job, a deleted pod) kills the drain with
            # its batches leased for a whole lease, and prints no summary.
            stopping = _stop_on_signals(
                lambda: shipper.stop(DRAIN_STOP_TIMEOUT), DRAIN_STOP_TIMEOUT
            )
            if console is None:
                result = await shipper.drain(timeout, _log_progress(progress_every))
            else:
                with _progress_bar(console) as (bar, task):
                    result = await shipper.drain(timeout, _bar_progress(bar, task))
                    # The bar ends on the spool's own counts: the progress callbacks count
                    # superseded starts as remaining, and none comes if nothing was shipped.
                    left = result.pending + result.leased
                    bar.update(task, completed=result.shipped, total=result.shipped + left)
            if stopping:
                await stopping[0]
            return result
        finally:
            await shipper.aclose()

    return asyncio.run(go())


def _stop_on_signals(
    stop: Callable[[], Coroutine[Any, Any, None]], timeout: float
) -> list[asyncio.Task[None]]:
    """On the first SIGTERM or SIGINT, run ``stop()`` as a task, kept in the returned list.
    Outside the main thread (no signals to handle there) this does nothing."""
    stopping: list[asyncio.Task[None]] = []
    if threading.current_thread() is not threading.main_thread():
        return stopping

    def on_signal(signum: int) -> None:
        if not stopping:
            log.info("signal=%s stopping timeout_s=%g", signal.Signals(signum).name, timeout)
            stopping.append(asyncio.create_task(stop()))

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    return stopping


def _progress_bar(console: Console) -> _BarContext:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    bar = Progress(
        TextColumn("[bold]shipping[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>8.0f} ev/s"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
    return _BarContext(bar)


class _BarContext:
    def __init__(self, bar: Progress) -> None:
        self.bar = bar

    def __enter__(self) -> tuple[Progress, TaskID]:
        self.bar.__enter__()
        return self.bar, self.bar.add_task("shipping", total=None, rate=0.0)

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(None, None, None)


def _bar_progress(bar: Progress, task: TaskID) -> Callable[[ShipProgress], None]:
    def update(p: ShipProgress) -> None:
        bar.update(task, completed=p.shipped, total=p.shipped + p.remaining, rate=p.rate)

    return update


def _log_progress(
    every: float = PLAIN_PROGRESS_EVERY, clock: Callable[[], float] = time.monotonic
) -> Callable[[ShipProgress], None]:
    """A progress callback that logs at most one line every ``every`` seconds."""
    next_at = clock() + every

    def report(p: ShipProgress) -> None:
        nonlocal next_at
        now = clock()
        if now < next_at:
            return
        next_at = now + every
        eta = f"{p.eta:.0f}s" if p.eta is not None else "unknown"
        log.info(
            "progress shipped=%d remaining=%d rate_per_s=%.0f eta=%s",
            p.shipped, p.remaining, p.rate, eta,
        )  # fmt: skip

    return report


def run(
    spool: SpoolOption = None,
    batch_size: BatchSizeOption = None,
    concurrency: ConcurrencyOption = None,
    busy_timeout: BusyTimeoutOption = None,
    stop_timeout: Annotated[
        float,
        typer.Option(
            "--stop-timeout",
            metavar="DURATION",
            parser=duration_option,
            help="On SIGTERM/SIGINT, finish or release in-flight batches within this long.",
        ),
    ] = 10.0,
    create: Annotated[
        bool,
        typer.Option("--create", help="Create the spool if it does not exist yet."),
    ] = False,
    drain_on_stop: Annotated[
        bool,
        typer.Option(
            "--drain-on-stop",
            help="On SIGTERM/SIGINT, first ship what is pending (within --stop-timeout), then "
            "stop: for a spool that does not outlive the container (an emptyDir).",
        ),
    ] = False,
    metrics_addr: Annotated[
        str | None,
        typer.Option(
            "--metrics-addr",
            metavar="HOST:PORT",
            help="Also serve /metrics (Prometheus), /healthz and /readyz on HOST:PORT.",
            show_default=False,
        ),
    ] = None,
    heartbeat_every: Annotated[
        float,
        typer.Option(
            "--heartbeat-every",
            metavar="DURATION",
            parser=duration_option,
            help="Log a heartbeat (counts, rates, fill) this often; 0 turns it off.",
            show_default="1m",
        ),
    ] = HEARTBEAT_EVERY,
    log_format: LogFormatOption = LogFormat.TEXT,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every batch.")] = False,
) -> None:
    """Ship forever (sidecar or daemon); SIGTERM or SIGINT stops it gracefully."""
    from shipper import Shipper, ShipperConfigError

    from ._sidecar import heartbeat, log_left_behind, start_metrics_server

    config = spool_config(spool, busy_timeout)
    shipper_config = load_shipper_config(batch_size, concurrency)
    addr = None
    if metrics_addr is not None:
        from ._serve import parse_addr

        try:
            addr = parse_addr(metrics_addr)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--metrics-addr") from None
    configure_logging(verbose, log_format)

    async def go() -> None:
        shipper = Shipper(config, shipper_config, create=create)
        try:
            await shipper.open()
        except ShipperConfigError as exc:
            raise CommandError(str(exc), EXIT_FAILED) from None
        server = None
        beat = None
        shipping: asyncio.Task[None] | None = None
        try:
            if addr is not None:
                try:
                    server = start_metrics_server(
                        addr, shipper, lambda: shipping is not None and not shipping.done()
                    )
                except OSError as exc:
                    raise CommandError(
                        f"--metrics-addr {metrics_addr}: cannot listen there "
                        f"({exc.strerror or exc})",
                        EXIT_USAGE,
                    ) from None
            stop = shipper.finish if drain_on_stop else shipper.stop
            stopping = _stop_on_signals(lambda: stop(stop_timeout), stop_timeout)
            shipping = asyncio.create_task(shipper.run())
            if heartbeat_every > 0:
                beat = asyncio.create_task(heartbeat(shipper, heartbeat_every))
            await shipping
            if stopping:
                await stopping[0]
            await log_left_behind(shipper)
        finally:
            if beat is not None:
                beat.cancel()
            await shipper.aclose()
            if server is not None:
                server.close()

    asyncio.run(go())
