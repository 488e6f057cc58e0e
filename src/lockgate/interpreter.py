"""Interpreter settings for a long-running lockgate process (gateway, worker, facade).

:func:`settle_after_startup` is called once start-up is done:

* ``gc.collect()`` then ``gc.freeze()``: start-up leaves ~140k long-lived objects (FastAPI,
  SQLAlchemy, pydantic); full collections walking them stalled the event loop 40-200 ms
  every 1-2 s under load (bench/RESULTS.md, hot-path findings).
* ``gc.set_threshold(*GC_THRESHOLDS)``: a young-generation collection after 10,000 net
  container allocations instead of 700. Reference counting frees almost everything a request
  allocates; what a young collection walks is what is alive at that moment (the requests in
  flight, queued audit records), about the same whatever the threshold, so collecting 14x
  less often removes most of that work: +8 % requests/s at c=64 in a same-run A/B with 5,000,
  20,000 and 50,000 all alike (bench/RESULTS.md, issue 12, fifth pass). Reference cycles
  (tracebacks) wait a little longer for their collection.
* ``sys.setswitchinterval(GIL_SWITCH_INTERVAL)``: the event loop shares the GIL with the
  database driver threads (aiosqlite's connection thread, ``asyncio.to_thread`` work). At
  CPython's default of 5 ms, an audit batch of a few hundred rows kept the loop waiting for
  the GIL for 5-12 ms at a time, in a 300-row write measured on its own (bench/RESULTS.md,
  issue 12: the c=1 latency tail); at 0.5 ms the longest wait was ~2 ms, and the write itself
  was faster. A waiting thread asks for the GIL after this interval, so it bounds how long
  the loop can be kept from running; it costs nothing while only one thread is busy.
"""

from __future__ import annotations

import gc
import sys
from typing import Final

__all__ = ["GC_THRESHOLDS", "GIL_SWITCH_INTERVAL", "settle_after_startup"]

GIL_SWITCH_INTERVAL: Final = 0.0005
"""Seconds (CPython's default is 0.005)."""
GC_THRESHOLDS: Final = (10_000, 10, 10)
"""``gc.set_threshold`` (CPython's default is 700, 10, 10)."""


def settle_after_startup() -> None:
    """Freeze start-up objects out of the collector's way, collect the young generation
    less often and shorten the GIL interval."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
