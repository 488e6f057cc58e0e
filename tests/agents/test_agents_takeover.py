"""A run whose gateway is SIGKILLed mid-run is taken over by another gateway (its lease ran
out) and continued from its stored steps: a read that was in flight runs again; a write
that was in flight is never repeated -- its outcome is recorded as unknown, the model is
told and an alert is raised.

The killed gateway is a real ``lockgate serve`` subprocess; the tool is an HTTP service
(imported from an OpenAPI document) that holds the call until the test has killed it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from lockgate.agents import Tool, ToolContext
from lockgate.agents.store import RunStore
from lockgate.runtime import Runtime
from lockgate.settings import parse_config
from lockgate.testing.stub_upstream import StubUpstream
from tests.agents.conftest import MASTER, OPERATOR, MakeEnv, agent_config, call

BRAIN = "slow:650"  # every model turn takes 0.65 s: the turn is checkpointed before its tools
SRC = str(Path(__file__).resolve().parents[2] / "src")


class Plant:
    """The enterprise system: a read and a write endpoint; the first call of each can be
    held until :attr:`release` is set."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.hold = True
        self.arrived = threading.Event()
        self.release = threading.Event()
        plant = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return None

            def _answer(self, kind: str, doc: dict[str, Any]) -> None:
                plant.calls.append((kind, self.path))
                if plant.hold:
                    plant.hold = False
                    plant.arrived.set()
                    plant.release.wait(30)
                body = json.dumps(doc).encode()
                try:
                    self.send_response(200)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the caller died

            def do_GET(self) -> None:
                self._answer("read", {"pump": self.path.rsplit("/", 1)[-1], "temp_c": 91})

            def do_POST(self) -> None:
                n = int(self.headers.get("content-length") or 0)
                self.rfile.read(n)
                self._answer("write", {"pump": self.path.split("/")[-2], "open": False})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def spec(self, path: Path) -> Path:
        pump = {"name": "pump", "in": "path", "required": True, "schema": {"type": "string"}}
        path.write_text(json.dumps({
            "openapi": "3.0.3", "info": {"title": "plant", "version": "1"},
            "servers": [{"url": self.url}],
            "paths": {
                "/readings/{pump}": {"get": {"operationId": "getReading",
                                             "parameters": [pump],
                                             "responses": {"200": {"description": "ok"}}}},
                "/valves/{pump}/close": {"post": {"operationId": "closeValve",
                                                  "parameters": [pump],
                                                  "responses": {"200": {"description": "ok"}}}},
            }}))
        return path

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()


@pytest.fixture
def plant() -> Iterator[Plant]:
    p = Plant()
    yield p
    p.close()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(stub: StubUpstream, home: Path, database_url: str, spec: Path) -> str:
    return agent_config(stub.base_url, home, database_url, BRAIN, f"""
  lease_s: 1.5
  tools:
    openapi:
      plant: {{spec: "{spec}", timeout_s: 60}}
  agents:
    ops:
      model: brain
      tools: ["plant__*"]
      mode: autonomous
      timeout_s: 120
""")


def _gateway(cfg: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": SRC}
    for k in ("LOCKGATE_CONFIG", "LOCKGATE_EMBEDDED_WORKER", "LOCKGATE_QUEUE_URL"):
        env.pop(k, None)
    proc = subprocess.Popen([sys.executable, "-m", "lockgate", "serve", "-c", str(cfg),
                             "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the gateway exited"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("the gateway did not become healthy")


async def _kill_mid_call(stub: StubUpstream, plant: Plant, tmp_path: Path, database_url: str,
                         replies: list[dict[str, Any]]) -> tuple[str, Runtime]:
    """Start a run on a subprocess gateway, SIGKILL it while the tool call is in flight,
    then start another gateway (in this process) that takes the run over."""
    stub.replies.pop(BRAIN, None)
    stub.script_replies(BRAIN, replies)
    spec = plant.spec(tmp_path / "plant.json")
    home_a = tmp_path / "a"
    home_a.mkdir()
    cfg_a = home_a / "lockgate.yaml"
    cfg_a.write_text(_config(stub, home_a, database_url, spec))
    port = _free_port()
    proc = await asyncio.to_thread(_gateway, cfg_a, port)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30,
                                     headers={"authorization": f"Bearer {MASTER}"}) as http:
            resp = await http.post("/v1/agents/ops/runs", json={"input": "check p1"})
            assert resp.status_code == 202, resp.text
            run_id = resp.json()["id"]
        assert await asyncio.to_thread(plant.arrived.wait, 60), "the tool was never called"
        proc.send_signal(signal.SIGKILL)  # mid-call: no shutdown, no last save
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    plant.release.set()
    home_b = tmp_path / "b"
    rt = await Runtime.start(parse_config(_config(stub, home_b, database_url, spec)),
                             jobs=False, monitor=True, warm_up=False)
    return run_id, rt


async def _final(rt: Runtime, run_id: str, timeout: float = 60.0) -> Any:
    store = RunStore(rt.store)
    deadline = time.monotonic() + timeout
    while True:
        run = await store.get(run_id)
        if run.final or time.monotonic() > deadline:
            return run
        await asyncio.sleep(0.1)


async def test_a_read_in_flight_is_run_again_by_the_gateway_that_takes_over(
        stub: StubUpstream, plant: Plant, tmp_path: Path, database_url: str) -> None:
    run_id, rt = await _kill_mid_call(stub, plant, tmp_path, database_url, [
        {"tool_calls": [call("plant__getReading", pump="p1")]},
        {"content": "p1 runs hot at 91 C"}])
    try:
        run = await _final(rt, run_id)
        assert run.state == "succeeded", run.error
        assert run.output == "p1 runs hot at 91 C"
        assert [k for k, _ in plant.calls] == ["read", "read"]  # read again after takeover
        steps = await RunStore(rt.store).steps(run_id)
        assert [(s.kind, s.status) for s in steps] == [("model", "ok"), ("tool", "ok"),
                                                       ("model", "ok")]
        assert [s.seq for s in steps] == [0, 1, 2]
    finally:
        await rt.aclose()


async def test_a_write_in_flight_is_never_repeated_its_outcome_is_unknown(
        stub: StubUpstream, plant: Plant, tmp_path: Path, database_url: str) -> None:
    run_id, rt = await _kill_mid_call(stub, plant, tmp_path, database_url, [
        {"tool_calls": [call("plant__closeValve", pump="p1")]},
        {"content": "the valve may or may not be closed; please check"}])
    try:
        run = await _final(rt, run_id)
        assert run.state == "succeeded", run.error
        assert [k for k, _ in plant.calls] == ["write"]  # exactly once, never re-run
        steps = await RunStore(rt.store).steps(run_id)
        tool = next(s for s in steps if s.kind == "tool")
        assert tool.status == "unknown" and tool.name == "plant__closeValve"
        tool_msgs = [m["content"] for m in run.messages if m["role"] == "tool"]
        assert "outcome of plant__closeValve is unknown" in tool_msgs[0]
        assert rt.alerts is not None
        kinds: set[str] = set()
        for _ in range(50):
            kinds = {a.kind for a in await rt.alerts.list()}
            if "agent_write_unknown" in kinds:
                break
            await asyncio.sleep(0.1)
        assert "agent_write_unknown" in kinds
    finally:
        await rt.aclose()


async def test_a_live_run_keeps_its_lease_and_is_not_taken_over(make_env: MakeEnv) -> None:
    """A process that steps a run longer than ``lease_s`` renews its lease (also without a
    recovery loop, as the CLI): another gateway's recovery leaves the run alone."""
    agents = """
  lease_s: 0.6
  grants: {teams: {ops: ["*"]}}
  agents:
    slow: {model: brain, tools: [slow_read], mode: autonomous}
"""
    a = await make_env(agents)
    b = await make_env(agents, brain=a.brain)
    assert a.rt.agents is not None and b.rt.agents is not None
    calls: list[str] = []

    async def slow_read(args: dict[str, Any], ctx: ToolContext) -> Any:
        calls.append(ctx.run_id)
        await asyncio.sleep(2.5)  # four leases long
        return {"ok": True}

    a.rt.agents.add_tool(Tool(name="slow_read", description="slow", klass="read",
                              parameters={"type": "object"}, call=slow_read))
    a.script({"tool_calls": [call("slow_read")]}, {"content": "done slowly"})
    run = await a.rt.agents.start("slow", "go", OPERATOR)
    task = asyncio.create_task(a.rt.agents.advance(run))
    taken = 0
    while not task.done():
        taken += await b.rt.agents.recover()
        await asyncio.sleep(0.2)
    done = await task
    assert taken == 0 and done.state == "succeeded" and calls == [run.id]
