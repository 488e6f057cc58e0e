"""settle_after_startup: start-up objects frozen, young collections rarer, short GIL interval
(run in a child interpreter: the settings are process-wide)."""

from __future__ import annotations

import json
import subprocess
import sys

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
