"""RAG over HTTP: ``/v1/rag/{collection}/...`` routes and ``model: "rag/<collection>"`` chat.

Routes (every one needs an API key; errors in OpenAI's shape)

``POST /v1/rag/{collection}/documents`` — the master key, anywhere; a team key only
into a collection its team owns (the first team key to ingest into a new name creates
it, owned by its team) and with ACLs naming its own team only (``team:<team>``):
anything else is a 403 (``ingest_not_allowed`` / ``acl_not_allowed``). JSON::

    {"documents": [{"id": "hr/leave.md", "title": "Leave", "text": "...",
                    "metadata": {"dept": "hr"}, "acl": ["group:hr", "team:finance"],
                    "format": "markdown"}],          # text | markdown | html
     "acl": ["public"],      # default for documents without their own "acl"
     "sync": false,          # true: also delete documents not in this request
     "embed_model": "embed"} # only when the collection is created; null = BM25 only

Every document needs an ACL (its own or the default): there is no implicit
``public``. Or ``multipart/form-data`` with ``file`` parts (Markdown, text, HTML,
PDF, DOCX, BEIR ``corpus.jsonl``; document id = file name) and optional fields
``acl`` (comma separated), ``metadata`` (JSON object), ``sync``. Answer: the
ingest report (added, updated, unchanged, removed, chunks, failed files).

``POST /v1/rag/{collection}/query`` — ``{"question": "...", "k": 5, "mode":
"hybrid", "filters": {"dept": "hr"}, "model": "<chat model>", "stream": false}``.
Answer: ``answer``, ``citations`` (``n``, doc id, title, chunk id, character
span, score), ``passages`` (numbered like the citations), ``refused``,
``confidence`` (+ kind and threshold), ``mode``, ``model``, ``extractive``,
``usage``. ``stream: true`` sends SSE ``{"type": "delta", "text": ...}`` events,
then ``{"type": "done", ...the answer object...}``, then ``[DONE]``.

``GET /v1/rag/{collection}/status`` — counts, embeddings model, thresholds
(stored and configured), staleness. Any valid key (no document content).

``model: "rag/<collection>"`` on ``/v1/chat/completions`` (and every other entry point)
is not handled here: it is a virtual deployment the router sends to
:class:`lockgate.rag.deployment.RagDeployment`.

Who the query runs for: the key's principal and the verified end user of the signed
``x-lockgate-end-user`` header (:mod:`lockgate.api.rag_identity`), mapped to ACL
principals by :func:`lockgate.rag.identity.caller_for`. The embeddings and generation
calls go through the pipeline with the *key's* principal, so its allowed models,
limits, budget and audit apply (a key restricted to some models must be allowed the
configured ``rag.embed_model`` / ``generation_model``).

The :class:`RagService` is the runtime's (``Runtime.rag``), built once from
``config.rag`` by the composition root: the CLI and these routes answer alike.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, get_args

import orjson
import structlog
from fastapi import APIRouter, Request
from starlette.datastructures import UploadFile
from starlette.responses import Response

from lockgate.api.disconnect import unless_disconnected
from lockgate.api.event_stream import EventStream
from lockgate.api.rag_identity import end_user_of
from lockgate.api.request_io import (
    api_key_of,
    capped,
    error_response,
    json_response,
    parse_json,
    read_json,
)
from lockgate.errors import BadRequest, Forbidden, GatewayError
from lockgate.pipeline import Principal
from lockgate.rag import (
    Caller,
    RagService,
    SourceDocument,
    StreamEvent,
    UnknownCollection,
    normalize_principal,
)
from lockgate.rag.deployment import RAG_MODEL_PREFIX, check_collection_name, not_found
from lockgate.rag.identity import caller_for
from lockgate.rag.loaders import parse_html
from lockgate.rag.types import Mode
from lockgate.runtime import Runtime

__all__ = ["router"]

router = APIRouter()
log = structlog.get_logger("lockgate.api.rag")

MAX_DOCUMENTS = 1000
_MODES = set(get_args(Mode))
_FORMATS = {"text", "markdown", "html"}
_DONE = b"data: [DONE]\n\n"


def rag_service(request: Request) -> RagService:
    """The runtime's RagService (built by the composition root)."""
    rt: Runtime = request.app.state.runtime
    return rt.rag


# ---------------------------------------------------------------- request helpers


def _collection(name: str) -> str:
    return check_collection_name(name)


async def _identify(request: Request, api_key: str | None) -> tuple[Principal, Caller]:
    rt: Runtime = request.app.state.runtime
    principal = await rt.pipeline.authenticate(api_key)
    return principal, caller_for(principal, end_user_of(request, rt.config.rag))


def _query_options(body: dict[str, Any]) -> dict[str, Any]:
    k = body.get("k")
    if k is not None and (not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= 50):
        raise BadRequest("k must be an integer from 1 to 50.", param="k")
    mode = body.get("mode")
    if mode is not None and (not isinstance(mode, str) or mode not in _MODES):
        raise BadRequest(f"mode must be one of {sorted(_MODES)}.", param="mode")
    filters = body.get("filters")
    if filters is not None:
        ok = isinstance(filters, dict) and all(
            isinstance(v, str | int | float) or (
                isinstance(v, list) and all(isinstance(x, str | int | float) for x in v))
            for v in filters.values())
        if not ok:
            raise BadRequest("filters must map metadata keys (or doc_id) to a value or a list "
                             "of values.", param="filters")
    model = body.get("model")
    if model is not None and (not isinstance(model, str)
                              or model.startswith(RAG_MODEL_PREFIX)):
        raise BadRequest("model must name a chat model.", param="model")
    return {"k": k, "mode": mode, "filters": filters, "model": model}


# ---------------------------------------------------------------- ingestion


def _acl(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [p for p in value.split(",") if p.strip()]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise BadRequest(f"{where}: acl must be a non-empty list of principals (public, "
                         "user:<id>, group:<name>, team:<team name>).", param=where)
    try:
        return tuple(sorted({normalize_principal(v) for v in value}))
    except ValueError as exc:
        raise BadRequest(f"{where}: {exc}", param=where) from None


def _documents(body: dict[str, Any]) -> list[SourceDocument]:
    raw = body.get("documents")
    if not isinstance(raw, list) or not raw:
        raise BadRequest("documents must be a non-empty list.", param="documents")
    if len(raw) > MAX_DOCUMENTS:
        raise BadRequest(f"At most {MAX_DOCUMENTS} documents per request.", param="documents")
    default_acl = _acl(body["acl"], "acl") if body.get("acl") is not None else None
    docs: list[SourceDocument] = []
    for i, d in enumerate(raw):
        where = f"documents[{i}]"
        if not isinstance(d, dict):
            raise BadRequest(f"{where} must be an object.", param=where)
        doc_id, text = d.get("id"), d.get("text")
        if not isinstance(doc_id, str) or not doc_id.strip() or len(doc_id) > 500:
            raise BadRequest(f"{where}.id must be a non-empty string.", param=f"{where}.id")
        if not isinstance(text, str):
            raise BadRequest(f"{where}.text must be a string.", param=f"{where}.text")
        title = d.get("title") or ""
        meta = d.get("metadata") or {}
        fmt = d.get("format") or "text"
        if (not isinstance(title, str) or not isinstance(meta, dict)
                or not isinstance(fmt, str) or fmt not in _FORMATS):
            raise BadRequest(f"{where}: title is a string, metadata an object, format one of "
                             f"{sorted(_FORMATS)}.", param=where)
        if d.get("acl") is not None:
            acl = _acl(d["acl"], f"{where}.acl")
        elif default_acl is not None:
            acl = default_acl
        else:
            raise BadRequest(f"{where} has no acl and the request has no default acl.",
                             param=f"{where}.acl")
        if fmt == "html":
            html_title, text = parse_html(text)
            title = title or html_title
        docs.append(SourceDocument(doc_id=doc_id, text=text, title=title, source=doc_id,
                                   principals=acl, metadata=dict(meta), fmt=fmt))
    return docs


async def _ingest_upload(svc: RagService, collection: str, request: Request,
                         principal: Principal, limit: int, team: str | None
                         ) -> dict[str, Any]:
    # counted while it streams in (a chunked upload has no Content-Length to check first)
    form = await capped(request, limit).form(max_files=100, max_fields=20,
                                             max_part_size=limit)
    try:
        uploads = [v for k, v in form.multi_items()
                   if k in ("file", "files") and isinstance(v, UploadFile)]
        if not uploads:
            raise BadRequest("multipart upload needs one or more 'file' parts.", param="file")
        acl_field = form.get("acl")
        if not isinstance(acl_field, str):
            raise BadRequest("multipart upload needs an 'acl' field (comma separated).",
                             param="acl")
        acl = _acl(acl_field, "acl")
        _check_team_acl(team, [acl])
        if team is not None:
            await _create_owned(svc, collection, team, svc.settings.embed_model)
        meta: dict[str, Any] = {}
        meta_field = form.get("metadata")
        if isinstance(meta_field, str) and meta_field:
            parsed = parse_json(meta_field, "metadata", param="metadata")
            if not isinstance(parsed, dict):
                raise BadRequest("metadata must be a JSON object.", param="metadata")
            meta = parsed
        sync = str(form.get("sync") or "").lower() in ("1", "true", "yes")
        with tempfile.TemporaryDirectory(prefix="lg-rag-") as tmp:
            root = Path(tmp)
            paths: list[Path] = []
            for up in uploads:
                name = Path(up.filename or "").name
                if not name or name.startswith(".") or name.endswith(".meta.json"):
                    raise BadRequest(f"bad upload file name {up.filename!r}.", param="file")
                path = root / name
                path.write_bytes(await up.read())
                paths.append(path)
            report = await svc.ingest_paths(collection, [root], principal=principal, acl=acl,
                                            metadata=meta, sync=sync)
            out = report.as_dict()
            for f in out["failed"]:
                f["source"] = str(f["source"]).replace(tmp + "/", "")
            return out
    finally:
        await form.close()


async def _team_may_ingest(svc: RagService, name: str, principal: Principal) -> str | None:
    """None for the master key; a team key's team when it may ingest into ``name`` (its team
    owns it, or it does not exist yet and will be created owned by the team); else 403."""
    if principal.is_master:
        return None
    team = principal.team_name or principal.team_id
    if not team:
        raise Forbidden("Only the master key or a team key may ingest RAG documents.",
                        code="ingest_not_allowed")
    info = await svc.store.get_collection(name)
    if info is not None and info.owner_team != team:
        raise Forbidden(f"Collection {name!r} is not owned by team {team!r}: a team key may "
                        "ingest only into collections its team created (the master key "
                        "may ingest anywhere).", code="ingest_not_allowed")
    return team


def _check_team_acl(team: str | None, acls: list[tuple[str, ...]]) -> None:
    """A team key's documents may be readable by its own team only (``team:<team>``)."""
    if team is None:
        return
    own = f"team:{team}"
    for acl in acls:
        bad = sorted(set(acl) - {own})
        if bad:
            raise Forbidden(f"A team key may give access to its own team only (acl "
                            f"[\"{own}\"]), not {', '.join(bad)}.", code="acl_not_allowed",
                            param="acl")


async def _create_owned(svc: RagService, name: str, team: str, embed_model: str | None) -> None:
    """Create the team's collection (or find it) and check it is still the team's."""
    info = await svc.store.create_collection(name, embed_model, owner_team=team)
    if info.owner_team != team:  # created by someone else in between
        raise Forbidden(f"Collection {name!r} is not owned by team {team!r}.",
                        code="ingest_not_allowed")


@router.post("/v1/rag/{collection}/documents")
async def ingest(collection: str, request: Request) -> Response:
    rt: Runtime = request.app.state.runtime
    try:
        principal = await rt.pipeline.authenticate(api_key_of(request))
        name = _collection(collection)
        svc = rag_service(request)
        team = await _team_may_ingest(svc, name, principal)
        limit = rt.config.server.max_body_bytes
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            return json_response(await _ingest_upload(svc, name, request, principal, limit,
                                                      team))
        body = await read_json(request, limit)
        docs = _documents(body)
        _check_team_acl(team, [d.principals for d in docs])
        embed_model: str | None = rt.config.rag.embed_model
        if "embed_model" in body:
            em = body["embed_model"]
            known = rt.pipeline.router.models()
            if em is not None and (not isinstance(em, str) or em not in known):
                raise BadRequest("embed_model must be a configured embeddings model or null.",
                                 param="embed_model")
            embed_model = em
            if em is None and await svc.store.get_collection(name) is None:
                # RagService reads embed_model=None as "the default": create BM25-only here
                await svc.store.create_collection(name, None, owner_team=team)
        if team is not None:
            await _create_owned(svc, name, team, embed_model if "embed_model" in body
                                else svc.settings.embed_model)
        report = await svc.ingest_documents(name, docs, principal=principal,
                                            sync=body.get("sync") is True,
                                            embed_model=embed_model)
        return json_response(report.as_dict())
    except GatewayError as exc:
        return error_response(exc)
    except UnknownCollection as exc:  # dropped while the ingest ran
        return error_response(not_found(exc))
    except ValueError as exc:
        return error_response(BadRequest(str(exc)))


@router.get("/v1/rag/{collection}/status")
async def status(collection: str, request: Request) -> Response:
    rt: Runtime = request.app.state.runtime
    try:
        await rt.pipeline.authenticate(api_key_of(request))
        svc = rag_service(request)
        try:
            st = await svc.status(_collection(collection))
        except UnknownCollection as exc:
            raise not_found(exc) from None
        pinned = rt.config.rag.collections.get(collection)
        st["configured_threshold"] = pinned.threshold if pinned else None
        st["configured_threshold_kind"] = pinned.threshold_kind if pinned else None
        return json_response(st)
    except GatewayError as exc:
        return error_response(exc)


@router.post("/v1/rag/{collection}/query")
async def query(collection: str, request: Request) -> Response:
    rt: Runtime = request.app.state.runtime
    try:
        principal, caller = await _identify(request, api_key_of(request))
        name = _collection(collection)
        body = await read_json(request, rt.config.server.max_body_bytes)
        question = body.get("question", body.get("query"))
        if not isinstance(question, str) or not question.strip():
            raise BadRequest("question must be a non-empty string.", param="question")
        opts = _query_options(body)
        svc = rag_service(request)
        if body.get("stream") is True:
            events = svc.answer_stream(name, question, caller, principal=principal, **opts)
            first = await unless_disconnected(request, _first_event(events))
            return EventStream(_query_sse(first, events))
        try:
            ans = await unless_disconnected(
                request, svc.answer(name, question, caller, principal=principal, **opts))
        except UnknownCollection as exc:
            raise not_found(exc) from None
        return json_response(ans.as_dict())
    except GatewayError as exc:
        return error_response(exc)
    except ValueError as exc:
        return error_response(BadRequest(str(exc)))


async def _first_event(events: AsyncIterator[StreamEvent]) -> StreamEvent:
    """Open the stream so retrieval/admission errors become a normal HTTP error."""
    try:
        return await events.__anext__()
    except UnknownCollection as exc:
        raise not_found(exc) from None


async def _query_sse(first: StreamEvent,
                     events: AsyncIterator[StreamEvent]) -> AsyncIterator[bytes]:
    async for data in _render(first, events, _query_event):
        yield data


def _query_event(ev: StreamEvent) -> list[dict[str, Any]]:
    if ev.kind == "done" and ev.answer is not None:
        return [{"type": "done", **ev.answer.as_dict()}]
    return [{"type": "delta", "text": ev.text}] if ev.text else []


async def _render(first: StreamEvent, events: AsyncIterator[StreamEvent],
                  render: Any) -> AsyncIterator[bytes]:
    """SSE of rendered events; a failure mid-stream becomes an error event, never [DONE]."""
    try:
        for obj in render(first):
            yield b"data: " + orjson.dumps(obj) + b"\n\n"
        async for ev in events:
            for obj in render(ev):
                yield b"data: " + orjson.dumps(obj) + b"\n\n"
    except GatewayError as exc:
        yield b"data: " + exc.body_bytes() + b"\n\n"
        return
    except Exception:
        log.exception("lockgate.rag.stream_failed")
        err = GatewayError("Internal error in lockgate; see the server log.", status=500,
                           code="internal_error")
        yield b"data: " + err.body_bytes() + b"\n\n"
        return
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()
    yield _DONE
