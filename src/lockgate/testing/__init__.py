"""Test and benchmark support: stand-in upstream servers speaking provider wire protocols.

:class:`StubUpstream` (async start/stop) and :func:`run_stub_in_thread` (sync context
manager) are described in :mod:`lockgate.testing.stub_upstream`.
"""

from lockgate.testing.stub_upstream import StubUpstream, run_stub_in_thread

__all__ = ["StubUpstream", "run_stub_in_thread"]
