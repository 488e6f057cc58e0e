"""Agents under test: a Runtime (SQLite and PostgreSQL) whose model is the stand-in upstream
with scripted tool-call answers, and in-process tools that record what they were asked."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from lockgate.agents import Tool, ToolContext, ToolFailed
from lockgate.pipeline import EndUser, Principal
from lockgate.runtime import Runtime
from lockgate.settings import parse_config
from lockgate.testing.stub_upstream import StubUpstream, run_stub_in_thread
from tests.support.postgres import fresh_database

MASTER = "test-master-key-0123456789"
OPERATOR = Principal(key_id="master", team_id=None, is_master=True, key_name="master")
OPS = Principal(key_id="key-ops", team_id="team-ops", team_name="ops", key_name="ops-key")


@pytest.fixture(scope="session")
def stub() -> Iterator[StubUpstream]:
    with run_stub_in_thread() as s:
        yield s


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def db_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(db_kind: str, tmp_path: Path) -> Iterator[str]:
    if db_kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'lockgate.db'}"
    else:
        yield from fresh_database("lg_agents")


def agent_config(upstream: str, home: Path, database_url: str, brain: str, agents_yaml: str,
                 extra: str = "") -> str:
    return f"""
master_key: {MASTER}
home: {home}
database_url: {database_url}
audit: {{flush_interval_ms: 50}}
review: {{sweep_interval_s: 0.2}}
models:
  - name: brain
    provider: openai
    base_url: {upstream}/v1
    model: {brain}
    max_retries: 0
    pricing: {{input_per_mtok: 1000.0, output_per_mtok: 1000.0}}
{extra}
agents:
{agents_yaml}
"""


@dataclass
class Recorder:
    """In-process tools that record their calls (the 'enterprise system' of a test)."""

    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    fail: set[str] = field(default_factory=set)

    def tool(self, name: str, klass: str, schema: dict[str, Any] | None = None,
             result: Callable[[dict[str, Any]], Any] | None = None) -> Tool:
        async def call(args: dict[str, Any], ctx: ToolContext) -> Any:
            self.calls.append((name, args))
            if name in self.fail:
                raise ToolFailed("the system is down")
            return result(args) if result else {"ok": True, "tool": name, "args": args}

        return Tool(name=name, description=f"test tool {name}",
                    parameters=schema or {"type": "object", "properties": {
                        "pump": {"type": "string"}}, "required": ["pump"]},
                    klass=klass, call=call)  # type: ignore[arg-type]

    def names(self) -> list[str]:
        return [n for n, _ in self.calls]


@dataclass
class AgentEnv:
    rt: Runtime
    stub: StubUpstream
    brain: str
    rec: Recorder

    def script(self, *replies: dict[str, Any]) -> None:
        self.stub.script_replies(self.brain, list(replies))

    async def run(self, agent: str, text: str, principal: Principal = OPERATOR,
                  end_user: EndUser | None = None) -> Any:
        svc = self.rt.agents
        assert svc is not None
        run = await svc.start(agent, text, principal, end_user=end_user)
        return await svc.advance(run)


def call(name: str, **args: Any) -> dict[str, Any]:
    return {"name": name, "arguments": args}


MakeEnv = Callable[..., Awaitable[AgentEnv]]


@pytest.fixture
async def make_env(stub: StubUpstream, database_url: str, tmp_path: Path
                   ) -> AsyncIterator[MakeEnv]:
    made: list[Runtime] = []

    async def make(agents_yaml: str, extra: str = "", tools: bool = True,
                   brain: str | None = None) -> AgentEnv:
        brain = brain or "agent-brain-" + uuid.uuid4().hex[:8]
        home = tmp_path / f"home{len(made)}"
        cfg = parse_config(agent_config(stub.base_url, home, database_url, brain, agents_yaml,
                                        extra))
        rt = await Runtime.start(cfg, jobs=False, warm_up=False)
        made.append(rt)
        rec = Recorder()
        if tools:
            assert rt.agents is not None
            rt.agents.add_tool(rec.tool("read_pump", "read"))
            rt.agents.add_tool(rec.tool("set_point", "write", {
                "type": "object", "properties": {"pump": {"type": "string"},
                                                 "value": {"type": "number", "maximum": 100}},
                "required": ["pump", "value"], "additionalProperties": False}))
            rt.agents.add_tool(rec.tool("delete_account", "write", {
                "type": "object", "properties": {"account": {"type": "string"}},
                "required": ["account"]}))
        return AgentEnv(rt, stub, brain, rec)

    yield make
    for rt in made:
        await rt.aclose()
