"""Test and benchmark support: stand-in upstream servers speaking provider wire protocols.

:class:`StubUpstream` (async start/stop) and :func:`run_stub_in_thread` (sync context
manager) are described in :mod:`lockgate.testing.stub_upstream`. They are imported lazily
so ``python -m lockgate.testing.stub_upstream`` runs without a double import.
"""

from __future__ import annotations

from typing import Any

__all__ = ["StubUpstream", "run_stub_in_thread"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from lockgate.testing import stub_upstream

        return getattr(stub_upstream, name)
    raise AttributeError(f"module 'lockgate.testing' has no attribute {name!r}")
