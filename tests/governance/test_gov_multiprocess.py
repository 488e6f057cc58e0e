"""Two OS processes reserve against one Redis budget: never more than the limit is held."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest
from gov_support import REDIS_URL

from lockgate.governance import Governor, Scope
from lockgate.settings import BudgetConfig
from lockgate.state.redis_state import RedisState

NOW = 1_900_000_000.0
SRC = str(Path(__file__).resolve().parents[2] / "src")

CHILD = r"""
import asyncio, random, sys
from lockgate.governance import BudgetExceeded, Governor, Scope
from lockgate.settings import BudgetConfig
from lockgate.state.redis_state import RedisState

async def main(url, prefix):
    state = RedisState(url, prefix, timeout=5.0)
    gov = Governor(state, clock=lambda: 1_900_000_000.0)
    team = Scope("team", "shared", budget=BudgetConfig(daily=0.0005))  # 500 micro-units

    async def one():
        await asyncio.sleep(random.random() * 0.2)  # spread so the two processes interleave
        try:
            return await gov.admit([team], tokens=1, cost=0.00001)  # reserve 10
        except BudgetExceeded:
            return None

    print("ready", flush=True)
    sys.stdin.readline()
    tickets = [t for t in await asyncio.gather(*(one() for _ in range(50))) if t]
    print(len(tickets), flush=True)
    sys.stdin.readline()
    await asyncio.gather(*(t.settle(cost=0.000012) for t in tickets))  # true cost 12 each
    print("settled", flush=True)
    await state.close()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


@pytest.mark.redis
async def test_two_processes_share_one_budget(redis_prefix: str) -> None:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", CHILD, REDIS_URL, redis_prefix,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env,
        )
        for _ in range(2)
    ]

    async def line(p: asyncio.subprocess.Process) -> str:
        assert p.stdout is not None
        return (await asyncio.wait_for(p.stdout.readline(), 60)).decode().strip()

    async def send(msg: bytes) -> None:
        for p in procs:
            assert p.stdin is not None
            p.stdin.write(msg)
            await p.stdin.drain()

    state = RedisState(REDIS_URL, redis_prefix, timeout=5.0)
    gov = Governor(state, clock=lambda: NOW)
    team = Scope("team", "shared", budget=BudgetConfig(daily=0.0005))
    try:
        assert [await line(p) for p in procs] == ["ready", "ready"]
        await send(b"start\n")  # both processes reserve at the same moment
        granted = [int(await line(p)) for p in procs]
        assert sum(granted) == 50  # 500 / 10: exactly the limit, across processes
        [st] = await gov.budgets.status(team)
        assert (st.spent, st.reserved) == (0.0, 0.0005)
        await send(b"go\n")
        assert [await line(p) for p in procs] == ["settled", "settled"]
        [st] = await gov.budgets.status(team)
        # overspend is bounded by the in-flight reservations' underestimate (50 x 2)
        assert st.reserved == 0.0 and st.spent == pytest.approx(0.0006)
        assert st.spent <= 0.0005 + 50 * 0.000002 + 1e-12
        for p in procs:
            assert await asyncio.wait_for(p.wait(), 30) == 0
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()
        await state.close()
