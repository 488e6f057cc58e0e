"""Built-in tools: RAG search, read-only SQL, submit a job, ask a human, delegate.

- ``rag__<name>`` (read): retrieval over a collection with the *caller's* ACL principals
  (:func:`lockgate.rag.identity.caller_for` of the run's key and verified end user), so an
  agent never reads what its caller could not;
- ``sql__<name>`` (read): one statement in a read-only transaction (PostgreSQL
  ``SET TRANSACTION READ ONLY`` + ``statement_timeout``; SQLite ``PRAGMA query_only``
  + a progress-handler deadline), only ``SELECT``/``WITH`` accepted, rows capped;
- ``submit_job`` (write): a job of a declared task (``jobs.tasks``) as the caller;
- ``ask_human`` (read, pauses): a review item the run waits for; the answer is the result;
- ``delegate`` (read): hands a sub-task to another agent (the mesh; see the service).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from lockgate.agents.tools import Tool, ToolContext, ToolFailed, ToolRefused
from lockgate.errors import GatewayError
from lockgate.rag.identity import caller_for
from lockgate.rag.service import UnknownCollection
from lockgate.settings.agents import RagToolSpec, SqlToolSpec

if TYPE_CHECKING:
    from lockgate.jobs.submission import JobService
    from lockgate.rag import RagService

__all__ = ["ask_human_tool", "rag_tool", "sql_tool", "submit_job_tool"]

_SELECT = re.compile(r"^\s*(select|with)\b", re.IGNORECASE)


def rag_tool(name: str, spec: RagToolSpec, rag: RagService) -> Tool:
    async def search(args: dict[str, Any], ctx: ToolContext) -> Any:
        caller = caller_for(ctx.principal, ctx.acting_for)
        try:
            res = await rag.retrieve(spec.collection, str(args["query"]), caller, k=spec.k,
                                     principal=ctx.principal)
        except UnknownCollection as exc:
            raise ToolFailed(str(exc)) from None
        return {"collection": spec.collection, "passages": [
            {"doc_id": h.doc_id, "title": h.title, "heading": h.heading, "text": h.text,
             "score": round(h.score, 4)} for h in res.hits]}

    return Tool(
        name=f"rag__{name}",
        description=f"Search the '{spec.collection}' knowledge base; returns passages.",
        parameters={"type": "object", "properties": {"query": {
            "type": "string", "minLength": 1, "maxLength": 2000}},
            "required": ["query"], "additionalProperties": False},
        klass="read", call=search, rate_per_minute=spec.rate_per_minute, source="rag")


def _sqlite_deadline(dbapi: Any, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    raw = getattr(dbapi, "driver_connection", dbapi)
    inner = getattr(raw, "_conn", raw)  # aiosqlite wraps sqlite3

    def check() -> int:
        return 1 if time.monotonic() > deadline else 0

    setter = getattr(inner, "set_progress_handler", None)
    if setter is not None:
        setter(check, 1000)


def sql_tool(name: str, spec: SqlToolSpec, engine: AsyncEngine) -> Tool:
    async def query(args: dict[str, Any], ctx: ToolContext) -> Any:
        text = str(args["query"]).strip().rstrip(";")
        if not _SELECT.match(text) or ";" in text:
            raise ToolRefused("only one SELECT (or WITH ... SELECT) statement is accepted")
        try:
            async with engine.connect() as conn:
                if engine.dialect.name == "postgresql":
                    await conn.execute(sa.text("SET TRANSACTION READ ONLY"))
                    ms = int(spec.timeout_s * 1000)
                    await conn.execute(sa.text(f"SET LOCAL statement_timeout = {ms}"))
                elif engine.dialect.name == "sqlite":
                    await conn.execute(sa.text("PRAGMA query_only = ON"))
                    raw = await conn.get_raw_connection()
                    await conn.run_sync(lambda _c: _sqlite_deadline(raw, spec.timeout_s))
                result = await asyncio.wait_for(conn.execute(sa.text(text)),
                                                spec.timeout_s + 1)
                cols = list(result.keys())
                rows = [list(r) for r in result.fetchmany(spec.row_cap + 1)]
                await conn.rollback()
        except TimeoutError:
            raise ToolFailed(f"the query ran longer than {spec.timeout_s:g} s") from None
        except sa.exc.SQLAlchemyError as exc:
            msg = str(getattr(exc, "orig", exc)).splitlines()[0][:300]
            raise ToolFailed(f"the query failed: {msg}") from None
        cut = len(rows) > spec.row_cap
        return {"columns": cols, "rows": rows[:spec.row_cap], "truncated": cut}

    return Tool(
        name=f"sql__{name}", description=spec.description,
        parameters={"type": "object", "properties": {"query": {
            "type": "string", "minLength": 1, "maxLength": 8000}},
            "required": ["query"], "additionalProperties": False},
        klass="read", call=query, rate_per_minute=spec.rate_per_minute, source="sql")


def submit_job_tool(jobs: Callable[[], JobService | None], tasks: list[str]) -> Tool:
    async def submit(args: dict[str, Any], ctx: ToolContext) -> Any:
        service = jobs()
        if service is None:
            raise ToolFailed("this process has no job queue")
        try:
            res = await service.submit(str(args["task"]), args.get("input"),
                                       principal=ctx.principal)
        except GatewayError as exc:
            raise ToolFailed(exc.message) from None
        return {"job_id": res.job.id, "state": res.job.state, "created": res.created}

    props: dict[str, Any] = {"task": {"type": "string"}, "input": {}}
    if tasks:
        props["task"] = {"type": "string", "enum": sorted(tasks)}
    return Tool(
        name="submit_job", description="Queue a background job of a declared task.",
        parameters={"type": "object", "properties": props, "required": ["task", "input"],
                    "additionalProperties": False},
        klass="write", call=submit, source="jobs")


def ask_human_tool() -> Tool:
    async def never(args: dict[str, Any], ctx: ToolContext) -> Any:
        raise ToolFailed("ask_human is answered through the review queue")

    return Tool(
        name="ask_human",
        description="Ask a person a question; the run waits for the answer.",
        parameters={"type": "object", "properties": {"question": {
            "type": "string", "minLength": 1, "maxLength": 4000}},
            "required": ["question"], "additionalProperties": False},
        klass="read", call=never, source="builtin", pauses=True)


def delegate_tool(call: Callable[[dict[str, Any], ToolContext], Awaitable[Any]],
                  agents: list[str]) -> Tool:
    return Tool(
        name="delegate",
        description="Hand a sub-task to a specialised agent; returns its answer.",
        parameters={"type": "object", "properties": {
            "agent": {"type": "string", "enum": sorted(agents)} if agents else
            {"type": "string"},
            "task": {"type": "string", "minLength": 1, "maxLength": 8000}},
            "required": ["agent", "task"], "additionalProperties": False},
        klass="read", call=call, source="mesh")
