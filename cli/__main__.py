"""``python -m cli``: the same as the ``spool-ship`` script."""

from __future__ import annotations

from .app import main

__all__: list[str] = []

main()
