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
    """Names are imported on first use (PEP 562), so resolve them all before looking."""
    for name in spool.__all__:
        getattr(spool, name)
    public = {
        name
        for name, value in vars(spool).items()
        if not name.startswith("_")
        and not isinstance(value, ModuleType)
        and name != "annotations"  # from __future__
    }
    assert public | {"ops"} == set(spool.__all__)
    assert set(spool.__all__) <= set(dir(spool))


@pytest.mark.parametrize("name", spool.__all__)
def test_every_lazy_name_is_the_defining_modules_object(name: str) -> None:
    value = getattr(spool, name)
    module = importlib.import_module(f"spool.{spool._LAZY[name]}")
    assert value is (module if name == "ops" else getattr(module, name))


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        spool.nothing_here  # type: ignore[attr-defined]  # noqa: B018
    with pytest.raises(ImportError):
        exec("from spool import nothing_here", {})


def test_importing_the_package_loads_no_submodule() -> None:
    """Issue 13: ``spool-ship status`` pays only for the modules it uses. ``import spool``
    alone loads none of them, and ``from spool import EventState`` loads the model, not the
    processors, the write path, asyncio or orjson."""
    code = (
        "import sys\n"
        "import spool\n"
        "first = sorted(m for m in sys.modules if m.startswith('spool.'))\n"
        "from spool import EventState, SpoolConfig\n"
        "print(','.join(first))\n"
        "print(','.join(sorted(m for m in sys.modules if m.startswith('spool.'))))\n"
        "print(','.join(sorted(m for m in ('asyncio', 'orjson', 'aiosqlite') if m in sys.modules)))"
    )
    first, then, heavy = python_prints(code).split("\n")[:3]
    assert first == ""
    assert then == "spool._model,spool.config"
    assert heavy == ""


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
    assert python_prints(code).strip() == ""


def python_prints(code: str) -> str:
    """What ``code`` prints, run in a fresh interpreter (nothing imported yet)."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
