"""Tool sources and grants defined over the admin API (beside those of ``lockgate.yaml``).

A source is ``(kind, name, spec)`` with ``kind`` one of ``openapi``, ``rag``, ``sql``,
``mcp`` and ``spec`` the same object as under ``agents.tools.<kind>.<name>`` in
``lockgate.yaml`` (validated by the same models). A grant is ``(part, subject, tools)``
with ``part`` one of ``teams``, ``keys``, ``end_users`` as under ``agents.grants``.
Both are stored (``agent_tool_sources``, ``agent_grants``) and read by every gateway.

Precedence: ``lockgate.yaml`` wins. A source name or a grant subject that ``lockgate.yaml``
defines cannot be created, changed or deleted over the API (409); the API adds sources
and subjects beside those of the file.

:class:`SourceBuilder` turns a spec into tools (an OpenAPI document read, a SQL engine
made, an MCP client created -- it connects on first listing, not here);
:class:`ApiSources` keeps the built API sources of this process in step with the store.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
import sqlalchemy as sa
from pydantic import BaseModel, ValidationError

from lockgate.agents.model import BadAgentInput
from lockgate.agents.store import RunStore
from lockgate.agents.tools import Tool
from lockgate.settings import resolve_secret
from lockgate.settings.agents import (
    AgentGrants,
    McpServerSpec,
    OpenApiSource,
    RagToolSpec,
    SqlToolSpec,
)
from lockgate.store import Store
from lockgate.store.tables import agent_grants, agent_tool_sources

if TYPE_CHECKING:
    from lockgate.agents.mcp_client import McpTools
    from lockgate.agents.openapi_tools import HttpTools
    from lockgate.rag import RagService

__all__ = ["GRANT_PARTS", "KINDS", "ApiSources", "Built", "SourceBuilder", "SourceStore",
           "merge_grants", "redact"]

log = logging.getLogger("lockgate.agents")
KINDS: dict[str, type[BaseModel]] = {"openapi": OpenApiSource, "rag": RagToolSpec,
                                     "sql": SqlToolSpec, "mcp": McpServerSpec}
GRANT_PARTS = ("teams", "keys", "end_users")
MCP_RETRY_S = 30.0
"""An API-defined MCP server that could not be listed is tried again after this long."""
Alert = Callable[[str, str, str, dict[str, Any]], Awaitable[None]]


def _secret_shown(value: str) -> str:
    return value if value.startswith("env:") else "***"


def redact(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    """A spec as shown by the API: literal secrets masked (``env:NAME`` references shown)."""
    out = dict(spec)
    if kind == "sql" and isinstance(out.get("url"), str) and not out["url"].startswith("env:"):
        with contextlib.suppress(Exception):
            out["url"] = sa.engine.make_url(out["url"]).render_as_string(hide_password=True)
    if kind == "openapi" and isinstance(out.get("auth"), dict):
        auth = dict(out["auth"])
        if isinstance(auth.get("value"), str):
            auth["value"] = _secret_shown(auth["value"])
        out["auth"] = auth
    if kind == "mcp":
        for part in ("headers", "env"):
            if isinstance(out.get(part), dict):
                out[part] = {k: _secret_shown(str(v)) for k, v in out[part].items()}
    return out


def merge_grants(base: AgentGrants, extra: dict[tuple[str, str], list[str]]) -> AgentGrants:
    """``lockgate.yaml``'s grants plus the API's (a subject of the file is never replaced)."""
    parts: dict[str, dict[str, list[str]]] = {p: dict(getattr(base, p)) for p in GRANT_PARTS}
    for (part, subject), tools in extra.items():
        if part in parts and subject not in getattr(base, part):
            parts[part][subject] = tools
    return AgentGrants.model_construct(teams=parts["teams"], keys=parts["keys"],
                                       end_users=parts["end_users"])


class SourceStore:
    """``agent_tool_sources`` and ``agent_grants``."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def sources(self) -> dict[str, tuple[str, dict[str, Any]]]:
        async with self.store.engine.connect() as conn:
            rows = (await conn.execute(sa.select(agent_tool_sources))).mappings().all()
        return {r["name"]: (r["kind"], orjson.loads(r["spec"])) for r in rows}

    async def put_source(self, name: str, kind: str, spec: dict[str, Any],
                         who: str | None) -> None:
        t = agent_tool_sources
        values = {"kind": kind, "spec": orjson.dumps(spec).decode(), "updated_at": time.time(),
                  "updated_by": who}
        async with self.store.transaction(write=True) as conn:
            res = await conn.execute(t.update().where(t.c.name == name).values(**values))
            if not res.rowcount:
                await conn.execute(t.insert().values(name=name, **values))

    async def delete_source(self, name: str) -> bool:
        t = agent_tool_sources
        async with self.store.transaction(write=True) as conn:
            res = await conn.execute(t.delete().where(t.c.name == name))
            return bool(res.rowcount)

    async def grants(self) -> dict[tuple[str, str], list[str]]:
        async with self.store.engine.connect() as conn:
            rows = (await conn.execute(sa.select(agent_grants))).mappings().all()
        return {(r["part"], r["subject"]): list(orjson.loads(r["tools"])) for r in rows}

    async def put_grant(self, part: str, subject: str, tools: list[str],
                        who: str | None) -> None:
        t = agent_grants
        values = {"tools": orjson.dumps(tools).decode(), "updated_at": time.time(),
                  "updated_by": who}
        async with self.store.transaction(write=True) as conn:
            res = await conn.execute(t.update().where(t.c.part == part, t.c.subject == subject)
                                     .values(**values))
            if not res.rowcount:
                await conn.execute(t.insert().values(part=part, subject=subject, **values))

    async def delete_grant(self, part: str, subject: str) -> bool:
        t = agent_grants
        async with self.store.transaction(write=True) as conn:
            res = await conn.execute(t.delete().where(t.c.part == part,
                                                      t.c.subject == subject))
            return bool(res.rowcount)


@dataclass
class Built:
    """One source's tools and what must be closed with it."""

    kind: str
    spec: BaseModel
    raw: dict[str, Any]
    tools: list[Tool] = field(default_factory=list)
    http: HttpTools | None = None
    mcp: McpTools | None = None
    engine: Any = None
    mcp_tried: float = float("-inf")

    async def aclose(self) -> None:
        if self.http is not None:
            await self.http.aclose()
        if self.mcp is not None:
            with contextlib.suppress(Exception):
                await self.mcp.aclose()
        if self.engine is not None:
            with contextlib.suppress(Exception):
                await self.engine.dispose()


class SourceBuilder:
    def __init__(self, rag: RagService | None, runs: RunStore, alert: Alert) -> None:
        self.rag = rag
        self.runs = runs
        self.alert = alert

    @staticmethod
    def validate(kind: str, raw: Any) -> BaseModel:
        model = KINDS.get(kind)
        if model is None:
            raise BadAgentInput(f"Unknown tool source kind '{kind[:40]}' (one of "
                                f"{', '.join(KINDS)}).", param="kind")
        if not isinstance(raw, dict):
            raise BadAgentInput("The body must be a tool source object.")
        try:
            return model.model_validate(raw)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"]) or "body"
            raise BadAgentInput(f"Invalid {kind} source: {loc}: {err['msg']}"[:400],
                                param=loc) from None

    def build(self, name: str, kind: str, spec: BaseModel, raw: dict[str, Any]) -> Built:
        """The source's tools (MCP: none until :meth:`list_mcp`); BadAgentInput when the
        spec cannot be used (an unreadable OpenAPI document, a bad SQL URL, no RAG)."""
        from lockgate.errors import ConfigError

        built = Built(kind=kind, spec=spec, raw=raw)
        if isinstance(spec, OpenApiSource):
            from lockgate.agents.openapi_tools import HttpTools

            http = HttpTools(name, spec)
            try:
                built.tools = list(http.tools())
            except (ConfigError, ValueError, KeyError, TypeError) as exc:
                raise BadAgentInput(f"The OpenAPI source cannot be used: {exc}"[:400],
                                    param="spec") from None
            built.http = http
        elif isinstance(spec, RagToolSpec):
            from lockgate.agents.builtins import rag_tool

            if self.rag is None:
                raise BadAgentInput("RAG is not available in this gateway.", param="kind")
            built.tools = [rag_tool(name, spec, self.rag)]
        elif isinstance(spec, SqlToolSpec):
            from lockgate.agents.builtins import sql_tool
            from lockgate.store.engine import create_engine

            try:
                url = resolve_secret(spec.url, f"agents.tools.sql.{name}.url") or spec.url
                built.engine = create_engine(url)
            except Exception as exc:
                raise BadAgentInput(f"The SQL source cannot be used: "
                                    f"{type(exc).__name__}: {exc}"[:400], param="url") from None
            built.tools = [sql_tool(name, spec, built.engine)]
        elif isinstance(spec, McpServerSpec):
            from lockgate.agents.mcp_client import McpTools

            built.mcp = McpTools(name, spec, self.runs, self.alert)
        return built

    @staticmethod
    async def list_mcp(built: Built) -> bool:
        """List an MCP source's tools (at most every ``MCP_RETRY_S`` while it fails)."""
        if built.mcp is None or built.tools or time.monotonic() - built.mcp_tried < MCP_RETRY_S:
            return False
        built.mcp_tried = time.monotonic()
        try:
            built.tools = await built.mcp.tools()
        except Exception as exc:
            log.warning("MCP server %s: could not list its tools: %s", built.mcp.name, exc)
            return False
        return True


class ApiSources:
    """The API-defined sources built in this process, kept in step with the store."""

    def __init__(self, builder: SourceBuilder, add: Callable[[Tool], None],
                 remove: Callable[[str], None]) -> None:
        self.builder = builder
        self._add = add
        self._remove = remove
        self.built: dict[str, Built] = {}

    async def sync(self, stored: dict[str, tuple[str, dict[str, Any]]]) -> None:
        for name in list(self.built):
            now = stored.get(name)
            b = self.built[name]
            if now is None or now[0] != b.kind or now[1] != b.raw:
                for tool in b.tools:
                    self._remove(tool.name)
                del self.built[name]
                await b.aclose()
        for name, (kind, raw) in stored.items():
            if name in self.built:
                continue
            try:
                spec = self.builder.validate(kind, raw)
                b = self.builder.build(name, kind, spec, raw)
            except BadAgentInput as exc:
                log.warning("tool source %s (%s) cannot be used: %s", name, kind, exc.message)
                continue
            self.built[name] = b
            for tool in b.tools:
                self._add(tool)
        for b in self.built.values():
            if await self.builder.list_mcp(b):
                for tool in b.tools:
                    self._add(tool)

    def tools_of(self, name: str) -> list[str]:
        b = self.built.get(name)
        return sorted(t.name for t in b.tools) if b is not None else []

    async def aclose(self) -> None:
        for b in self.built.values():
            await b.aclose()
        self.built.clear()
