"""The spool package's public surface (httpx ``tests/test_exported_members.py`` style)."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
from types import ModuleType

import pytest

import spool

MODULES = sorted(m.name for m in pkgutil.iter_modules(spool.__path__, prefix="spool."))


def test_every_name_in_all_exists() -> None:
    missing = [name for name in spool.__all__ if not hasattr(spool, name)]
    assert missing == []
    assert len(spool.__all__) == len(set(spool.__all__))


def test_every_public_name_is_in_all() -> None:
    public = {
        name
        for name, value in vars(spool).items()
        if not name.startswith("_")
        and not isinstance(value, ModuleType)
        and name != "annotations"  # from __future__
    }
    assert public | {"ops"} == set(spool.__all__)


def test_the_package_has_the_expected_modules() -> None:
    assert {"spool.ops", "spool.store", "spool.processor", "spool.config"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_every_module_sets_all_and_defines_it(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert isinstance(exported, list), f"{name} does not set __all__"
    assert [n for n in exported if not hasattr(module, n)] == []


def test_the_spool_never_imports_http_or_the_sdk() -> None:
    """DESIGN.md: imports point one way, and the spool knows SQLite, not HTTP."""
    code = (
        "import sys, spool, spool.processor, spool.store, spool.ops\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('httpx', 'scale_gp_beta', 'shipper', 'cli', 'tenacity', 'opentelemetry'))\n"
        "print(','.join(bad))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""
