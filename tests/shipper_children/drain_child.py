"""Child process: drain a spool the way ``spool-ship drain`` does, configured by environment.

    SGP_API_KEY=... SGP_ACCOUNT_ID=... SGP_CLIENT_BASE_URL=... SPOOL_SHIP_LEASE=2 \
        python tests/shipper_children/drain_child.py SPOOL_PATH

Prints ``started OWNER`` once the spool is open, then one JSON line with the drain's result,
and exits with the drain's exit code. Crash tests SIGKILL it part way.
"""

from __future__ import annotations

import asyncio
import json
import sys

from shipper import Shipper, ShipperConfig
from spool import SpoolConfig


async def drain(path: str) -> int:
    async with Shipper(SpoolConfig.from_env(path), ShipperConfig.from_env()) as shipper:
        print(f"started {shipper.owner}", flush=True)
        result = await shipper.drain()
    print(
        json.dumps(
            {
                "exit_code": result.exit_code,
                "shipped": result.shipped,
                "pending": result.pending,
                "leased": result.leased,
                "dead": result.dead,
                "reason": result.reason.value if result.reason else None,
                "detail": result.detail,
            }
        ),
        flush=True,
    )
    return result.exit_code


if __name__ == "__main__":
    raise SystemExit(asyncio.run(drain(sys.argv[1])))
