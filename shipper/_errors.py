"""Errors raised by the shipper.

    ShipperError
    └── ShipperConfigError    credentials or endpoint missing or unusable

Transport and endpoint failures are not raised: :func:`shipper.classify` turns each into an
:class:`~shipper.classify.Verdict` that the loop acts on.
"""

from __future__ import annotations

__all__ = ["ShipperConfigError", "ShipperError"]


class ShipperError(Exception):
    """Root of every error the shipper raises."""


class ShipperConfigError(ShipperError):
    """Credentials or endpoint are missing or unusable; the message names the variable."""
