"""One facade's rule engine: an HTTP reverse proxy in front of a legacy service, with AI
rules. Behind :mod:`lockgate.facade.fastpath` it only sees requests a rule matches (the
front proxies the rest itself, with the same pass-through guarantees below); on its own it
serves everything.

Pass-through (no rule matches method + path) streams both ways and changes nothing but
hop-by-hop headers (RFC 9110 7.6.1) and, unless ``preserve_host``, ``Host``: method, path
and query (raw bytes), headers (repeated ones kept), bodies (fixed-length or chunked, not
decompressed), status codes and reasons, and streaming responses chunk by chunk.

When rules match, the inspected body is buffered (up to ``max_body_bytes``):

* request side, in rule order: ``block`` (403; errors -> 503, fail closed), ``redact``
  (errors -> 502), ``enrich`` into a request field (within ``budget_ms``, else the request
  goes on unchanged and a miss is counted);
* response side: enrichments run concurrently, each within its budget (a miss returns the
  legacy answer unchanged), then ``redact`` (after enrichment, so injected text is covered;
  errors or an unbufferable non-text body -> 502, fail closed), then ``block``.
* ``event`` and ``job`` destinations run after the answer is sent and never delay it.
* shadow mode (the facade's or the rule's ``shadow``) computes everything, injects nothing,
  blocks nothing and logs ``lockgate.facade_shadow`` with what would have changed.

A response that is not bufferable (no ``Content-Length`` or larger than ``max_body_bytes``)
is streamed: enrichment misses with reason ``too_large``; ``redact`` redacts text bodies on
the fly (:func:`~lockgate.guards.stream_redactor`, a bounded hold-back, never the whole
stream) and refuses non-text ones (502).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import structlog
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from lockgate.events.transports import EventTransport, open_transport
from lockgate.facade.headers import forward_headers, media_type
from lockgate.facade.metrics import FacadeMetrics
from lockgate.facade.paths import MISSING, get_path, set_path
from lockgate.facade.rules import Body, Rule, RuleEngine, pii_found, redact_json
from lockgate.guards import stream_redactor
from lockgate.settings.facades import FacadeSettings

__all__ = ["FacadeProxy", "JobSubmitter"]

log = structlog.get_logger("lockgate.facade")

SMALL_BODY = 64 * 1024
"""Fixed-length bodies up to this size are read at once (faster than streaming)."""

JobSubmitter = Callable[[str, Any, str], Awaitable[str]]
"""(task, input, idempotency key) -> job id."""


def _error(status: int, code: str, message: str) -> web.Response:
    body = orjson.dumps({"error": {"message": message, "type": "facade_error", "code": code}})
    return web.Response(status=status, body=body, content_type="application/json")


def _is_text(mt: str) -> bool:
    return (mt.startswith("text/") or mt == "application/json" or mt.endswith("+json")
            or mt in ("application/xml", "application/x-ndjson",
                      "application/x-www-form-urlencoded", "application/javascript"))


@dataclass
class _Outcome:
    """What the request-side rules decided."""

    body: bytes | None = None
    reply: web.StreamResponse | None = None
    pending: list[tuple[Rule, asyncio.Task[Any]]] = field(default_factory=list)
    later: list[tuple[Rule, Body]] = field(default_factory=list)


class FacadeProxy:
    def __init__(
        self,
        settings: FacadeSettings,
        engine: RuleEngine | None,
        metrics: FacadeMetrics,
        *,
        submit_job: JobSubmitter | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.metrics = metrics
        self.submit_job = submit_job
        self.rules = [Rule.compile(r, settings.shadow) for r in settings.rules]
        if self.rules and engine is not None:
            engine.check_tasks(self.rules)
        if any(r.spec.task for r in self.rules) and engine is None:
            raise ValueError(f"facade '{settings.name}': rules with tasks need the pipeline")
        self._by_method: dict[str, list[Rule]] = {}
        for rule in self.rules:
            for m in rule.methods:
                self._by_method.setdefault(m, []).append(rule)
        base = settings.upstream.rstrip("/")
        self._base = base
        self._upstream_host = URL(base).raw_host or ""
        self._session: aiohttp.ClientSession | None = None
        self._transports: dict[str, EventTransport] = {}
        self._background: set[asyncio.Task[None]] = set()
        name = settings.name
        self._c_pass = metrics.requests.labels(name, "pass")
        self._c_ruled = metrics.requests.labels(name, "ruled")
        self._c_blocked = metrics.requests.labels(name, "blocked")
        self._c_upstream = metrics.requests.labels(name, "upstream_error")
        self._c_closed = metrics.requests.labels(name, "closed")
        self._drop = () if settings.preserve_host else ("host",)

    # ------------------------------------------------------------------ lifecycle

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            s = self.settings
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30, ttl_dns_cache=60),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=s.connect_timeout,
                                              sock_read=s.read_timeout),
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def aclose(self) -> None:
        if self._background:
            await asyncio.wait(self._background, timeout=10)
        for t in self._transports.values():
            with contextlib.suppress(Exception):
                await t.aclose()
        if self._session is not None:
            await self._session.close()

    # ------------------------------------------------------------------ entry

    def has_rule(self, method: str, path: str) -> bool:
        """Some rule matches ``method`` + ``path`` (the front sends such requests here)."""
        rules = self._by_method.get(method)
        return bool(rules) and any(r.path_matches(path) for r in rules)  # type: ignore[union-attr]

    def rule_names(self, method: str, path: str) -> list[str]:
        """The rules whose method + path match (the call log names them)."""
        return [r.name for r in self._by_method.get(method, ()) if r.path_matches(path)]

    def count_pass(self) -> None:
        self._c_pass.inc()

    def count_upstream_error(self) -> None:
        self._c_upstream.inc()

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        rules = self._by_method.get(request.method)
        if rules:
            matched = [r for r in rules if r.path_matches(request.path)]
            if matched:
                return await self._ruled(request, matched)
        self._c_pass.inc()
        return await self._forward(request, None, None)

    # ------------------------------------------------------------------ pass-through

    def _url(self, request: web.BaseRequest) -> URL:
        return URL(self._base + request.raw_path, encoded=True)

    async def _send(
        self, request: web.BaseRequest, body: bytes | None, headers: CIMultiDict[str] | None,
    ) -> aiohttp.ClientResponse:
        if headers is None:
            headers = forward_headers(request.raw_headers, drop=self._drop)
        data: Any = body
        if body is None and request.body_exists:
            length = request.content_length
            data = (await request.read()) if length is not None and length <= SMALL_BODY \
                else request.content
        return await self.session().request(
            request.method, self._url(request), headers=headers, data=data,
            allow_redirects=False, compress=None, chunked=None,
        )

    async def _forward(
        self, request: web.BaseRequest, body: bytes | None, headers: CIMultiDict[str] | None,
    ) -> web.StreamResponse:
        try:
            resp = await self._send(request, body, headers)
        except (TimeoutError, aiohttp.ServerTimeoutError):
            self._c_upstream.inc()
            return _error(504, "upstream_timeout", "The service behind the facade timed out.")
        except aiohttp.ClientError as exc:
            self._c_upstream.inc()
            return _error(502, "upstream_unreachable",
                          f"The service behind the facade is unreachable: {type(exc).__name__}")
        try:
            return await self._relay(request, resp)
        finally:
            resp.release()

    async def _relay(self, request: web.BaseRequest, resp: aiohttp.ClientResponse,
                     transform: Callable[[bytes], bytes] | None = None,
                     flush: Callable[[], bytes] | None = None,
                     extra: dict[str, str] | None = None) -> web.StreamResponse:
        headers = forward_headers(resp.raw_headers)
        if extra:
            headers.update(extra)
        length = resp.content_length
        if transform is None and length is not None and length <= SMALL_BODY \
                and request.method != "HEAD" and resp.status not in (204, 304):
            data = await resp.read()
            small = web.Response(status=resp.status, reason=resp.reason, headers=headers)
            small.body = data
            return small
        if transform is not None:
            headers.popall("Content-Length", None)
        out = web.StreamResponse(status=resp.status, reason=resp.reason, headers=headers)
        await out.prepare(request)
        try:
            async for chunk in resp.content.iter_any():
                await out.write(transform(chunk) if transform is not None else chunk)
            if flush is not None:
                await out.write(flush())
            await out.write_eof()
        except (aiohttp.ClientPayloadError, TimeoutError, aiohttp.ServerTimeoutError):
            # the upstream broke off mid-body: so do we (the client sees a cut stream)
            if request.transport is not None:
                request.transport.close()
        except ConnectionResetError:
            pass  # the client left
        return out

    # ------------------------------------------------------------------ with rules

    async def _ruled(self, request: web.BaseRequest, rules: list[Rule]) -> web.StreamResponse:
        rid = request.headers.get("x-request-id") or uuid.uuid4().hex
        self._c_ruled.inc()
        req_rules = [r for r in rules if r.side == "request"]
        resp_rules = [r for r in rules if r.side == "response"]
        body: bytes | None = None
        outcome = _Outcome()
        if req_rules:
            raw = await self._read_limited(request)
            if raw is None:
                if any(r.spec.action != "enrich" for r in req_rules):
                    self._c_closed.inc()
                    return _error(413, "body_too_large", "The request body is larger than the "
                                  "facade inspects; a protective rule refuses it.")
                for r in req_rules:
                    self._miss(r, "too_large")
                req_rules = []
            else:
                body = raw
                outcome = await self._request_rules(request, Body.of(raw, request.headers.get(
                    "Content-Type")), req_rules, rid)
                if outcome.reply is not None:
                    return outcome.reply
                if outcome.body is not None:
                    body = outcome.body
        headers = None
        if body is not None:
            headers = forward_headers(request.raw_headers, drop=(*self._drop, "content-length"))
        try:
            resp = await self._send(request, body, headers)
        except (TimeoutError, aiohttp.ClientError) as exc:
            for _, task in outcome.pending:
                task.cancel()
            self._c_upstream.inc()
            if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
                return _error(504, "upstream_timeout", "The service behind the facade timed "
                              "out.")
            return _error(502, "upstream_unreachable", "The service behind the facade is "
                          f"unreachable: {type(exc).__name__}")
        try:
            return await self._response_rules(request, resp, resp_rules, outcome, rid)
        finally:
            resp.release()

    async def _read_limited(self, request: web.BaseRequest) -> bytes | None:
        limit = self.settings.max_body_bytes
        length = request.content_length
        if length is not None and length > limit:
            return None
        data = await request.content.read(limit + 1) if request.body_exists else b""
        if len(data) > limit:
            return None
        # read() returns what arrived so far for streamed bodies: read to the end
        chunks = [data]
        total = len(data)
        while request.body_exists and not request.content.at_eof():
            more = await request.content.read(limit + 1 - total)
            if not more:
                break
            total += len(more)
            if total > limit:
                return None
            chunks.append(more)
        return b"".join(chunks)

    async def _request_rules(
        self, request: web.BaseRequest, body: Body, rules: list[Rule], rid: str,
    ) -> _Outcome:
        out = _Outcome()
        for rule in rules:
            if not rule.body_matches(body):
                continue
            action = rule.spec.action
            if action == "block":
                reply = await self._block(rule, body, rid)
                if reply is not None:
                    out.reply = reply
                    return out
            elif action == "redact":
                reply = self._redact(rule, body)
                if reply is not None:
                    out.reply = reply
                    return out
            else:
                to = rule.spec.to
                assert to is not None
                if to.request_field:
                    await self._enrich_request(rule, body, rid)
                elif to.event or to.job:
                    out.later.append((rule, body))
                else:  # response header/field from the request: overlaps the upstream call
                    out.pending.append((rule, asyncio.ensure_future(
                        self._timed(rule, body, rid))))
        if body.changed:
            out.body = body.encode()
        return out

    async def _timed(self, rule: Rule, body: Body, rid: str) -> Any:
        return await asyncio.wait_for(self._engine().compute(rule, body, rid),
                                      timeout=rule.spec.budget_ms / 1000)

    def _engine(self) -> RuleEngine:
        assert self.engine is not None
        return self.engine

    async def _enrich_request(self, rule: Rule, body: Body, rid: str) -> None:
        value = await self._settle(rule, asyncio.ensure_future(self._timed(rule, body, rid)))
        if value is MISSING:
            return
        to = rule.spec.to
        assert to is not None and to.request_field is not None
        if rule.shadow:
            self._shadow(rule, to.request_field, get_path(body.doc, to.request_field)
                         if body.is_json else None, value)
            return
        if not body.is_json or not set_path(body.doc, to.request_field, value):
            self._miss(rule, "unplaceable")
            return
        body.changed = True

    async def _settle(self, rule: Rule, task: asyncio.Future[Any]) -> Any:
        """The enrichment's value, or MISSING after counting why it missed."""
        try:
            value = await task
        except TimeoutError:
            self._miss(rule, "timeout")
            return MISSING
        except Exception as exc:
            log.warning("lockgate.facade_enrich_failed", facade=self.settings.name,
                        rule=rule.name, error=f"{type(exc).__name__}: {exc}"[:300])
            self._miss(rule, "error")
            return MISSING
        if value is MISSING:
            self._miss(rule, "no_input")
        return value

    def _miss(self, rule: Rule, reason: str) -> None:
        self.metrics.misses.labels(self.settings.name, rule.name, reason).inc()

    def _shadow(self, rule: Rule, where: str, before: Any, after: Any) -> None:
        differs = before != after
        self.metrics.shadow.labels(self.settings.name, rule.name,
                                   "yes" if differs else "no").inc()
        log.info("lockgate.facade_shadow", facade=self.settings.name, rule=rule.name,
                 where=where, before=before, after=after, differs=differs)

    async def _block(self, rule: Rule, body: Body, rid: str) -> web.Response | None:
        try:
            if rule.scanner is not None:
                blocked = pii_found(rule.scanner, body)
            else:
                blocked = await asyncio.wait_for(
                    self._engine().should_block(rule, body, rid),
                    timeout=rule.spec.budget_ms / 1000)
        except Exception as exc:
            log.warning("lockgate.facade_block_failed", facade=self.settings.name,
                        rule=rule.name, error=f"{type(exc).__name__}: {exc}"[:300])
            if rule.shadow:
                self._shadow(rule, "block", False, "error")
                return None
            self._c_closed.inc()
            return _error(503, "protective_rule_failed", f"The facade rule '{rule.name}' "
                          "could not check this message, so it was not let through.")
        if rule.shadow:
            self._shadow(rule, "block", False, blocked)
            return None
        if blocked:
            self._c_blocked.inc()
            return _error(403, "blocked_by_rule", f"Blocked by the facade rule '{rule.name}'.")
        return None

    def _redact(self, rule: Rule, body: Body) -> web.Response | None:
        assert rule.scanner is not None
        if rule.shadow:
            probe = Body(body.raw, body.content_type, body.doc)
            try:
                found = redact_json(rule.scanner, probe)
            except Exception as exc:
                found = -1
                log.warning("lockgate.facade_redact_failed", error=str(exc)[:300])
            self._shadow(rule, "redact", 0, found)
            return None
        try:
            redact_json(rule.scanner, body)
        except Exception as exc:
            log.warning("lockgate.facade_redact_failed", facade=self.settings.name,
                        rule=rule.name, error=f"{type(exc).__name__}: {exc}"[:300])
            self._c_closed.inc()
            return _error(502, "protective_rule_failed", f"The facade rule '{rule.name}' "
                          "could not redact this message, so it was not let through.")
        return None

    # ------------------------------------------------------------------ response side

    async def _response_rules(
        self, request: web.BaseRequest, resp: aiohttp.ClientResponse, rules: list[Rule],
        outcome: _Outcome, rid: str,
    ) -> web.StreamResponse:
        length = resp.content_length
        bufferable = (length is not None and length <= self.settings.max_body_bytes
                      and request.method != "HEAD")
        needs_body = bool(rules) or bool(outcome.pending)
        if not needs_body or not bufferable:
            return await self._stream_with_rules(request, resp, rules, outcome, rid)
        raw = await resp.read()
        body = Body.of(raw, resp.headers.get("Content-Type"))
        headers = forward_headers(resp.raw_headers)
        active = [r for r in rules if r.body_matches(body)]
        enrich = [r for r in active if r.spec.action == "enrich"]
        placed = [(r, asyncio.ensure_future(self._timed(r, body, rid))) for r in enrich
                  if r.spec.to is not None and not (r.spec.to.event or r.spec.to.job)]
        later = [(r, body) for r in enrich if r.spec.to is not None
                 and (r.spec.to.event or r.spec.to.job)]
        original = body.doc if body.is_json else MISSING
        for rule, task in [*outcome.pending, *placed]:
            value = await self._settle(rule, task)
            if value is not MISSING:
                self._place(rule, value, body, headers, original)
        for rule in active:
            if rule.spec.action == "redact":
                reply = self._redact(rule, body)
                if reply is not None:
                    return reply
            elif rule.spec.action == "block":
                reply = await self._block(rule, body, rid)
                if reply is not None:
                    return reply
        self._run_later([*outcome.later, *later], request, resp.status, rid)
        data = body.encode()
        headers.popall("Content-Length", None)
        out = web.Response(status=resp.status, reason=resp.reason, headers=headers)
        out.body = data
        return out

    def _place(self, rule: Rule, value: Any, body: Body, headers: CIMultiDict[str],
               original: Any) -> None:
        to = rule.spec.to
        assert to is not None
        if to.response_header:
            text = value if isinstance(value, str) else orjson.dumps(value).decode()
            text = text.replace("\r", " ").replace("\n", " ")
            if rule.shadow:
                self._shadow(rule, f"header:{to.response_header}",
                             headers.get(to.response_header), text)
            else:
                headers[to.response_header] = text
            return
        if to.response_field:
            if not body.is_json or not isinstance(body.doc, dict):
                self._miss(rule, "not_json")
                return
            if rule.shadow:
                before = get_path(original, to.response_field)
                self._shadow(rule, f"field:{to.response_field}",
                             None if before is MISSING else before, value)
                return
            if set_path(body.doc, to.response_field, value):
                body.changed = True
            else:
                self._miss(rule, "unplaceable")

    async def _stream_with_rules(
        self, request: web.BaseRequest, resp: aiohttp.ClientResponse, rules: list[Rule],
        outcome: _Outcome, rid: str,
    ) -> web.StreamResponse:
        extra: dict[str, str] = {}
        for rule, task in outcome.pending:
            to = rule.spec.to
            if to is None or not to.response_header:
                task.cancel()
                self._miss(rule, "too_large")
                continue
            value = await self._settle(rule, task)
            if value is not MISSING:
                scratch: CIMultiDict[str] = CIMultiDict()
                self._place(rule, value, Body(b"", ""), scratch, MISSING)
                extra.update(scratch)
        redactors = [r for r in rules if r.spec.action == "redact" and not r.shadow]
        for rule in rules:
            if rule.spec.action == "enrich" or rule.shadow:
                self._miss(rule, "too_large")
            elif rule.spec.action == "block":
                self._c_closed.inc()
                return _error(502, "protective_rule_failed", f"The facade rule '{rule.name}' "
                              "cannot check an answer this large or streamed.")
        self._run_later(outcome.later, request, resp.status, rid)
        if not redactors or request.method == "HEAD":
            return await self._relay(request, resp, extra=extra)
        if not _is_text(media_type(resp.headers.get("Content-Type"))):
            self._c_closed.inc()
            return _error(502, "protective_rule_failed", f"The facade rule "
                          f"'{redactors[0].name}' cannot redact a non-text streamed answer.")
        scanners = [r.scanner for r in redactors if r.scanner is not None]
        streams = [stream_redactor(s) for s in scanners]
        decoder = codecs.getincrementaldecoder("utf-8")("replace")

        def transform(chunk: bytes) -> bytes:
            text = decoder.decode(chunk)
            for s in streams:
                text = s.feed(text)
            return text.encode()

        def flush() -> bytes:
            text = decoder.decode(b"", final=True)
            for s in streams:
                text = s.feed(text) + s.flush()
            return text.encode()

        return await self._relay(request, resp, transform, flush, extra)

    # ------------------------------------------------------------------ after the answer

    def _run_later(self, items: list[tuple[Rule, Body]], request: web.BaseRequest,
                   status: int, rid: str) -> None:
        for rule, body in items:
            task = asyncio.ensure_future(self._deliver(rule, body, request.method,
                                                       request.path, status, rid))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _deliver(self, rule: Rule, body: Body, method: str, path: str, status: int,
                       rid: str) -> None:
        to = rule.spec.to
        assert to is not None and rule.spec.task is not None
        try:
            if to.job:
                value = body.value(rule.spec.input)
                if value is MISSING:
                    self._miss(rule, "no_input")
                    return
                if rule.shadow or self.submit_job is None:
                    self._shadow(rule, "job", None, {"task": rule.spec.task})
                    return
                job_id = await self.submit_job(rule.spec.task, value, f"facade:{rid}:"
                                               f"{rule.name}")
                log.info("lockgate.facade_job", facade=self.settings.name, rule=rule.name,
                         job=job_id)
                return
            value = await self._engine().compute(rule, body, rid)
            if value is MISSING:
                self._miss(rule, "no_input")
                return
            event = {"facade": self.settings.name, "rule": rule.name, "method": method,
                     "path": path, "status": status, "request_id": rid, "output": value,
                     "at": time.time()}
            if rule.shadow:
                self._shadow(rule, "event", None, event)
                return
            assert to.event is not None
            transport = self._transports.get(to.event)
            if transport is None:
                transport = open_transport(to.event, group=f"facade-{self.settings.name}")
                await transport.open()
                self._transports[to.event] = transport
            await transport.publish(event, event_id=f"{self.settings.name}:{rid}:{rule.name}")
        except Exception as exc:
            log.warning("lockgate.facade_deliver_failed", facade=self.settings.name,
                        rule=rule.name, error=f"{type(exc).__name__}: {exc}"[:300])
            self._miss(rule, "error")

