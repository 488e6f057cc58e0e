"""lockgate as an MCP server (official ``mcp`` SDK), under the same keys and grants.

Tools (each call authenticates a lockgate key: over streamable HTTP the request's
``Authorization: Bearer <key>``, else the key the server was started with — the
``--key`` option or ``LOCKGATE_API_KEY``, the only way over stdio):

- ``rag_search(collection, query, k)`` (read-only) -- retrieval with the key's ACL
  principals; the key's allowed models must allow ``rag/<collection>``;
- ``submit_job(task, input)``, ``get_job(job_id)`` -- the job queue as that key;
- ``list_reviews(state)`` (read-only), ``decide_review(review_id, action, reason, output)``
  -- the review queue with the key's reviewer rights (decisions resume waiting work);
- ``run_agent(agent, input)`` -- an agent run with the key's grants; returns the run
  (an ``approve_writes`` run may come back ``awaiting_approval``);
- ``list_agents()`` (read-only).

Errors come back as MCP tool errors with lockgate's one-line message (no tracebacks).
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError as SdkToolError
from mcp_types import ToolAnnotations

from lockgate.errors import GatewayError
from lockgate.pipeline import Principal
from lockgate.rag.identity import caller_for
from lockgate.runtime import Runtime

__all__ = ["build_server", "serve"]

READ = ToolAnnotations(read_only_hint=True)


class ToolError(SdkToolError):
    """Shown to the MCP client as the tool's error text (the SDK hides other exceptions)."""


def _key_from(ctx: Context | None, default: str | None) -> str | None:
    headers = None
    if ctx is not None:
        with contextlib.suppress(ValueError, AttributeError):
            headers = ctx.headers
    if headers:
        auth = headers.get("authorization") or headers.get("Authorization")
        if auth and auth.lower().startswith("bearer "):
            return auth[7:].strip()
    return default


def build_server(rt: Runtime, default_key: str | None = None) -> MCPServer:
    mcp = MCPServer("lockgate", instructions="lockgate: governed RAG search, jobs, reviews "
                    "and agents under your lockgate key.")

    async def who(ctx: Context | None) -> Principal:
        key = _key_from(ctx, default_key)
        if not key:
            raise ToolError("no lockgate key: send Authorization: Bearer <key> (HTTP) or "
                            "start the server with --key / LOCKGATE_API_KEY")
        try:
            return await rt.pipeline.authenticate(key)
        except GatewayError as exc:
            raise ToolError(exc.message) from None

    async def guarded(coro: Any) -> Any:
        try:
            return await coro
        except GatewayError as exc:
            raise ToolError(f"{exc.message} ({exc.status})") from None

    @mcp.tool(annotations=READ, description="Search a RAG collection with your permissions.")
    async def rag_search(collection: str, query: str, k: int = 5,
                         ctx: Context | None = None) -> dict[str, Any]:
        p = await who(ctx)
        if not p.may_use(f"rag/{collection}"):
            raise ToolError(f"This key may not use the collection '{collection}'.")
        if not 1 <= k <= 20:
            raise ToolError("k must be 1..20")

        async def go() -> dict[str, Any]:
            res = await rt.rag.retrieve(collection, query, caller_for(p, None), k=k,
                                        principal=p)
            return {"passages": [{"doc_id": h.doc_id, "title": h.title, "text": h.text,
                                  "score": round(h.score, 4)} for h in res.hits]}

        try:
            return await guarded(go())  # type: ignore[no-any-return]
        except Exception as exc:
            if isinstance(exc, ToolError):
                raise
            raise ToolError(str(exc)[:300]) from None

    @mcp.tool(description="Queue a job of a declared task as your key.")
    async def submit_job(task: str, input: Any, ctx: Context | None = None) -> dict[str, Any]:
        p = await who(ctx)
        if rt.jobs is None:
            raise ToolError("this server has no job queue")
        res = await guarded(rt.jobs.service.submit(task, input, principal=p))
        return {"job_id": res.job.id, "state": res.job.state, "created": res.created}

    @mcp.tool(annotations=READ, description="A job you submitted: state and result.")
    async def get_job(job_id: str, ctx: Context | None = None) -> dict[str, Any]:
        p = await who(ctx)
        if rt.jobs is None:
            raise ToolError("this server has no job queue")
        job = await guarded(rt.jobs.service.get(job_id, p))
        return job.public()  # type: ignore[no-any-return]

    @mcp.tool(annotations=READ, description="Review items you may see (newest first).")
    async def list_reviews(state: str = "pending", limit: int = 20,
                           ctx: Context | None = None) -> dict[str, Any]:
        p = await who(ctx)
        assert rt.review is not None
        if state not in ("pending", "approved", "edited", "rejected", "all"):
            raise ToolError("state must be pending, approved, edited, rejected or all")
        items = await guarded(rt.review.repo.find(
            state=None if state == "all" else state, teams=rt.review.teams_of(p),
            limit=max(1, min(limit, 100))))
        now = time.time()
        return {"items": [i.public(now) for i in items]}

    @mcp.tool(description="Decide a review item: approve, edit (with output) or reject "
                          "(with reason).")
    async def decide_review(review_id: str, action: str, reason: str | None = None,
                            output: Any = None, ctx: Context | None = None) -> dict[str, Any]:
        p = await who(ctx)
        assert rt.review is not None
        item = await guarded(rt.review.decide(review_id, p, action, output=output,
                                              reason=reason, has_output=output is not None))
        return item.public(time.time())  # type: ignore[no-any-return]

    @mcp.tool(annotations=READ, description="The agents your key may run.")
    async def list_agents(ctx: Context | None = None) -> dict[str, Any]:
        p = await who(ctx)
        assert rt.agents is not None
        return {"agents": rt.agents.visible(p)}

    @mcp.tool(description="Run a lockgate agent with your key's grants; returns the run.")
    async def run_agent(agent: str, input: str, ctx: Context | None = None) -> dict[str, Any]:
        p = await who(ctx)
        svc = rt.agents
        assert svc is not None

        async def go() -> dict[str, Any]:
            run = await svc.start(agent, input, p, check_models=True)
            run = await svc.advance(run)
            return await svc.show(run.id, p)

        return await guarded(go())  # type: ignore[no-any-return]

    return mcp


async def serve(rt: Runtime, *, transport: str, key: str | None, host: str = "127.0.0.1",
                port: int = 8765) -> None:
    """Serve until stopped (stdio: until the client closes stdin)."""
    server = build_server(rt, key)
    if transport == "stdio":
        await server.run_stdio_async()
        return
    import uvicorn

    app = server.streamable_http_app(host=host)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    await uvicorn.Server(config).serve()


def _stderr_logging() -> None:
    """stdout carries the MCP protocol over stdio: logs go to stderr."""
    from lockgate.observability.logging import configure_logging

    configure_logging(stream=sys.stderr, force=True)
