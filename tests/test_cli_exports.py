"""Every ``cli`` module declares its public names, and the package re-exports the app."""

from __future__ import annotations

import importlib

import pytest

import cli

MODULES = [
    "cli._errors",
    "cli._options",
    "cli._render",
    "cli.inspect",
    "cli.maintain",
]


@pytest.mark.parametrize("name", MODULES)
def test_module_all_names_exist(name: str) -> None:
    module = importlib.import_module(name)
    exported = module.__all__
    assert exported == sorted(exported, key=lambda n: (not n.isupper(), n))
    for attr in exported:
        assert hasattr(module, attr), f"{name}.{attr}"


def test_package_exports_the_app() -> None:
    assert cli.__all__ == ["app", "main"]
    assert callable(cli.main)
