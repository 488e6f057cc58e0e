"""The embeddable assistant panel: ``/widget.js``, widget tokens, chat and feedback.

Flow: the host application's *backend* mints a short-lived token with its team key
(``POST /v1/widget/tokens``), bound to an origin, a model or RAG collection, an end user
(id + groups, so RAG ACLs apply) and an expiry, and hands the token to its page. The page
loads ``<script src="https://GATEWAY/widget.js">`` and drops in
``<lockgate-assistant gateway="https://GATEWAY" token="lgw_...">``. No long-lived key ever
reaches the browser.

Routes:

- ``POST /v1/widget/tokens`` (team key; the master key is refused: a widget acts for a team)
  ``{"origin": "https://app.example", "collection": "handbook" | "model": "fast",
  "user": "alice", "groups": ["hr"], "ttl_seconds": 600}`` -> 201 ``{"token", "expires_at",
  ...}``. The origin must be in ``console.widget.allowed_origins``; the key must be allowed
  the model (``rag/<collection>``); ttl at most ``max_ttl_seconds``.
- ``POST /v1/widget/chat`` (``Authorization: Bearer lgw_...``) ``{"messages": [...]}`` ->
  SSE: ``{"type": "start", "request_id"}``, ``{"type": "delta", "text"}``...,
  ``{"type": "done", "request_id", "citations"}`` or ``{"type": "error", "message"}``.
  The call goes through the pipeline as the minting key, acting for the token's end user
  (source ``widget``): limits, budgets, guards and audit apply.
- ``POST /v1/widget/feedback`` ``{"request_id", "thumbs": "up"|"down", "comment"}`` -> 201;
  recorded by the feedback service (source ``widget``), only for calls made with a token of
  the same key.

CORS: preflights and answers carry ``Access-Control-Allow-Origin`` only for configured
origins; a request whose ``Origin`` is not the token's origin is refused (403
``origin_not_allowed``). Expired token: 401 ``widget_token_expired``. Revoked minting key:
401. Errors are OpenAI-shaped JSON.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from lockgate.api.event_stream import EventStream
from lockgate.api.request_io import api_key_of, error_response, json_response, read_json
from lockgate.console.render import STATIC_DIR
from lockgate.errors import BadRequest, Forbidden, GatewayError, NotFound, Unauthorized
from lockgate.feedback import may_give_feedback
from lockgate.pipeline import Call, EndUser, Principal
from lockgate.pipeline.call import new_request_id
from lockgate.runtime import Runtime
from lockgate.store import InvalidInput, NotFoundError
from lockgate.store.console import WidgetToken

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

_NAME = re.compile(r"^[^\s;,=]{1,200}$")
_BODY_LIMIT = 256 * 1024
_MAX_MESSAGES = 40
_MAX_CHARS = 16_000
_WIDGET_JS: bytes | None = None


def _rt(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


def _allowed(rt: Runtime) -> list[str]:
    return rt.config.console.widget.allowed_origins


def _cors(request: Request, rt: Runtime) -> dict[str, str]:
    origin = request.headers.get("origin")
    if origin and origin in _allowed(rt):
        return {"access-control-allow-origin": origin, "vary": "Origin"}
    return {"vary": "Origin"}


@router.get("/widget.js")
async def widget_js() -> Response:
    global _WIDGET_JS
    if _WIDGET_JS is None:
        _WIDGET_JS = (STATIC_DIR / "widget.js").read_bytes()
    return Response(_WIDGET_JS, media_type="text/javascript; charset=utf-8",
                    headers={"cache-control": "public, max-age=300",
                             "cross-origin-resource-policy": "cross-origin",
                             "x-content-type-options": "nosniff"})


# ----------------------------------------------------------------------- tokens


@router.post("/v1/widget/tokens")
async def mint_token(request: Request) -> Response:
    rt = _rt(request)
    try:
        principal = await rt.pipeline.authenticate(api_key_of(request))
        if principal.is_master:
            raise Forbidden("Mint widget tokens with a team key: a widget acts for a team.",
                            code="team_key_required")
        body = await read_json(request, 16 * 1024)
        unknown = sorted(set(body) - {"origin", "model", "collection", "user", "groups",
                                      "ttl_seconds"})
        if unknown:
            raise BadRequest(f"unknown field '{unknown[0]}'", param=unknown[0])
        origin = body.get("origin")
        if not isinstance(origin, str) or origin.rstrip("/") not in _allowed(rt):
            raise BadRequest("'origin' must be one of console.widget.allowed_origins.",
                             param="origin", code="origin_not_allowed")
        origin = origin.rstrip("/")
        model = await _model_of(rt, body, principal)
        user = body.get("user")
        groups = body.get("groups", [])
        if not isinstance(user, str) or not _NAME.match(user):
            raise BadRequest("'user' is the end user's id: 1-200 characters without spaces, "
                             "';', ',' or '='.", param="user")
        if not isinstance(groups, list) or len(groups) > 100 or not all(
                isinstance(g, str) and _NAME.match(g) for g in groups):
            raise BadRequest("'groups' is a list of group names (1-200 characters without "
                             "spaces, ';', ',' or '=').", param="groups")
        settings = rt.config.console.widget
        ttl = body.get("ttl_seconds", settings.default_ttl_seconds)
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not (
                0 < ttl <= settings.max_ttl_seconds):
            raise BadRequest(f"'ttl_seconds' must be a number in (0, "
                             f"{settings.max_ttl_seconds:g}].", param="ttl_seconds")
        assert rt.console is not None
        token, rec = await rt.console.mint_widget_token(
            key_id=principal.key_id, team_id=principal.team_id, origin=origin, model=model,
            user_id=user, groups=groups, ttl=float(ttl))
        return json_response({"object": "widget.token", "token": token,
                              "expires_at": rec.expires_at, "origin": origin, "model": model,
                              "user": user, "groups": list(rec.groups)}, status=201)
    except GatewayError as exc:
        return error_response(exc)


async def _model_of(rt: Runtime, body: dict[str, Any], principal: Principal) -> str:
    model, coll = body.get("model"), body.get("collection")
    if (model is None) == (coll is None):
        raise BadRequest("Give exactly one of 'model' or 'collection'.", param="model")
    if coll is not None:
        if not isinstance(coll, str) or not coll or len(coll) > 64:
            raise BadRequest("'collection' must be a collection name.", param="collection")
        from lockgate.rag.service import UnknownCollection

        try:
            await rt.rag.collection(coll)
        except UnknownCollection:
            raise NotFound(f"No RAG collection '{coll}'.", param="collection",
                           code="collection_not_found") from None
        model = f"rag/{coll}"
    if not isinstance(model, str) or not model or len(model) > 200:
        raise BadRequest("'model' must be a model name.", param="model")
    if not (rt.pipeline.router.configured(model) or rt.pipeline.grantable(model)):
        raise NotFound(f"The model '{model}' does not exist.", param="model",
                       code="model_not_found")
    if not principal.may_use(model):
        raise Forbidden(f"This key may not use '{model}'.", param="model",
                        code="model_not_allowed")
    return model


# -------------------------------------------------------------------- the panel


def _preflight(request: Request) -> Response:
    rt = _rt(request)
    origin = request.headers.get("origin")
    if not origin or origin not in _allowed(rt):
        return Response(status_code=403, headers={"vary": "Origin"})
    return Response(status_code=204, headers={
        "access-control-allow-origin": origin,
        "access-control-allow-methods": "POST",
        "access-control-allow-headers": "authorization, content-type",
        "access-control-max-age": "600",
        "vary": "Origin",
    })


@router.options("/v1/widget/chat")
async def chat_preflight(request: Request) -> Response:
    return _preflight(request)


@router.options("/v1/widget/feedback")
async def feedback_preflight(request: Request) -> Response:
    return _preflight(request)


_CACHE: dict[str, tuple[WidgetToken, Principal, float, int]] = {}
"""token -> (record, minting key's principal, cached until (monotonic), auth generation)."""


def _auth_generation(rt: Runtime) -> int:
    # bumped by Authenticator.drop(): a key revoked here or announced by another gateway
    return int(getattr(rt.pipeline.auth, "_generation", 0))


async def _lookup(rt: Runtime, raw: str) -> tuple[WidgetToken, Principal] | None:
    """The token's record and its key's principal: from the store, then cached for at most
    ``key_cache_ttl`` seconds (as API keys are), dropped at once when a key is revoked."""
    now = time.monotonic()
    gen = _auth_generation(rt)
    hit = _CACHE.get(raw)
    if hit is not None and hit[2] > now and hit[3] == gen:
        return hit[0], hit[1]
    assert rt.console is not None
    tok = await rt.console.widget_token(raw)
    if tok is None:
        return None
    key = await rt.store.get_key(tok.key_id)
    if key is None or key.revoked_at is not None:
        raise Unauthorized("The key that minted this widget token was revoked.",
                           code="revoked_api_key")
    principal = Principal(
        key_id=key.id, team_id=key.team_id, team_name=key.team_name,
        allowed_models=frozenset(key.allowed_models) if key.allowed_models is not None
        else None, key_name=key.name or None)
    if len(_CACHE) > 10_000:
        _CACHE.clear()
    _CACHE[raw] = (tok, principal, now + rt.config.key_cache_ttl, gen)
    return tok, principal


async def _token_principal(request: Request, rt: Runtime) -> tuple[WidgetToken, Principal]:
    """The token (checked: known, not expired, right origin) and the minting key's principal."""
    raw = api_key_of(request)
    found = await _lookup(rt, raw) if raw and raw.startswith("lgw_") and len(raw) < 200 \
        else None
    if found is None:
        raise Unauthorized("Unknown widget token.", code="invalid_widget_token")
    tok, principal = found
    origin = request.headers.get("origin")
    if origin != tok.origin or origin not in _allowed(rt):
        raise Forbidden("This page's origin may not use this widget token.",
                        code="origin_not_allowed")
    if tok.expires_at <= time.time():
        raise Unauthorized("The widget token has expired; reload the page.",
                           code="widget_token_expired")
    return tok, principal


def _messages(body: dict[str, Any]) -> list[dict[str, str]]:
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs or len(msgs) > _MAX_MESSAGES:
        raise BadRequest(f"'messages' is a list of 1-{_MAX_MESSAGES} messages.",
                         param="messages")
    out = []
    for m in msgs:
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant") or \
                not isinstance(m.get("content"), str) or len(m["content"]) > _MAX_CHARS:
            raise BadRequest("Each message is {role: user|assistant, content: text of at "
                             f"most {_MAX_CHARS} characters}}.", param="messages")
        out.append({"role": m["role"], "content": m["content"]})
    if out[-1]["role"] != "user" or not out[-1]["content"].strip():
        raise BadRequest("The last message must be the user's question.", param="messages")
    return out


@router.post("/v1/widget/chat")
async def widget_chat(request: Request) -> Response:
    rt = _rt(request)
    cors = _cors(request, rt)
    try:
        tok, principal = await _token_principal(request, rt)
        body = await read_json(request, _BODY_LIMIT)
        messages = _messages(body)
        call = Call(kind="chat", model=tok.model,
                    body={"model": tok.model, "messages": messages, "stream": True},
                    principal=principal, source="widget", request_id=new_request_id(),
                    end_user=tok.user_id,
                    acting_for=EndUser(user_id=tok.user_id, groups=tok.groups,
                                       ts=int(tok.created_at)))
        stream = await rt.pipeline.chat_stream(call)
    except GatewayError as exc:
        return error_response(exc, cors)
    return EventStream(_events(stream, call.request_id),
                       headers={**cors, "cache-control": "no-store",
                                "x-request-id": call.request_id})


async def _events(stream: AsyncIterator[dict[str, Any]], request_id: str) -> AsyncIterator[bytes]:
    def ev(doc: dict[str, Any]) -> bytes:
        return b"data: " + orjson.dumps(doc) + b"\n\n"

    yield ev({"type": "start", "request_id": request_id})
    citations: list[dict[str, Any]] = []
    try:
        async for chunk in stream:
            for choice in chunk.get("choices") or []:
                text = (choice.get("delta") or {}).get("content")
                if text:
                    yield ev({"type": "delta", "text": text})
            if isinstance(chunk.get("citations"), list):
                citations = chunk["citations"]
    except GatewayError as exc:
        yield ev({"type": "error", "message": exc.message, "request_id": request_id})
        return
    except Exception:
        yield ev({"type": "error", "message": "The assistant failed while answering.",
                  "request_id": request_id})
        return
    cites = [{k: c.get(k) for k in ("n", "doc_id", "title")} for c in citations
             if isinstance(c, dict)]
    yield ev({"type": "done", "request_id": request_id, "citations": cites})


@router.post("/v1/widget/feedback")
async def widget_feedback(request: Request) -> Response:
    rt = _rt(request)
    cors = _cors(request, rt)
    try:
        tok, principal = await _token_principal(request, rt)
        body = await read_json(request, 64 * 1024)
        unknown = sorted(set(body) - {"request_id", "thumbs", "comment"})
        if unknown:
            raise BadRequest(f"unknown field '{unknown[0]}'", param=unknown[0])
        rid = body.get("request_id")
        thumbs = body.get("thumbs")
        comment = body.get("comment")
        if not isinstance(rid, str) or not rid or len(rid) > 200:
            raise BadRequest("'request_id' must be the id of an answer.", param="request_id")
        if thumbs not in (None, "up", "down") or (thumbs is None and not comment):
            raise BadRequest("Give 'thumbs' (up or down) and/or a 'comment'.", param="thumbs")
        if comment is not None and (not isinstance(comment, str) or len(comment) > 4000):
            raise BadRequest("'comment' is text of at most 4000 characters.", param="comment")
        assert rt.feedback is not None
        not_found = NotFound(f"Unknown request id '{rid}'.", param="request_id")
        try:
            try:
                subject = await rt.feedback.subject(request_id=rid)
            except NotFoundError:
                await rt.audit.flush(timeout=5.0)  # the answer's row may still be batched
                subject = await rt.feedback.subject(request_id=rid)
        except (NotFoundError, InvalidInput):
            raise not_found from None
        if subject.key_id != tok.key_id or not may_give_feedback(subject, principal):
            raise not_found
        row = await rt.feedback.record(
            "feedback", subject=subject, source="widget", given_by=f"widget:{tok.user_id}",
            thumbs=thumbs, comment=comment)
        return json_response(row.as_dict(), status=201, headers=cors)
    except GatewayError as exc:
        return error_response(exc, cors)
