"""Agent overhead per step, excluding model and tool time (target: <= 2 ms p50).

One process: a Runtime on a SQLite file (or ``--database-url``), the stand-in upstream on
loopback answering scripted tool calls, an autonomous agent with one in-process read tool
that returns at once. Each run makes ``--steps`` model turns that call the tool, then a
final answer. Per run::

    overhead per step = (run wall time - time inside the pipeline's chat calls
                         - time inside the tool) / model turns

so what is left is the agent's own work: listing permitted tools, building the turn,
parsing tool calls, schema checks, bounds, loop detection, recording steps and the one
store transaction per turn. The model-call time is printed beside it (side by side, one
run: compare the ratio, the machine is shared).

    PYTHONPATH=src .venv/bin/python bench/agents_bench.py --runs 40 --steps 5 [--record]

``--mcp N`` measures instead one MCP tool call (a stdio server, the official SDK on both
sides: ``tests/agents/mcp_fixture_server.py``), N calls each with the pooled session
(``pool: true``, the default) and with a session per call (``pool: false``: a server
process started, initialized and listed per call); the per-call saving is their difference.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lockgate.agents import Tool, ToolContext
from lockgate.pipeline import Call, Principal, Result
from lockgate.runtime import Runtime
from lockgate.settings import parse_config
from lockgate.testing.stub_upstream import StubUpstream

OPERATOR = Principal(key_id="bench", team_id=None, is_master=True)
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def config(upstream: str, home: Path, db: str, brain: str, steps: int) -> str:
    return f"""
master_key: bench-master-key-0123456789
home: {home}
database_url: {db}
audit: {{flush_interval_ms: 200}}
models:
  - name: brain
    provider: openai
    base_url: {upstream}/v1
    model: {brain}
    max_retries: 0
agents:
  agents:
    bench:
      model: brain
      tools: [probe]
      mode: autonomous
      max_steps: {steps + 2}
"""


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def bench(runs: int, steps: int, db: str | None) -> dict[str, float]:
    stub = StubUpstream()
    upstream = await stub.start()
    brain = "bench-" + uuid.uuid4().hex[:6]
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        url = db or f"sqlite:///{home / 'lockgate.db'}"
        rt = await Runtime.start(parse_config(config(upstream, home, url, brain, steps)),
                                 jobs=False, warm_up=False)
        try:
            svc = rt.agents
            assert svc is not None
            inside = {"model": 0.0, "tool": 0.0}
            chat = svc.deps.chat

            async def timed_chat(call: Call) -> Result:
                t0 = time.perf_counter()
                try:
                    return await chat(call)
                finally:
                    inside["model"] += time.perf_counter() - t0

            async def probe(args: dict[str, Any], ctx: ToolContext) -> Any:
                t0 = time.perf_counter()
                out = {"pump": args["pump"], "temperature_c": 71.5}
                inside["tool"] += time.perf_counter() - t0
                return out

            svc.deps.chat = timed_chat
            svc.add_tool(Tool(name="probe", description="read a pump",
                              parameters={"type": "object", "properties": {
                                  "pump": {"type": "string"}}, "required": ["pump"]},
                              klass="read", call=probe))
            per_step: list[float] = []
            model_per_turn: list[float] = []
            for r in range(runs + 3):  # 3 warm-up runs
                replies: list[dict[str, Any]] = [
                    {"tool_calls": [{"name": "probe", "arguments": {"pump": f"p{r}-{i}"}}]}
                    for i in range(steps)]
                replies.append({"content": "done"})
                stub.script_replies(brain, replies)
                inside["model"] = inside["tool"] = 0.0
                t0 = time.perf_counter()
                run = await svc.start("bench", "check every pump", OPERATOR)
                run = await svc.advance(run)
                wall = time.perf_counter() - t0
                assert run.state == "succeeded", run.error
                turns = steps + 1
                if r >= 3:
                    per_step.append((wall - inside["model"] - inside["tool"]) / turns * 1000)
                    model_per_turn.append(inside["model"] / turns * 1000)
        finally:
            await rt.aclose()
            await stub.stop()
    p50 = statistics.median(per_step)
    model = statistics.median(model_per_turn)
    return {"runs": runs, "steps_per_run": steps + 1, "overhead_p50_ms": round(p50, 3),
            "overhead_p95_ms": round(pct(per_step, 0.95), 3),
            "model_call_p50_ms": round(model, 3),
            "overhead_to_model_ratio": round(p50 / model, 3) if model else 0.0,
            "target_p50_ms": 2.0, "met": p50 <= 2.0}


async def mcp_bench(calls: int) -> dict[str, Any]:
    import sys

    from lockgate.agents.mcp_client import McpTools
    from lockgate.agents.store import RunStore
    from lockgate.settings.agents import McpServerSpec
    from lockgate.store import Store

    server = Path(__file__).resolve().parents[1] / "tests/agents/mcp_fixture_server.py"
    ctx = ToolContext(principal=OPERATOR, acting_for=None, run_id="bench", agent="bench",
                      depth=0)

    async def alert(*_: Any) -> None:
        return None

    out: dict[str, Any] = {"calls": calls}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "desc.txt").write_text("Live temperature of a pump.")
        store = await Store.open(f"sqlite:///{tmp}/bench.db")
        try:
            for pool in (True, False):
                spec = McpServerSpec(transport="stdio", command=[sys.executable, str(server)],
                                     env={"MCP_FIXTURE_DESC": f"{tmp}/desc.txt",
                                          "MCP_FIXTURE_LOG": f"{tmp}/log.txt"}, pool=pool)
                mcp = McpTools("bench", spec, RunStore(store), alert)
                try:
                    tool = next(t for t in await mcp.tools() if t.name == "bench__lookup")
                    await tool.call({"pump": "p0"}, ctx)  # warm-up (and the pool's connect)
                    took: list[float] = []
                    for i in range(calls):
                        t0 = time.perf_counter()
                        await tool.call({"pump": f"p{i}"}, ctx)
                        took.append((time.perf_counter() - t0) * 1000)
                finally:
                    await mcp.aclose()
                name = "pooled" if pool else "per_call_session"
                out[f"{name}_p50_ms"] = round(statistics.median(took), 3)
                out[f"{name}_sessions"] = mcp.connects
        finally:
            await store.close()
    out["saving_per_call_ms"] = round(out["per_call_session_p50_ms"] - out["pooled_p50_ms"], 3)
    out["speedup"] = round(out["per_call_session_p50_ms"] / out["pooled_p50_ms"], 1)
    return out


def record(result: dict[str, Any], command: str) -> None:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"\n\n## Agents: overhead per step — {now}\n",
             f"`{command}` on {platform.node()} ({platform.machine()}, shared 2 cores, "
             f"load average {os.getloadavg()[0]:.1f})\n",
             "| measure | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in result.items()]
    lines.append("\nOverhead = run wall time minus time inside the pipeline's chat calls and "
                 "the tool, per model turn (SQLite store: the run row at start, at most every "
                 "0.5 s of read-only turns, at the end). Compare the ratio to the model call "
                 "within one run: on a loaded machine the store's transactions wait for CPU.")
    with RESULTS.open("a") as f:
        f.write("\n".join(lines) + "\n")


def record_mcp(result: dict[str, Any], command: str) -> None:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"\n\n## Agents: MCP tool call, pooled session vs a session per call — {now}\n",
             f"`{command}` on {platform.node()} ({platform.machine()}, shared 2 cores, "
             f"load average {os.getloadavg()[0]:.1f})\n",
             "| measure | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in result.items()]
    lines.append("\nOne stdio MCP server (official SDK); a call with a session per call starts "
                 "the server, initializes and lists the tools (pin check) each time; the pooled "
                 "call reuses one session. Same run, same machine: compare the ratio.")
    with RESULTS.open("a") as f:
        f.write("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--database-url", default=None)
    ap.add_argument("--record", action="store_true", help="append to bench/RESULTS.md")
    ap.add_argument("--mcp", type=int, default=0, metavar="N",
                    help="measure N MCP tool calls, pooled vs a session per call")
    args = ap.parse_args()
    if args.mcp:
        result = asyncio.run(mcp_bench(args.mcp))
        for k, v in result.items():
            print(f"{k}: {v}")
        if args.record:
            record_mcp(result, f"PYTHONPATH=src .venv/bin/python bench/agents_bench.py "
                               f"--mcp {args.mcp} --record")
        return
    result = asyncio.run(bench(args.runs, args.steps, args.database_url))
    for k, v in result.items():
        print(f"{k}: {v}")
    if args.record:
        record(result, f"PYTHONPATH=src .venv/bin/python bench/agents_bench.py --runs "
                       f"{args.runs} --steps {args.steps} --record")


if __name__ == "__main__":
    main()
