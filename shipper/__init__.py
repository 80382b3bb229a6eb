"""shipper: claims span events from the spool and upserts them to Scale GP.

>>> from shipper import Shipper, ShipperConfig
>>> async with Shipper("/var/lib/agent/spool.db", ShipperConfig.from_env()) as shipper:
...     result = await shipper.drain(timeout=60)
"""

from __future__ import annotations

from ._errors import ShipperConfigError, ShipperError
from .classify import Action, Verdict, classify, parse_retry_after
from .concurrency import AdaptiveConcurrency, AimdSettings, Signal
from .config import ShipperConfig
from .lifecycle import Shipper
from .results import DrainResult, Progress, StopReason
from .retry import RetryPolicy
from .upload import SGPUploader, Uploader, batch_body, split_batches

__all__ = [
    "Action",
    "AdaptiveConcurrency",
    "AimdSettings",
    "DrainResult",
    "Progress",
    "RetryPolicy",
    "SGPUploader",
    "Shipper",
    "ShipperConfig",
    "ShipperConfigError",
    "ShipperError",
    "Signal",
    "StopReason",
    "Uploader",
    "Verdict",
    "batch_body",
    "classify",
    "parse_retry_after",
    "split_batches",
]
