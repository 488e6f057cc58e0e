"""A fixture for in-process CLI runs that read rich tables."""

from __future__ import annotations

import pytest


@pytest.fixture
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's rich console reads COLUMNS once, when first imported (maybe by another
    test in this process): give it a width that shows whole ids for the in-process runs."""
    from lockgate.cli import common

    monkeypatch.setattr(common.console, "width", 250)
