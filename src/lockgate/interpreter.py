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

Memory (glibc's malloc; elsewhere these do nothing):

* :data:`MALLOC_ENV`, set by ``lockgate serve``/``up`` before the serving process starts
  (unless already set: the operator's values win): at most 2 malloc arenas instead of up to
  8 per core (the driver and ``to_thread`` threads each got their own, every one keeping
  freed memory), and a fixed 128 KiB mmap/trim threshold instead of glibc's sliding one
  (which grows to 32 MiB, after which large freed buffers stay in the heap).
* :func:`release_free_heap`: ``malloc_trim(0)``, giving the pages malloc holds free back to
  the system. The audit writer calls it once a large backlog has been written
  (:mod:`lockgate.store.audit_writer`): the queued records' memory is free then but stays
  resident otherwise. Python's own small-object arenas are not affected (CPython returns
  an arena only when all of it is free).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import sys
from collections.abc import Callable, MutableMapping
from typing import Final

__all__ = ["GC_THRESHOLDS", "GIL_SWITCH_INTERVAL", "MALLOC_ENV", "apply_malloc_env",
           "release_free_heap", "settle_after_startup"]

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


MALLOC_ENV: Final = {
    "MALLOC_ARENA_MAX": "2",
    "MALLOC_MMAP_THRESHOLD_": "131072",
    "MALLOC_TRIM_THRESHOLD_": "131072",
}
"""glibc malloc tunables for a serving process (read by the C library at process start)."""


def apply_malloc_env(environ: MutableMapping[str, str]) -> None:
    """Put :data:`MALLOC_ENV` into ``environ`` (of a process about to be started), keeping
    any value already there."""
    for name, value in MALLOC_ENV.items():
        environ.setdefault(name, value)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """The C library's ``malloc_trim``, or None where there is none (not glibc)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return getattr(libc, "malloc_trim", None)


def release_free_heap() -> bool:
    """``malloc_trim(0)``: return the free pages of every malloc arena to the system. False
    where the C library has no ``malloc_trim`` (not glibc). Takes a few milliseconds on a
    heap of ~100 MB; call it off the event loop (``asyncio.to_thread``)."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
