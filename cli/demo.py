"""``spool-ship demo``: the whole story in under a minute, on a local spool.

1. a simulated agent spools spans and is SIGKILLed part way: every acknowledged event is in
   the spool;
2. the loopback test endpoint starts, failing some requests and dropping some connections;
3. a drain ships the backlog through those faults, with the progress bar;
4. the status table shows everything delivered.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from spool import EventState, Spool, SpoolConfig

from .inspect import status
from .ship import drain_spool

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["demo"]

DEMO_KEY = "demo-key"


def demo(
    spool: Annotated[
        Path | None,
        typer.Option("--spool", metavar="PATH", help="Where to put the demo spool (a new one)."),
    ] = None,
    events: Annotated[
        int, typer.Option("--events", min=100, help="Kill the agent after this many events.")
    ] = 20_000,
) -> None:
    """Watch spool-ship survive an agent crash and a flaky endpoint, on a local spool."""
    # Here, not at the top: the SDK loads only for commands that ship.
    from rich.console import Console

    from shipper import ShipperConfig
    from shipper.testing import FakeSpanServer

    console = Console(stderr=True, highlight=False)
    path = spool or Path(tempfile.mkdtemp(prefix="spool-ship-demo-")) / "spool.db"
    if path.exists():
        raise typer.BadParameter(f"{path} exists; the demo needs a new spool", param_hint="--spool")
    config = SpoolConfig.from_env(path)

    console.rule("[bold]1. an agent spools spans, then is SIGKILLed")
    acked = _run_agent_until(path, events, console)
    with Spool.open(config, create=False) as opened:
        stats = opened.stats()
        stored = {(r.kind.value, r.span_id) for r in opened.export(list(EventState))}
    missing = len(acked - stored)
    console.print(
        f"agent killed after {len(acked)} acknowledged span events; spool holds "
        f"{stats.pending} pending events; acknowledged but missing: [bold]{missing}[/]"
    )

    console.rule("[bold]2. the endpoint is flaky")
    with FakeSpanServer(api_key=DEMO_KEY) as server:
        server.faults.set_random(fail_rate=0.2, status=503, retry_after=0.05, drop_rate=0.03)
        server.faults.set_latency((0.001, 0.01))
        console.print(
            f"test endpoint at {server.base_url}: 20% of requests answer 503 with Retry-After, "
            "3% of connections drop"
        )
        console.rule("[bold]3. drain, through the faults")
        shipper_config = ShipperConfig(
            api_key=DEMO_KEY,
            account_id="demo",
            base_url=server.base_url,
            backoff_initial=0.05,
            backoff_max=1.0,
        )
        result = drain_spool(config, shipper_config, timeout=120, console=console)
        console.print(f"drain: {result.describe()}")
        seen = server.stats()
        console.print(
            f"endpoint saw {seen.requests} requests (by status {dict(seen.by_status)}, "
            f"{seen.dropped} connections dropped); {seen.completed} complete spans stored; "
            f"{seen.duplicates} duplicate deliveries"
        )

    console.rule("[bold]4. status")
    status(spool=path)
    console.print(f"\nlook around: spool-ship stuck --spool {path}")
    console.print(f"             spool-ship show SEQ --spool {path}")
    raise typer.Exit(result.exit_code)


def _run_agent_until(path: Path, events: int, console: Console) -> set[tuple[str, str]]:
    """Start the simulated agent, SIGKILL it once ``events`` events were acknowledged, and
    return the ``(kind, span id)`` events it saw acknowledged (its last line may be cut)."""
    agent = subprocess.Popen(
        [sys.executable, "-m", "cli._demo_agent", str(path)],
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    acked: set[tuple[str, str]] = set()
    seen = 0
    assert agent.stdout is not None
    with console.status("agent running...") as spinner:
        for line in agent.stdout:
            parts = line.split()
            if len(parts) == 2 and len(parts[1]) == 32:
                acked.add((parts[0], parts[1]))
                seen += 1
            if seen % 1000 == 0:
                spinner.update(f"agent running: {seen} events acknowledged")
            if seen >= events:
                agent.send_signal(signal.SIGKILL)
                break
    agent.wait()
    agent.stdout.close()
    return acked
