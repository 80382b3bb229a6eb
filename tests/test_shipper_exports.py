"""The shipper package's public surface (httpx ``tests/test_exported_members.py`` style)."""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

import pytest

import shipper

MODULES = sorted(m.name for m in pkgutil.iter_modules(shipper.__path__, prefix="shipper."))


def test_every_name_in_all_exists() -> None:
    assert [name for name in shipper.__all__ if not hasattr(shipper, name)] == []
    assert len(shipper.__all__) == len(set(shipper.__all__))


def test_every_public_name_is_in_all() -> None:
    public = {
        name
        for name, value in vars(shipper).items()
        if not name.startswith("_")
        and not isinstance(value, ModuleType)
        and name != "annotations"  # from __future__
    }
    assert public == set(shipper.__all__)


def test_the_concurrency_controller_is_exported() -> None:
    assert {"AdaptiveConcurrency", "AimdSettings", "Signal"} <= set(shipper.__all__)


@pytest.mark.parametrize("name", MODULES)
def test_every_module_sets_all_and_defines_it(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert isinstance(exported, list), f"{name} does not set __all__"
    assert [n for n in exported if not hasattr(module, n)] == []
