"""HTTP tools imported from an OpenAPI 3 document.

Each operation with an ``operationId`` becomes the tool ``<source>__<operationId>``: its
path and query parameters become top-level arguments, a JSON request body the argument
``body``; local ``$ref``s are inlined. GET/HEAD operations are ``read``, the rest
``write`` unless ``classes`` says otherwise. Calls go out with aiohttp to ``base_url``
(or the document's first server), with the source's ``auth`` header (``env:`` secret
resolved at first use). A 4xx answer is returned to the model as the result (it can fix
its arguments); 5xx, a connection failure or a timeout is a tool failure.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import orjson
import yaml

from lockgate.agents.tools import Tool, ToolContext, ToolFailed
from lockgate.errors import ConfigError
from lockgate.lazy import lazy_module
from lockgate.settings import resolve_secret
from lockgate.settings.agents import OpenApiSource

if TYPE_CHECKING:
    import aiohttp
else:  # ~14 MB resident: loaded on first use, not by every gateway worker at start
    aiohttp = lazy_module("aiohttp")

__all__ = ["HttpTools", "load_openapi"]

_METHODS = ("get", "head", "post", "put", "patch", "delete")
_BAD = re.compile(r"[^A-Za-z0-9_-]")


def load_openapi(path: str) -> dict[str, Any]:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(f"agents.tools.openapi: cannot read {path}: {exc}") from None
    try:
        doc = orjson.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (orjson.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"agents.tools.openapi: {path} is not JSON/YAML: {exc}") from None
    if not isinstance(doc, dict) or not str(doc.get("openapi", "")).startswith("3"):
        raise ConfigError(f"agents.tools.openapi: {path} is not an OpenAPI 3 document")
    return doc


def _inline(node: Any, doc: dict[str, Any], depth: int = 0) -> Any:
    if depth > 20:
        return {}
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/"):
            target: Any = doc
            for part in ref[2:].split("/"):
                target = target.get(part, {}) if isinstance(target, dict) else {}
            return _inline(target, doc, depth + 1)
        return {k: _inline(v, doc, depth + 1) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline(v, doc, depth + 1) for v in node]
    return node


class HttpTools:
    """The tools of one OpenAPI source and the HTTP session they share."""

    def __init__(self, source: str, spec: OpenApiSource) -> None:
        self.source = source
        self.spec = spec
        self._session: aiohttp.ClientSession | None = None
        self._auth: tuple[str, str] | None = None

    def tools(self) -> list[Tool]:
        doc = load_openapi(self.spec.spec)
        servers = doc.get("servers") or []
        base = self.spec.base_url or (servers[0].get("url") if servers else None)
        if not base:
            raise ConfigError(f"agents.tools.openapi.{self.source}: no base_url and no "
                              "servers in the document")
        out: list[Tool] = []
        for path, item in (doc.get("paths") or {}).items():
            if not isinstance(item, dict):
                continue
            shared = item.get("parameters") or []
            for method in _METHODS:
                op = item.get(method)
                if not isinstance(op, dict) or not op.get("operationId"):
                    continue
                op_id = str(op["operationId"])
                if self.spec.include and op_id not in self.spec.include:
                    continue
                out.append(self._tool(doc, base.rstrip("/"), path, method, op,
                                      [*shared, *(op.get("parameters") or [])]))
        return out

    def _tool(self, doc: dict[str, Any], base: str, path: str, method: str,
              op: dict[str, Any], params: list[Any]) -> Tool:
        op_id = str(op["operationId"])
        props: dict[str, Any] = {}
        required: list[str] = []
        where: dict[str, str] = {}
        for raw in params:
            prm = _inline(raw, doc)
            if not isinstance(prm, dict) or prm.get("in") not in ("path", "query"):
                continue
            pname = str(prm.get("name"))
            props[pname] = prm.get("schema") or {"type": "string"}
            if prm.get("description"):
                props[pname] = {**props[pname], "description": prm["description"]}
            where[pname] = prm["in"]
            if prm.get("required") or prm["in"] == "path":
                required.append(pname)
        body = _inline(op.get("requestBody"), doc)
        if isinstance(body, dict):
            schema = ((body.get("content") or {}).get("application/json") or {}).get("schema")
            if schema is not None:
                props["body"] = schema
                if body.get("required"):
                    required.append("body")
        klass = self.spec.classes.get(op_id) or ("read" if method in ("get", "head")
                                                  else "write")
        name = _BAD.sub("_", f"{self.source}__{op_id}")[:64]
        desc = str(op.get("summary") or op.get("description") or f"{method.upper()} {path}")
        url_template = base + path

        async def call(args: dict[str, Any], ctx: ToolContext) -> Any:
            url = url_template
            query: dict[str, str] = {}
            for k, v in args.items():
                if where.get(k) == "path":
                    url = url.replace("{" + k + "}", quote(str(v), safe=""))
                elif where.get(k) == "query":
                    query[k] = v if isinstance(v, str) else orjson.dumps(v).decode()
            return await self._send(method, url, query, args.get("body"))

        return Tool(name=name, description=desc,
                    parameters={"type": "object", "properties": props, "required": required},
                    klass=klass, call=call, rate_per_minute=self.spec.rate_per_minute,
                    source=self.source)

    def _headers(self) -> dict[str, str]:
        a = self.spec.auth
        if a is None:
            return {}
        if self._auth is None:
            try:
                secret = resolve_secret(a.value,
                                        f"agents.tools.openapi.{self.source}.auth.value")
            except ConfigError as exc:
                raise ToolFailed(str(exc)) from None
            self._auth = (a.header, a.prefix + (secret or ""))
        return {self._auth[0]: self._auth[1]}

    async def _send(self, method: str, url: str, query: dict[str, str], body: Any) -> Any:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.spec.timeout_s))
        kwargs: dict[str, Any] = {"params": query, "headers": self._headers()}
        if body is not None:
            kwargs["data"] = orjson.dumps(body)
            kwargs["headers"] = {**kwargs["headers"], "content-type": "application/json"}
        try:
            async with self._session.request(method.upper(), url, **kwargs) as resp:
                raw = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ToolFailed(f"{method.upper()} {url} failed: {type(exc).__name__} "
                             f"{exc}".strip()[:300]) from None
        try:
            data: Any = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            data = raw.decode("utf-8", "replace")[:8000]
        if status >= 500:
            raise ToolFailed(f"HTTP {status}: {str(data)[:300]}")
        if status >= 400:
            return {"status": status, "error": data}
        return data

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
