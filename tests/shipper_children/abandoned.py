"""Child process: open a shipper, fail part way, and never close it, as a test or an agent
whose task raised would leave it.

    python tests/shipper_children/abandoned.py SPOOL_PATH

Prints ``abandoned`` once ``asyncio.run`` has returned with the shipper still referenced (a
failed task's traceback keeps it alive); the interpreter must then exit by itself.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from shipper import Shipper, ShipperConfig
from spool import SpoolConfig

KEPT: list[Shipper] = []


async def main(path: str) -> None:
    shipper = Shipper(
        SpoolConfig(path=Path(path)),
        ShipperConfig(api_key="k", account_id="a", base_url="http://127.0.0.1:9"),
    )
    await shipper.open()
    await shipper.spool.stats()
    KEPT.append(shipper)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
    print("abandoned", flush=True)
