"""Event-loop stalls during one audit write (issue 12, the c=1 latency tail).

A ticker task records the gaps between its turns on the loop while ``Store.write_usage_rows``
writes N rows; prints the write time and the longest gaps for the last repetitions.

    PYTHONPATH=src .venv/bin/python bench/audit_stall.py 300            # interpreter default
    PYTHONPATH=src .venv/bin/python bench/audit_stall.py 300 0.0005     # GIL switch interval
    URL=postgresql+asyncpg://postgres@127.0.0.1/test ...                # another store

Noise: a gap also includes the OS preempting the process; run on a quiet box.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
import uuid
from typing import Any

from lockgate.store.store import Store

REPEATS, SHOWN = 20, 5


def row() -> dict[str, Any]:
    return {"request_id": "req_" + uuid.uuid4().hex, "created_at": time.time(),
            "key_id": "k1", "team_id": "t1", "model": "gpt", "deployment": "d",
            "kind": "chat", "source": "api", "status": 200, "error_class": None,
            "prompt_tokens": 10, "completion_tokens": 20, "cost": 0.001, "latency_ms": 1.0,
            "overhead_ms": 0.2, "stream": False, "cached": False, "request_body": None,
            "response_body": None, "detail": None}


async def main(n: int) -> None:
    url = os.environ.get("URL") or f"sqlite+aiosqlite:///{tempfile.mkdtemp()}/stall.db"
    store = await Store.open(url)
    gaps: list[float] = []
    running = True

    async def ticker() -> None:
        last = time.perf_counter()
        while running:
            await asyncio.sleep(0)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    tick = asyncio.ensure_future(ticker())
    await asyncio.sleep(0.01)
    for rep in range(REPEATS):
        rows = [row() for _ in range(n)]
        gaps.clear()
        t0 = time.perf_counter()
        await store.write_usage_rows(rows)
        took = time.perf_counter() - t0
        if rep >= REPEATS - SHOWN:
            longest = sorted((round(g * 1000, 2) for g in gaps if g > 0.0005), reverse=True)
            print(f"N={n} write {took * 1000:.2f} ms, longest loop gaps (ms): {longest[:8]}")
    running = False
    await tick
    await store.close()


if __name__ == "__main__":
    if len(sys.argv) > 2:
        sys.setswitchinterval(float(sys.argv[2]))
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 300))
