"""How a processor starts in-process shipping without the spool importing the shipper.

``SpoolProcessor(path, ship=True)`` asks for the embedded shipper registered under the entry
point group ``spool_ship.embedded`` (the ``shipper`` package registers itself there), so
imports still point one way: ``cli -> shipper -> spool``.
"""

from __future__ import annotations

from typing import Protocol

from .config import SpoolConfig

__all__ = ["ENTRY_POINT_GROUP", "ShippingHandle", "start_shipping"]

ENTRY_POINT_GROUP = "spool_ship.embedded"


class ShippingHandle(Protocol):
    """A running in-process shipper, shared by the processors of one spool."""

    def release(self, timeout: float) -> None:
        """Drop this processor's use; the last one ships what it can within ``timeout``."""


def start_shipping(config: SpoolConfig, shipper_config: object | None) -> ShippingHandle:
    """Start (or join) the process's shipper for ``config.path``."""
    # Here, not at the top: importlib.metadata costs a tenth of a second at startup, and
    # only ship=True needs it (``spool-ship status`` imports the spool too).
    from importlib.metadata import entry_points

    found = entry_points(group=ENTRY_POINT_GROUP)
    if not found:
        raise RuntimeError(
            f"ship=True needs the shipper, registered under the entry point group "
            f"{ENTRY_POINT_GROUP!r}; reinstall spool-ship"
        )
    start = next(iter(found)).load()
    handle: ShippingHandle = start(config, shipper_config)
    return handle
