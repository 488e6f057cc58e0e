"""settle_after_startup: start-up objects frozen, young collections rarer, short GIL interval
(run in a child interpreter: the settings are process-wide)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from lockgate.interpreter import GC_THRESHOLDS, GIL_SWITCH_INTERVAL

CHILD = """
import gc, json, sys
before = gc.get_threshold()
from lockgate.interpreter import settle_after_startup
settle_after_startup()
print(json.dumps({"before": before, "after": gc.get_threshold(),
                  "frozen": gc.get_freeze_count(), "switch": sys.getswitchinterval()}))
"""


def test_settle_after_startup_sets_the_process_up() -> None:
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                         check=True, timeout=60)
    seen = json.loads(out.stdout)
    assert seen["before"] == [700, 10, 10]  # CPython's defaults: the call changes them
    assert tuple(seen["after"]) == GC_THRESHOLDS
    assert seen["frozen"] > 0
    assert seen["switch"] == GIL_SWITCH_INTERVAL


TRIM_CHILD = """
import json
from lockgate.interpreter import release_free_heap
def rss():
    return int(open('/proc/self/statm').read().split()[1]) * 4096
keep = []
junk = [bytes(2000) + bytes([i % 256]) for i in range(40_000)]  # ~80 MB from malloc
for i in range(0, len(junk), 50):
    keep.append(junk[i])  # one survivor per 50: the heap cannot shrink from its top
del junk
before = rss()
ok = release_free_heap()
print(json.dumps({"ok": ok, "before": before, "after": rss()}))
"""


def test_release_free_heap_returns_freed_memory_to_the_system() -> None:
    # glibc with the default (sliding) thresholds, as a process not started by lockgate serve
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", TRIM_CHILD], capture_output=True, text=True,
                         check=True, timeout=60, env=env)
    seen = json.loads(out.stdout)
    assert seen["ok"] is True
    assert seen["before"] - seen["after"] > 30 * 2**20, seen


def test_serve_starts_the_server_with_the_malloc_settings(monkeypatch: Any) -> None:
    from lockgate.interpreter import MALLOC_ENV, apply_malloc_env

    env = {"MALLOC_ARENA_MAX": "4"}
    apply_malloc_env(env)
    assert env["MALLOC_ARENA_MAX"] == "4"  # the operator's value stays
    assert env["MALLOC_TRIM_THRESHOLD_"] == MALLOC_ENV["MALLOC_TRIM_THRESHOLD_"]
