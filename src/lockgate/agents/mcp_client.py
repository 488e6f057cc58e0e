"""MCP servers as tool sources (official ``mcp`` SDK; stdio and streamable HTTP).

:class:`McpTools` lists a server's tools (first use, never at start-up) and makes each the
tool ``<source>__<tool>``: its ``inputSchema`` is the argument schema; its class is the
operator's (``classes``), else ``read`` when the server marks it ``readOnlyHint``, else
``write``.

Pinning: each definition (name, description, input schema) is hashed (sha256 of canonical
JSON). The pin is the operator's (``pins``) or, for a tool seen for the first time, the
hash stored then (``agent_tool_pins``, shared by every gateway). A tool whose definition no
longer matches its pin is not offered and not called, and an ``mcp_tool_changed`` alert
is raised. Every call opens a session, lists the tools again and checks the pin in that
same session before calling, so a server cannot swap a definition between listing and call.

Failures: a server that cannot be started, dies mid-call, answers an error or exceeds
``timeout_s`` fails the step (:class:`~lockgate.agents.tools.ToolFailed`); the run goes on
or stops per the agent's ``on_tool_failure``. Partial: one connection per call (a stdio
server is started per call), simple and robust, slow for chatty tools.
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


def _text(result: Any) -> str:
    parts = []
    for block in getattr(result, "content", None) or ():
        text = getattr(block, "text", None)
        parts.append(text if isinstance(text, str) else str(block))
    return "\n".join(parts)


class McpTools:
    def __init__(self, name: str, spec: McpServerSpec, runs: RunStore, alert: Alert) -> None:
        self.name = name
        self.spec = spec
        self.runs = runs
        self.alert = alert
        self.pinned: dict[str, str] = {}

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[Any]:
        from mcp import ClientSession

        s = self.spec
        if s.transport == "stdio":
            from mcp.client.stdio import StdioServerParameters, stdio_client

            env = {k: resolve_secret(v, f"agents.tools.mcp.{self.name}.env.{k}") or ""
                   for k, v in s.env.items()}
            params = StdioServerParameters(command=s.command[0], args=s.command[1:],
                                           env={**os.environ, **env})
            with open(os.devnull, "w") as errlog:
                async with stdio_client(params, errlog=errlog) as (read, write), \
                        ClientSession(read, write, read_timeout_seconds=s.timeout_s) as cs:
                    await cs.initialize()
                    yield cs
            return
        import httpx2
        from mcp.client.streamable_http import streamable_http_client

        headers = {k: resolve_secret(v, f"agents.tools.mcp.{self.name}.headers.{k}") or ""
                   for k, v in s.headers.items()}
        assert s.url is not None
        async with httpx2.AsyncClient(headers=headers, timeout=s.timeout_s) as http, \
                streamable_http_client(s.url, http_client=http) as (read, write), \
                ClientSession(read, write, read_timeout_seconds=s.timeout_s) as cs:
            await cs.initialize()
            yield cs

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

    async def tools(self) -> list[Tool]:
        """The server's tools whose definitions match their pins."""
        async def listing() -> list[Any]:
            async with self.session() as cs:
                return list((await cs.list_tools()).tools)

        listed = await asyncio.wait_for(listing(), self.spec.timeout_s)
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

    def _caller(self, tool_name: str) -> Callable[[dict[str, Any], ToolContext], Awaitable[Any]]:
        async def call(args: dict[str, Any], ctx: ToolContext) -> Any:
            async def once() -> Any:
                async with self.session() as cs:
                    listed = {t.name: t for t in (await cs.list_tools()).tools}
                    current = listed.get(tool_name)
                    if current is None:
                        raise ToolFailed(f"the MCP server no longer has the tool {tool_name}")
                    if not await self._pin_ok(current):
                        raise ToolFailed(f"the definition of {tool_name} changed since it "
                                         "was pinned; not called")
                    return await cs.call_tool(tool_name, args)

            try:
                result = await asyncio.wait_for(once(), self.spec.timeout_s)
            except ToolFailed:
                raise
            except TimeoutError:
                raise ToolFailed(f"MCP server {self.name} did not answer in "
                                 f"{self.spec.timeout_s:g} s") from None
            except BaseException as exc:  # ExceptionGroup from the SDK's task groups too
                if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt | SystemExit):
                    raise
                inner = exc
                while isinstance(inner, BaseExceptionGroup) and inner.exceptions:
                    inner = inner.exceptions[0]
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
        return None
