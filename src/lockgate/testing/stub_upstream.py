"""A fast, deterministic stand-in model server speaking the OpenAI and Anthropic wire protocols.

Used by the test-suite (real HTTP on loopback, no mocks) and as the benchmark
upstream. Start it in process::

    stub = StubUpstream()             # host="127.0.0.1", port=0 (ephemeral)
    base = await stub.start()         # "http://127.0.0.1:PORT"; OpenAI base is base + "/v1"
    ...
    await stub.stop()

from synchronous code with ``with run_stub_in_thread() as stub: stub.base_url``, or
as a process: ``python -m lockgate.testing.stub_upstream --port 9100 [--reuse-port]``.

Endpoints
    POST /v1/chat/completions   OpenAI chat, non-stream and SSE (``data: {chunk}`` ...
                                ``data: [DONE]``)
    POST /v1/embeddings         deterministic hashed bag-of-words vectors (dim 16, ``dimensions``
                                honoured, ``encoding_format`` float or base64)
    GET  /v1/models             the stub's models plus every model id seen
    POST /v1/messages           Anthropic Messages, non-stream and SSE with the real event sequence
    POST /_script               JSON list of behaviours applied to the next requests, in order
    GET  /_stats                request counts (total, by model id, by path, by behaviour)
    GET  /_requests             the last 100 requests (path, model, behaviour, headers, body)
    POST /_reset                clear script, counters and request log
    POST /_replies              ``{"model": id, "replies": [...]}``: scripted OpenAI chat answers
                                for that upstream model id, in order (agents' tool-call
                                sequences); each reply is ``{"content": text}`` or
                                ``{"tool_calls": [{"name": n, "arguments": {...}}], "content":
                                optional}``; when a model's list is empty it answers normally

Normal answers: the reply text is ``"stub reply: " + <text of the last message>``, or,
when that text starts with ``echo:``, the rest of it verbatim (e.g. a JSON answer); with
``logprobs: true`` each word gets logprob -0.05 (-1.5 when the last message says "unsure") (a tool
result is answered with ``"stub reply: tool result: ..."``); it is cut before the first stop
sequence found (``stop`` / ``stop_sequences``; Anthropic reports ``stop_sequence``) and to
``max_tokens`` words (finish ``length`` / ``max_tokens``). Usage counts whitespace-separated
words: prompt = words of the system prompt and every message, completion = words of the
reply. With ``tools`` and tool_choice ``required`` or a named function (Anthropic: ``any`` or
``tool``), or when the last user text contains the word ``tool:NAME``, the answer is a call
of that tool (the first tool if none is named) with arguments built from its JSON schema
(strings get the last user text). With ``response_format`` json_object the content is
``{"reply": ...}``; with json_schema an object built from the schema.

Behaviours (from the upstream model id, e.g. ``model: error-429:2.5``, or from ``/_script``)
    error-NNN[:s]     HTTP NNN in the endpoint's error shape; 429 carries ``Retry-After: s``
                      (default 1)
    stall-before:s    sleep s seconds before sending headers
    stall-mid:s       stream: send 2 content chunks, go silent s seconds, then finish normally
                      (non-stream: sleep s seconds, then answer)
    cut-mid           stream: send 2 content chunks then drop the connection (no [DONE] /
                      message_stop); non-stream: half of the body, then drop
    slow:ms           wait ms milliseconds, then answer normally
    flaky:n           model id: the first n requests for that id get 500, later ones succeed;
                      in a script: n scripted 500s
    bad-json          200 with a body (non-stream) or a stream event (stream) that is not JSON
    usage-KIND        a normal answer whose ``usage`` is junk (non-stream body; stream: the
                      final usage chunk, Anthropic ``message_delta``): KIND ``string``
                      (counts as strings), ``negative``, ``bool``, ``huge`` (10**18),
                      ``fraction`` (2.5), ``list`` (usage a list), ``text`` (usage a string)
    bad-choices       stream: after 2 content chunks a chunk whose ``choices`` is a string
                      (Anthropic: a ``content_block_delta`` whose ``index`` is not a number);
                      non-stream: ``choices`` is a string
    ok                (script only) answer this request normally
A model id may carry a prefix (``stub/error-500``): the part after the last ``/`` is read.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import struct
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from typing import Any

import orjson
from aiohttp import web

__all__ = ["USAGE_JUNK", "StubUpstream", "junk_usage", "main", "parse_behaviour",
           "run_stub_in_thread"]

Behaviour = tuple[str, float]
"""(name, argument); name in error/stall-before/stall-mid/cut-mid/slow/flaky/ok."""

_NORMAL: Behaviour = ("ok", 0.0)
_LOG_HEADERS = (
    "authorization",
    "x-api-key",
    "anthropic-version",
    "content-type",
    "user-agent",
    "x-request-id",
)
_SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


def parse_behaviour(spec: str) -> Behaviour | None:
    """``"error-429:2.5"`` -> ``("error", 429.0025)``-style tuple; None for a normal model id.

    Errors are encoded as ``("error-NNN", retry_after)``.
    """
    name, _, arg = spec.rpartition("/")[2].partition(":")
    try:
        if name.startswith("error-") and len(name) == 9 and name[6:].isdigit():
            return (name, float(arg) if arg else 1.0)
        if name in ("stall-before", "stall-mid", "slow", "flaky"):
            return (name, float(arg) if arg else 1.0)
    except ValueError:
        return None
    if name in ("cut-mid", "bad-json", "bad-choices") and not arg:
        return (name, 0.0)
    if name.startswith("usage-") and name[6:] in USAGE_JUNK and not arg:
        return (name, 0.0)
    if name == "ok" and not arg:
        return _NORMAL
    return None


USAGE_JUNK = ("string", "negative", "bool", "huge", "fraction", "list", "text")
"""Kinds of junk ``usage`` the ``usage-KIND`` behaviours send."""


def junk_usage(behaviour: str, usage: dict[str, Any]) -> Any:
    """``usage`` spoiled as behaviour ``usage-KIND`` says (unchanged for other behaviours)."""
    if not behaviour.startswith("usage-"):
        return usage
    kind = behaviour[6:]
    if kind == "list":
        return list(usage.values())
    if kind == "text":
        return "plenty"
    first = next(iter(usage))
    spoiled = {"string": str(usage[first]) + " tokens", "negative": -5, "bool": True,
               "huge": 10**18, "fraction": 2.5}[kind]
    return {**usage, first: spoiled}


# ------------------------------------------------------------------ content helpers


def _text(content: Any) -> str:
    """Plain text of an OpenAI/Anthropic content value (string or list of parts/blocks)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts: list[str] = []
        for p in content:
            if isinstance(p, str):
                parts.append(p)
            elif isinstance(p, dict):
                if p.get("type") == "text":
                    parts.append(str(p.get("text", "")))
                elif p.get("type") == "tool_result":
                    parts.append(_text(p.get("content")))
        return " ".join(x for x in parts if x)
    return str(content)


def _words(text: str) -> int:
    return len(text.split())


def _example(schema: Any, text: str, depth: int = 0) -> Any:
    """A deterministic value matching a (simple) JSON schema."""
    if not isinstance(schema, dict) or depth > 5:
        return text
    if schema.get("enum"):
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            return _example(schema[key][0], text, depth + 1)
    typ = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(typ, list):
        typ = next((t for t in typ if t != "null"), "string")
    if typ == "object":
        props = schema.get("properties") or {}
        return {k: _example(v, text, depth + 1) for k, v in props.items()}
    if typ == "array":
        return [_example(schema.get("items"), text, depth + 1)]
    if typ == "integer":
        return 1
    if typ == "number":
        return 1.0
    if typ == "boolean":
        return True
    if typ == "null":
        return None
    return text


def _split4(text: str) -> list[str]:
    n = len(text)
    cuts = [0, n // 4, n // 2, (3 * n) // 4, n]
    return [text[cuts[i] : cuts[i + 1]] for i in range(4) if cuts[i + 1] > cuts[i]]


def _embedding(text: str, dim: int) -> list[float]:
    """Feature-hashed bag of words, L2-normalised (similar texts get similar vectors)."""
    vec = [0.0] * dim
    for word in text.lower().split():
        h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
        vec[h % dim] += 1.0 if (h >> 32) & 1 else -1.0
    norm = sum(v * v for v in vec) ** 0.5
    if norm == 0.0:
        vec[0] = 1.0
        return vec
    return [v / norm for v in vec]


class _Plan:
    """What to answer for one chat request, shared by the OpenAI and Anthropic renderers."""

    __slots__ = ("extra_calls", "finish", "prompt_tokens", "stop_sequence", "text", "tool_args",
                 "tool_name")

    def __init__(self) -> None:
        self.text = ""
        self.tool_name: str | None = None
        self.tool_args = ""
        self.finish = "stop"  # stop | length | tool | stop_sequence
        self.prompt_tokens = 0
        self.stop_sequence: str | None = None
        self.extra_calls: list[tuple[str, str]] = []
        """Scripted answers: tool calls after the first (name, JSON arguments)."""

    @property
    def completion_tokens(self) -> int:
        return _words(self.text) + sum(_words(a.replace('"', " ")) for _, a in self.calls())

    def calls(self) -> list[tuple[str, str]]:
        first = [(self.tool_name, self.tool_args)] if self.tool_name else []
        return first + self.extra_calls


def _apply_stop(reply: str, stop: Any) -> tuple[str, str | None]:
    """Cut ``reply`` at the earliest stop sequence found; returns (text, sequence or None)."""
    if not stop:
        return reply, None
    best: tuple[int, str] | None = None
    for seq in [stop] if isinstance(stop, str) else stop:
        if isinstance(seq, str) and seq:
            i = reply.find(seq)
            if i >= 0 and (best is None or i < best[0]):
                best = (i, seq)
    if best is None:
        return reply, None
    return reply[: best[0]], best[1]


def _pick_tool(tools: list[dict[str, Any]], forced: str | None, last_user: str) -> str | None:
    names = [str(t["name"]) for t in tools if t.get("name")]
    if not names:
        return None
    if forced == "":
        return names[0]
    if forced:
        return forced
    for word in last_user.split():
        if word.startswith("tool:") and word[5:] in names:
            return word[5:]
    return None


# ------------------------------------------------------------------ the server


class StubUpstream:
    """The stand-in model server. Counters are plain attributes, readable in process."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, reuse_port: bool = False):
        self.host = host
        self.port = port
        self.reuse_port = reuse_port
        self.base_url = ""
        self.script_queue: deque[Behaviour] = deque()
        self.total = 0
        self.counts: Counter[str] = Counter()
        """Requests per upstream model id (chat, messages and embeddings)."""
        self.by_path: Counter[str] = Counter()
        self.by_behaviour: Counter[str] = Counter()
        self.requests: deque[dict[str, Any]] = deque(maxlen=100)
        self._runner: web.AppRunner | None = None
        self._seq = 0
        self.replies: dict[str, deque[dict[str, Any]]] = {}
        """Scripted chat answers per upstream model id (:meth:`script_replies`)."""

    # -------------------------------------------------------- lifecycle

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/chat/completions", self._chat)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_post("/embeddings", self._embeddings)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_post("/_script", self._script_endpoint)
        app.router.add_get("/_stats", self._stats_endpoint)
        app.router.add_get("/_requests", self._requests_endpoint)
        app.router.add_post("/_reset", self._reset_endpoint)
        app.router.add_post("/_replies", self._replies_endpoint)
        return app

    async def start(self) -> str:
        """Bind and serve; returns the base URL (``http://host:port``, no ``/v1``)."""
        runner = web.AppRunner(
            self.app(), access_log=None, handle_signals=False, shutdown_timeout=0.5
        )
        await runner.setup()
        site = web.TCPSite(
            runner, self.host, self.port, reuse_port=self.reuse_port or None, backlog=1024
        )
        await site.start()
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        self.base_url = f"http://{self.host}:{self.port}"
        return self.base_url

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    @property
    def openai_base(self) -> str:
        """Base URL for OpenAI clients (``.../v1``)."""
        return self.base_url + "/v1"

    # -------------------------------------------------------- control

    def script(self, behaviours: list[str]) -> None:
        """Queue behaviours for the next requests (any model). ValueError on an unknown one."""
        parsed: list[Behaviour] = []
        for spec in behaviours:
            b = parse_behaviour(spec)
            if b is None:
                raise ValueError(f"unknown stub behaviour: {spec!r}")
            if b[0] == "flaky":
                parsed.extend([("error-500", 0.0)] * int(b[1]))
            else:
                parsed.append(b)
        self.script_queue.extend(parsed)

    def script_replies(self, model: str, replies: list[dict[str, Any]]) -> None:
        """Queue scripted OpenAI chat answers for requests naming upstream model ``model``."""
        for r in replies:
            if not isinstance(r, dict) or not ("content" in r or "tool_calls" in r):
                raise ValueError("a reply is {'content': ...} or {'tool_calls': [...]}")
        self.replies.setdefault(model, deque()).extend(replies)

    async def _replies_endpoint(self, request: web.Request) -> web.Response:
        try:
            doc = orjson.loads(await request.read())
            if not isinstance(doc, dict) or not isinstance(doc.get("replies"), list):
                raise ValueError("body must be {'model': id, 'replies': [...]}")
            self.script_replies(str(doc.get("model") or ""), doc["replies"])
        except (ValueError, orjson.JSONDecodeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"queued": len(self.replies[str(doc.get("model") or "")])})

    def reset(self) -> None:
        self.replies.clear()
        self.script_queue.clear()
        self.total = 0
        self.counts.clear()
        self.by_path.clear()
        self.by_behaviour.clear()
        self.requests.clear()

    def stats(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "by_model": dict(self.counts),
            "by_path": dict(self.by_path),
            "by_behaviour": dict(self.by_behaviour),
            "script_pending": len(self.script_queue),
        }

    async def _script_endpoint(self, request: web.Request) -> web.Response:
        try:
            items = orjson.loads(await request.read())
            if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                raise ValueError("body must be a JSON list of behaviour strings")
            self.script(items)
        except (ValueError, orjson.JSONDecodeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"queued": len(self.script_queue)})

    async def _stats_endpoint(self, request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(self.stats()), content_type="application/json")

    async def _requests_endpoint(self, request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(list(self.requests)), content_type="application/json")

    async def _reset_endpoint(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"ok": True})

    # -------------------------------------------------------- request bookkeeping

    def _admit(self, request: web.Request, body: dict[str, Any]) -> Behaviour:
        model = str(body.get("model") or "")
        self.total += 1
        self.counts[model] += 1
        self.by_path[request.path] += 1
        if self.script_queue:
            behaviour = self.script_queue.popleft()
        else:
            behaviour = parse_behaviour(model) or _NORMAL
            if behaviour[0] == "flaky":
                behaviour = ("error-500", 0.0) if self.counts[model] <= behaviour[1] else _NORMAL
        self.by_behaviour[behaviour[0]] += 1
        headers = request.headers
        self.requests.append(
            {
                "path": request.path,
                "model": model,
                "behaviour": behaviour[0],
                "headers": {h: headers[h] for h in _LOG_HEADERS if h in headers},
                "body": body,
            }
        )
        return behaviour

    def _next_id(self, prefix: str) -> str:
        self._seq += 1
        return f"{prefix}{self._seq:08d}"

    # -------------------------------------------------------- errors

    @staticmethod
    def _error(status: int, retry_after: float, *, anthropic: bool) -> web.Response:
        headers: dict[str, str] = {}
        if status == 429:
            headers["Retry-After"] = f"{retry_after:g}"
        message = f"stub upstream error {status}"
        if anthropic:
            etype = {
                400: "invalid_request_error",
                401: "authentication_error",
                402: "billing_error",
                403: "permission_error",
                404: "not_found_error",
                413: "request_too_large",
                429: "rate_limit_error",
                529: "overloaded_error",
            }.get(status, "api_error")
            doc: dict[str, Any] = {"type": "error", "error": {"type": etype, "message": message}}
        else:
            etype, code = {
                400: ("invalid_request_error", None),
                401: ("invalid_request_error", "invalid_api_key"),
                402: ("insufficient_quota", "insufficient_quota"),
                403: ("permission_error", None),
                404: ("invalid_request_error", "model_not_found"),
                429: ("rate_limit_error", "rate_limit_exceeded"),
            }.get(status, ("server_error", None))
            doc = {"error": {"message": message, "type": etype, "param": None, "code": code}}
        return web.Response(
            status=status, body=orjson.dumps(doc), content_type="application/json", headers=headers
        )

    @staticmethod
    def _invalid(message: str, *, anthropic: bool) -> web.Response:
        if anthropic:
            doc: dict[str, Any] = {
                "type": "error",
                "error": {"type": "invalid_request_error", "message": message},
            }
        else:
            doc = {
                "error": {
                    "message": message,
                    "type": "invalid_request_error",
                    "param": None,
                    "code": None,
                }
            }
        return web.Response(status=400, body=orjson.dumps(doc), content_type="application/json")

    async def _pre(self, behaviour: Behaviour, *, stream: bool) -> None:
        """Delays that happen before the headers."""
        name, arg = behaviour
        if name == "stall-before":
            await asyncio.sleep(arg)
        elif name == "slow":
            await asyncio.sleep(arg / 1000.0)
        elif name == "stall-mid" and not stream:
            await asyncio.sleep(arg)

    @staticmethod
    async def _write_parts(
        request: web.Request, resp: web.StreamResponse, head: bytes, tail: bytes, b: Behaviour
    ) -> web.StreamResponse:
        """Write ``head``; then per behaviour stall, cut or write ``tail`` and finish."""
        if b[0] == "bad-json" and resp.content_type == "text/event-stream":
            head += b"data: {not json\n\n"
        if b[0] == "cut-mid":
            await resp.write(head)
            transport = request.transport
            if transport is not None:
                transport.close()
            raise asyncio.CancelledError  # aiohttp drops the handler quietly
        if b[0] == "stall-mid":
            await resp.write(head)
            await asyncio.sleep(b[1])
        else:
            tail = head + tail
        await resp.write(tail)
        await resp.write_eof()
        return resp

    async def _json_answer(
        self, request: web.Request, doc: dict[str, Any], b: Behaviour
    ) -> web.StreamResponse:
        data = b"<html>not json" if b[0] == "bad-json" else orjson.dumps(doc)
        if b[0] != "cut-mid":
            return web.Response(body=data, content_type="application/json")
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.content_length = len(data)
        await resp.prepare(request)
        half = len(data) // 2
        return await self._write_parts(request, resp, data[:half], data[half:], b)

    # -------------------------------------------------------- OpenAI

    def _scripted(self, body: dict[str, Any]) -> dict[str, Any] | None:
        queue = self.replies.get(str(body.get("model") or ""))
        return queue.popleft() if queue else None

    def _plan_openai(self, body: dict[str, Any]) -> _Plan:
        plan = _Plan()
        messages = body.get("messages") or []
        last = messages[-1] if messages else {}
        last_text = _text(last.get("content")) if isinstance(last, dict) else ""
        if isinstance(last, dict) and last.get("role") == "tool":
            last_text = "tool result: " + last_text
        plan.prompt_tokens = sum(
            _words(_text(m.get("content"))) for m in messages if isinstance(m, dict)
        )
        tools = [t.get("function") or {} for t in body.get("tools") or [] if isinstance(t, dict)]
        choice = body.get("tool_choice")
        if tools and choice != "none":
            forced: str | None = None
            if choice == "required":
                forced = ""
            elif isinstance(choice, dict):
                forced = str((choice.get("function") or {}).get("name") or "")
            user_text = last_text if isinstance(last, dict) and last.get("role") == "user" else ""
            name = _pick_tool(tools, forced, user_text)
            if name:
                schema = next((t.get("parameters") for t in tools if t.get("name") == name), None)
                plan.tool_name = name
                plan.tool_args = orjson.dumps(_example(schema or {}, last_text)).decode()
                plan.finish = "tool"
                return plan
        if last_text.startswith("echo:"):  # the answer is the rest of the text, verbatim
            plan.text = last_text[5:]
            return plan
        reply = "stub reply: " + last_text
        fmt = body.get("response_format")
        if isinstance(fmt, dict) and fmt.get("type") == "json_object":
            reply = orjson.dumps({"reply": reply}).decode()
        elif isinstance(fmt, dict) and fmt.get("type") == "json_schema":
            schema = (fmt.get("json_schema") or {}).get("schema") or {}
            reply = orjson.dumps(_example(schema, reply)).decode()
        else:
            reply, _ = _apply_stop(reply, body.get("stop"))
            limit = body.get("max_completion_tokens") or body.get("max_tokens")
            if isinstance(limit, int) and limit < _words(reply):
                reply = " ".join(reply.split()[:limit])
                plan.finish = "length"
        plan.text = reply
        return plan

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return self._invalid("body is not valid JSON", anthropic=False)
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return self._invalid("'messages' is required", anthropic=False)
        b = self._admit(request, body)
        stream = bool(body.get("stream"))
        await self._pre(b, stream=stream)
        if b[0].startswith("error-"):
            return self._error(int(b[0][6:]), b[1], anthropic=False)
        scripted = self._scripted(body)
        plan = self._plan_openai(body)
        if scripted is not None:
            plan.text = str(scripted.get("content") or "")
            calls = [(str(c.get("name")), c["arguments"] if isinstance(c.get("arguments"), str)
                      else orjson.dumps(c.get("arguments") or {}).decode())
                     for c in scripted.get("tool_calls") or ()]
            plan.tool_name, plan.tool_args = calls[0] if calls else (None, "")
            plan.extra_calls = calls[1:]
            plan.finish = "tool" if calls else "stop"
        model = str(body.get("model") or "stub-model")
        cid = self._next_id("chatcmpl-stub")
        created = int(time.time())
        finish = {"stop": "stop", "length": "length", "tool": "tool_calls"}.get(plan.finish, "stop")
        usage = {
            "prompt_tokens": plan.prompt_tokens,
            "completion_tokens": plan.completion_tokens,
            "total_tokens": plan.prompt_tokens + plan.completion_tokens,
        }
        if not stream:
            message: dict[str, Any] = {"role": "assistant", "content": plan.text or None}
            if plan.tool_name:
                message["tool_calls"] = [
                    {
                        "id": self._next_id("call_stub"),
                        "type": "function",
                        "function": {"name": name, "arguments": args},
                    }
                    for name, args in plan.calls()
                ]
            logprobs: dict[str, Any] | None = None
            if body.get("logprobs") is True:
                # deterministic: -0.05 per token, -1.5 when the question says "unsure"
                lp = -1.5 if "unsure" in _text(body["messages"][-1].get("content")) else -0.05
                logprobs = {"content": [
                    {"token": w, "logprob": lp, "bytes": None, "top_logprobs": []}
                    for w in (plan.text or "").split()
                ]}
            doc = {
                "id": cid,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {"index": 0, "message": message, "finish_reason": finish, "logprobs": logprobs}
                ],
                "usage": junk_usage(b[0], usage),
                "system_fingerprint": None,
            }
            if b[0] == "bad-choices":
                doc["choices"] = "not a list"
            return await self._json_answer(request, doc, b)

        opts = body.get("stream_options")
        include_usage = isinstance(opts, dict) and bool(opts.get("include_usage"))
        base: dict[str, Any] = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": None,
        }
        if include_usage:
            base["usage"] = None

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            return b"data: " + orjson.dumps({**base, "choices": [choice]}) + b"\n\n"

        frames = [chunk({"role": "assistant", "content": ""})]
        if plan.tool_name:
            if plan.text:
                frames.append(chunk({"content": plan.text}))
            for index, (name, args) in enumerate(plan.calls()):
                half = len(args) // 2
                frames.append(
                    chunk(
                        {
                            "tool_calls": [
                                {
                                    "index": index,
                                    "id": self._next_id("call_stub"),
                                    "type": "function",
                                    "function": {"name": name, "arguments": ""},
                                }
                            ]
                        }
                    )
                )
                for piece in (args[:half], args[half:]):
                    frames.append(
                        chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
                    )
        else:
            frames.extend(chunk({"content": piece}) for piece in _split4(plan.text))
        if b[0] == "bad-choices":
            frames.insert(3, b"data: " + orjson.dumps({**base, "choices": "oops"}) + b"\n\n")
        frames.append(chunk({}, finish))
        if include_usage:
            junk = junk_usage(b[0], usage)
            frames.append(
                b"data: " + orjson.dumps({**base, "choices": [], "usage": junk}) + b"\n\n"
            )
        frames.append(b"data: [DONE]\n\n")
        resp = web.StreamResponse(headers=_SSE_HEADERS)
        await resp.prepare(request)
        return await self._write_parts(request, resp, b"".join(frames[:3]), b"".join(frames[3:]), b)

    # -------------------------------------------------------- embeddings and models

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return self._invalid("body is not valid JSON", anthropic=False)
        if not isinstance(body, dict) or "input" not in body:
            return self._invalid("'input' is required", anthropic=False)
        b = self._admit(request, body)
        await self._pre(b, stream=False)
        if b[0].startswith("error-"):
            return self._error(int(b[0][6:]), b[1], anthropic=False)
        raw_input = body["input"]
        if isinstance(raw_input, str):
            texts = [raw_input]
        elif raw_input and all(isinstance(x, int) for x in raw_input):
            texts = [" ".join(map(str, raw_input))]
        else:
            texts = [x if isinstance(x, str) else " ".join(map(str, x)) for x in raw_input]
        dim = body.get("dimensions") or 16
        if not isinstance(dim, int) or dim < 1:
            return self._invalid("'dimensions' must be a positive integer", anthropic=False)
        as_b64 = body.get("encoding_format") == "base64"
        data = []
        for i, text in enumerate(texts):
            vec = _embedding(text, dim)
            emb: Any = base64.b64encode(struct.pack(f"<{dim}f", *vec)).decode() if as_b64 else vec
            data.append({"object": "embedding", "index": i, "embedding": emb})
        tokens = sum(_words(t) for t in texts)
        doc = {
            "object": "list",
            "data": data,
            "model": str(body.get("model") or "stub-embed"),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return await self._json_answer(request, doc, b)

    async def _models(self, request: web.Request) -> web.Response:
        ids = ["stub-model", "stub-embed", *(m for m in self.counts if m)]
        data = [
            {"id": m, "object": "model", "created": 0, "owned_by": "stub"}
            for m in dict.fromkeys(ids)
        ]
        return web.Response(
            body=orjson.dumps({"object": "list", "data": data}), content_type="application/json"
        )

    # -------------------------------------------------------- Anthropic

    def _plan_anthropic(self, body: dict[str, Any]) -> _Plan:
        plan = _Plan()
        messages = body["messages"]
        last = messages[-1] if messages else {}
        content = last.get("content") if isinstance(last, dict) else None
        last_text = _text(content)
        is_tool_result = isinstance(content, list) and any(
            isinstance(c, dict) and c.get("type") == "tool_result" for c in content
        )
        if is_tool_result:
            last_text = "tool result: " + last_text
        plan.prompt_tokens = _words(_text(body.get("system"))) + sum(
            _words(_text(m.get("content"))) for m in messages if isinstance(m, dict)
        )
        tools = [t for t in body.get("tools") or [] if isinstance(t, dict)]
        choice = body.get("tool_choice") or {}
        ctype = choice.get("type") if isinstance(choice, dict) else None
        if tools and ctype != "none":
            forced: str | None = None
            if ctype == "any":
                forced = ""
            elif ctype == "tool":
                forced = str(choice.get("name") or "")
            user_text = (
                last_text
                if isinstance(last, dict) and last.get("role") == "user" and not is_tool_result
                else ""
            )
            name = _pick_tool(tools, forced, user_text)
            if name:
                schema = next((t.get("input_schema") for t in tools if t.get("name") == name), None)
                plan.tool_name = name
                plan.tool_args = orjson.dumps(_example(schema or {}, last_text)).decode()
                plan.finish = "tool"
                return plan
        reply, plan.stop_sequence = _apply_stop(
            "stub reply: " + last_text, body.get("stop_sequences")
        )
        if plan.stop_sequence is not None:
            plan.finish = "stop_sequence"
        limit = body["max_tokens"]
        if limit < _words(reply):
            reply = " ".join(reply.split()[:limit])
            plan.finish = "length"
        plan.text = reply
        return plan

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return self._invalid("body is not valid JSON", anthropic=True)
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return self._invalid("messages: Field required", anthropic=True)
        if not isinstance(body.get("max_tokens"), int):
            return self._invalid("max_tokens: Field required", anthropic=True)
        b = self._admit(request, body)
        stream = bool(body.get("stream"))
        await self._pre(b, stream=stream)
        if b[0].startswith("error-"):
            return self._error(int(b[0][6:]), b[1], anthropic=True)
        plan = self._plan_anthropic(body)
        model = str(body.get("model") or "stub-model")
        mid = self._next_id("msg_stub")
        stop_reason = {
            "stop": "end_turn",
            "length": "max_tokens",
            "tool": "tool_use",
            "stop_sequence": "stop_sequence",
        }[plan.finish]
        tool_id = self._next_id("toolu_stub") if plan.tool_name else ""
        if not stream:
            content: list[dict[str, Any]] = []
            if plan.tool_name:
                content.append(
                    {
                        "type": "tool_use",
                        "id": tool_id,
                        "name": plan.tool_name,
                        "input": orjson.loads(plan.tool_args),
                    }
                )
            else:
                content.append({"type": "text", "text": plan.text})
            doc = {
                "id": mid,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": content,
                "stop_reason": stop_reason,
                "stop_sequence": plan.stop_sequence,
                "usage": junk_usage(b[0], {
                    "input_tokens": plan.prompt_tokens,
                    "output_tokens": plan.completion_tokens,
                }),
            }
            return await self._json_answer(request, doc, b)

        def ev(name: str, data: dict[str, Any]) -> bytes:
            return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"

        frames = [
            ev(
                "message_start",
                {
                    "type": "message_start",
                    "message": {
                        "id": mid,
                        "type": "message",
                        "role": "assistant",
                        "model": model,
                        "content": [],
                        "stop_reason": None,
                        "stop_sequence": None,
                        "usage": {"input_tokens": plan.prompt_tokens, "output_tokens": 1},
                    },
                },
            )
        ]
        if plan.tool_name:
            block: dict[str, Any] = {
                "type": "tool_use",
                "id": tool_id,
                "name": plan.tool_name,
                "input": {},
            }
            args = plan.tool_args
            half = len(args) // 2
            deltas = [
                {"type": "input_json_delta", "partial_json": p} for p in (args[:half], args[half:])
            ]
        else:
            block = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": p} for p in _split4(plan.text)]
        frames.append(
            ev(
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": block},
            )
        )
        frames.append(ev("ping", {"type": "ping"}))
        frames.extend(
            ev("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": d})
            for d in deltas
        )
        if b[0] == "bad-choices":
            frames.insert(5, ev("content_block_delta", {
                "type": "content_block_delta", "index": "zero",
                "delta": {"type": "input_json_delta", "partial_json": "{"},
            }))
        frames.append(ev("content_block_stop", {"type": "content_block_stop", "index": 0}))
        frames.append(
            ev(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop_reason, "stop_sequence": plan.stop_sequence},
                    "usage": junk_usage(b[0], {"output_tokens": plan.completion_tokens}),
                },
            )
        )
        frames.append(ev("message_stop", {"type": "message_stop"}))
        resp = web.StreamResponse(headers=_SSE_HEADERS)
        await resp.prepare(request)
        # head = message_start, content_block_start, ping and the first 2 deltas
        return await self._write_parts(request, resp, b"".join(frames[:5]), b"".join(frames[5:]), b)


# ------------------------------------------------------------------ helpers for sync code and CLI


@contextlib.contextmanager
def run_stub_in_thread(host: str = "127.0.0.1", port: int = 0) -> Iterator[StubUpstream]:
    """Run a started :class:`StubUpstream` on its own event loop thread for sync tests."""
    stub = StubUpstream(host, port)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(stub.start())
        except BaseException as exc:
            failure.append(exc)
            loop.run_until_complete(stub.stop())
            loop.close()
            started.set()
            return
        started.set()
        loop.run_forever()
        loop.run_until_complete(stub.stop())
        loop.close()

    thread = threading.Thread(target=run, name="stub-upstream", daemon=True)
    thread.start()
    started.wait()
    if failure:
        raise failure[0]
    try:
        yield stub
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)


async def _serve(host: str, port: int, reuse_port: bool) -> None:
    stub = StubUpstream(host, port, reuse_port=reuse_port)
    url = await stub.start()
    print(f"stub upstream listening on {url} (OpenAI base {url}/v1)", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await stub.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m lockgate.testing.stub_upstream",
        description="Deterministic stand-in OpenAI/Anthropic model server.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument(
        "--reuse-port", action="store_true", help="SO_REUSEPORT, to run several processes"
    )
    args = parser.parse_args(argv)
    coro = _serve(args.host, args.port, args.reuse_port)
    with contextlib.suppress(KeyboardInterrupt):
        try:
            import uvloop
        except ImportError:
            asyncio.run(coro)
        else:
            uvloop.run(coro)


if __name__ == "__main__":
    main()
