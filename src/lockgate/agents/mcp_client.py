"""MCP servers as tool sources (official ``mcp`` SDK; stdio and streamable HTTP).

:class:`McpTools` lists a server's tools (first use, never at start-up) and makes each the
tool ``<source>__<tool>``: its ``inputSchema`` is the argument schema; its class is the
operator's (``classes``), else ``read`` when the server marks it ``readOnlyHint``, else
``write``.

Sessions are pooled: one session per server (``pool: true``, the default), held open by a
keeper task, shared by every call of the process (JSON-RPC requests are multiplexed). A
session that dies (a stdio server exits: its output ends; an HTTP server stops answering:
a call fails at the transport) is dropped; the next call opens a new one. A call that finds
its session already dead reconnects first; a call in flight when the session dies fails
(never retried: the server may have acted). ``pool: false`` opens a session per call
(a stdio server started per call), as before.

Pinning: each definition (name, description, input schema) is hashed (sha256 of canonical
JSON). The pin is the operator's (``pins``) or, for a tool seen for the first time, the
hash stored then (``agent_tool_pins``, shared by every gateway). Each session lists the
tools when it opens -- so after every reconnect -- and again when the server announces
``notifications/tools/list_changed``; a call checks its tool's definition in the current
session's listing against the pin. A tool whose definition no longer matches is not
offered and not called, and an ``mcp_tool_changed`` alert is raised.

Failures: a server that cannot be started, dies mid-call, answers an error or exceeds
``timeout_s`` fails the step (:class:`~lockgate.agents.tools.ToolFailed`); the run goes on
or stops per the agent's ``on_tool_failure``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from lockgate.agents.store import RunStore
from lockgate.agents.tools import Tool, ToolContext, ToolFailed, definition_hash
from lockgate.settings import resolve_secret
from lockgate.settings.agents import McpServerSpec

__all__ = ["McpTools"]

log = logging.getLogger("lockgate.agents.mcp")
Alert = Callable[[str, str, str, dict[str, Any]], Awaitable[None]]
LIST_CHANGED = "notifications/tools/list_changed"
CONNECTION_CLOSED = -32000
"""The SDK's code for "the connection closed before a response arrived"."""
REQUEST_TIMEOUT = -32001


def _text(result: Any) -> str:
    parts = []
    for block in getattr(result, "content", None) or ():
        text = getattr(block, "text", None)
        parts.append(text if isinstance(text, str) else str(block))
    return "\n".join(parts)


def _inner(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


class _Conn:
    """One open session: the keeper task holds its context open until ``closing``."""

    def __init__(self) -> None:
        self.session: Any = None
        self.listing: dict[str, Any] = {}
        self.stale = False
        self.dead = asyncio.Event()
        self.closing = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    @property
    def alive(self) -> bool:
        return self.session is not None and not self.dead.is_set()


class McpTools:
    def __init__(self, name: str, spec: McpServerSpec, runs: RunStore, alert: Alert) -> None:
        self.name = name
        self.spec = spec
        self.runs = runs
        self.alert = alert
        self.pinned: dict[str, str] = {}
        self.connects = 0
        """Sessions opened so far (tests, the bench)."""
        self._conn: _Conn | None = None
        self._lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def session(self, on_message: Callable[[Any], Awaitable[None]] | None = None,
                      on_eof: Callable[[], None] | None = None) -> AsyncIterator[Any]:
        from mcp import ClientSession

        s = self.spec
        if s.transport == "stdio":
            import anyio
            from mcp.client.stdio import StdioServerParameters, stdio_client

            env = {k: resolve_secret(v, f"agents.tools.mcp.{self.name}.env.{k}") or ""
                   for k, v in s.env.items()}
            params = StdioServerParameters(command=s.command[0], args=s.command[1:],
                                           env={**os.environ, **env})
            with open(os.devnull, "w") as errlog:
                async with stdio_client(params, errlog=errlog) as (read, write), \
                        anyio.create_task_group() as tg:
                    # relay the server's output so its end (the process exited) is seen
                    # at once, not at the next call
                    send, recv = anyio.create_memory_object_stream[Any](64)

                    async def relay() -> None:
                        try:
                            async with send:
                                async for item in read:
                                    await send.send(item)
                        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                            pass
                        finally:
                            if on_eof is not None:
                                on_eof()

                    tg.start_soon(relay)
                    async with ClientSession(recv, write, read_timeout_seconds=s.timeout_s,
                                             message_handler=on_message,  # type: ignore[arg-type]
                                             ) as cs:
                        await cs.initialize()
                        yield cs
                    tg.cancel_scope.cancel()
            return
        import httpx2
        from mcp.client.streamable_http import streamable_http_client

        headers = {k: resolve_secret(v, f"agents.tools.mcp.{self.name}.headers.{k}") or ""
                   for k, v in s.headers.items()}
        assert s.url is not None
        async with httpx2.AsyncClient(headers=headers, timeout=s.timeout_s) as http, \
                streamable_http_client(s.url, http_client=http) as (read, write), \
                ClientSession(read, write, read_timeout_seconds=s.timeout_s,
                              message_handler=on_message) as cs:  # type: ignore[arg-type]
            await cs.initialize()
            yield cs

    # ------------------------------------------------------------------ the pool

    async def _open(self) -> _Conn:
        """A new pooled session (listed and pin-checked) held by a keeper task."""
        conn = _Conn()
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def on_message(msg: Any) -> None:
            if getattr(msg, "method", None) == LIST_CHANGED:
                conn.stale = True

        async def keep() -> None:
            try:
                async with self.session(on_message, conn.dead.set) as cs:
                    conn.session = cs
                    conn.listing = {t.name: t for t in (await cs.list_tools()).tools}
                    ready.set_result(None)
                    await conn.closing.wait()
            except BaseException as exc:
                if not ready.done():
                    ready.set_exception(_inner(exc) if isinstance(exc, Exception) else exc)
                elif not isinstance(exc, asyncio.CancelledError):
                    log.info("MCP server %s: session ended: %s", self.name, _inner(exc))
            finally:
                conn.dead.set()

        conn.task = asyncio.get_running_loop().create_task(keep(), name=f"mcp-{self.name}")
        try:
            await asyncio.wait_for(asyncio.shield(ready), self.spec.timeout_s)
        except BaseException:
            await self._close(conn)
            raise
        self.connects += 1
        return conn

    async def _connection(self) -> _Conn:
        conn = self._conn
        if conn is not None and conn.alive:
            return conn
        async with self._lock:
            conn = self._conn
            if conn is not None and conn.alive:
                return conn
            if conn is not None:
                await self._close(conn)
                self._conn = None
            self._conn = await self._open()
            return self._conn

    async def _drop(self, conn: _Conn) -> None:
        if self._conn is conn:
            self._conn = None
        await self._close(conn)

    @staticmethod
    async def _close(conn: _Conn) -> None:
        conn.closing.set()
        task = conn.task
        if task is not None and not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), 5.0)
            except BaseException:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task

    # ------------------------------------------------------------------ pins

    async def _pin_ok(self, tool: Any) -> bool:
        digest = definition_hash(tool.name, tool.description or "", tool.input_schema)
        pin = self.spec.pins.get(tool.name) or self.pinned.get(tool.name)
        if pin is None:
            pin = await self.runs.pin(self.name, tool.name, digest)
            self.pinned[tool.name] = pin
        if pin != digest:
            await self.alert("mcp_tool_changed", f"{self.name}/{tool.name}",
                             f"MCP server {self.name} changed the definition of tool "
                             f"{tool.name}; it is disabled until re-pinned",
                             {"source": self.name, "tool": tool.name, "pinned": pin,
                              "seen": digest})
            return False
        return True

    async def _listed(self) -> list[Any]:
        if not self.spec.pool:
            async with self.session() as cs:
                return list((await cs.list_tools()).tools)
        conn = await self._connection()
        return list(conn.listing.values())

    async def tools(self) -> list[Tool]:
        """The server's tools whose definitions match their pins."""
        listed = await asyncio.wait_for(self._listed(), self.spec.timeout_s)
        out: list[Tool] = []
        for t in listed:
            if not await self._pin_ok(t):
                continue
            klass = self.spec.classes.get(t.name) or (
                "read" if t.annotations is not None and t.annotations.read_only_hint
                else "write")
            out.append(Tool(name=f"{self.name}__{t.name}"[:64],
                            description=t.description or t.name,
                            parameters=t.input_schema or {"type": "object"},
                            klass=klass, call=self._caller(t.name),
                            rate_per_minute=self.spec.rate_per_minute, source=self.name))
        return out

    # ------------------------------------------------------------------ calls

    async def _checked(self, cs: Any, listing: dict[str, Any], tool_name: str) -> None:
        current = listing.get(tool_name)
        if current is None:
            raise ToolFailed(f"the MCP server no longer has the tool {tool_name}")
        if not await self._pin_ok(current):
            raise ToolFailed(f"the definition of {tool_name} changed since it was pinned; "
                             "not called")

    async def _call_fresh(self, tool_name: str, args: dict[str, Any]) -> Any:
        async with self.session() as cs:
            self.connects += 1
            listing = {t.name: t for t in (await cs.list_tools()).tools}
            await self._checked(cs, listing, tool_name)
            return await cs.call_tool(tool_name, args)

    async def _call_pooled(self, tool_name: str, args: dict[str, Any]) -> Any:
        conn = await self._connection()  # a dead session is replaced before the call
        if conn.stale:  # the server said its tools changed: list (and check) again
            conn.stale = False
            conn.listing = {t.name: t for t in (await conn.session.list_tools()).tools}
        await self._checked(conn.session, conn.listing, tool_name)
        try:
            return await conn.session.call_tool(tool_name, args)
        except BaseException as exc:
            code = getattr(getattr(_inner(exc), "error", None), "code", None)
            if code is None or code in (CONNECTION_CLOSED, REQUEST_TIMEOUT):
                await self._drop(conn)  # the session broke: the next call starts clean
            raise  # (a JSON-RPC error answered by a live server keeps the session)

    def _caller(self, tool_name: str) -> Callable[[dict[str, Any], ToolContext], Awaitable[Any]]:
        async def call(args: dict[str, Any], ctx: ToolContext) -> Any:
            once = self._call_pooled if self.spec.pool else self._call_fresh
            try:
                result = await asyncio.wait_for(once(tool_name, args), self.spec.timeout_s)
            except ToolFailed:
                raise
            except TimeoutError:
                raise ToolFailed(f"MCP server {self.name} did not answer in "
                                 f"{self.spec.timeout_s:g} s") from None
            except BaseException as exc:  # ExceptionGroup from the SDK's task groups too
                if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt | SystemExit):
                    raise
                inner = _inner(exc)
                if isinstance(inner, ToolFailed):
                    raise inner from None
                raise ToolFailed(f"MCP server {self.name} failed: {type(inner).__name__}: "
                                 f"{str(inner)[:200]}") from None
            if getattr(result, "is_error", False):
                raise ToolFailed(_text(result)[:2000] or "the MCP tool reported an error")
            structured = getattr(result, "structured_content", None)
            return structured if structured is not None else _text(result)

        return call

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await self._close(conn)
