"""RAG over HTTP: ``/v1/rag/{collection}/...`` routes and ``model: "rag/<collection>"`` chat.

Routes (every one needs an API key; errors in OpenAI's shape)

``POST /v1/rag/{collection}/documents`` — master key only (ingestion decides what
every user may see, so it is an operator action; team keys get 403). JSON::

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

``/v1/chat/completions`` with ``model: "rag/<collection>"`` (via
:func:`chat_completion`): the last user message is the question. Non-stream: a
normal ``chat.completion`` plus top-level ``citations`` (the list above) and
``lockgate_rag`` (refused, confidence, passages, ...). Stream: normal
``chat.completion.chunk`` deltas; the final chunk (``finish_reason: "stop"``)
carries ``citations`` and ``lockgate_rag``; with ``stream_options.include_usage``
a usage chunk follows.

Who the query runs for: :mod:`lockgate.api.rag_identity` (key team, signed
``x-lockgate-end-user`` header, master = operator). The embeddings and
generation calls go through the pipeline with the *key's* principal, so its
allowed models, limits, budget and audit apply (a key restricted to some models
must be allowed the configured ``rag.embed_model`` / ``generation_model``).

One :class:`RagService` per app, built on first use (``app.state.rag_service``)
from ``config.rag``; ``rag.collections.<name>.threshold`` overrides the stored
(calibrated) refusal threshold of that collection.
"""

from __future__ import annotations

import re
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, get_args

import orjson
import structlog
from fastapi import APIRouter, Request
from starlette.datastructures import UploadFile
from starlette.responses import Response, StreamingResponse

from lockgate.api.rag_identity import END_USER_HEADER, caller_for, parse_end_user
from lockgate.api.request_io import api_key_of, error_response, json_response, read_json
from lockgate.config import RagConfig
from lockgate.errors import BadRequest, Forbidden, GatewayError, NotFound
from lockgate.pipeline.call import Call, Principal
from lockgate.rag import (
    Answer,
    Caller,
    RagService,
    RagSettings,
    RagStore,
    SourceDocument,
    StreamEvent,
    UnknownCollection,
    normalize_principal,
)
from lockgate.rag.catalog import CollectionInfo
from lockgate.rag.loaders import parse_html
from lockgate.rag.types import Mode
from lockgate.runtime import Runtime

__all__ = ["RAG_MODEL_PREFIX", "chat_completion", "is_rag_model", "rag_service", "router"]

router = APIRouter()
log = structlog.get_logger("lockgate.api.rag")

RAG_MODEL_PREFIX = "rag/"
MAX_DOCUMENTS = 1000
_COLLECTION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_MODES = set(get_args(Mode))
_FORMATS = {"text", "markdown", "html"}
_DONE = b"data: [DONE]\n\n"


class ConfiguredRagService(RagService):
    """A RagService whose refusal thresholds can be pinned per collection by config."""

    def __init__(self, store: RagStore, pipeline: Any, settings: RagSettings,
                 rag: RagConfig) -> None:
        super().__init__(store, pipeline, settings)
        self.rag_config = rag

    def threshold_for(self, coll: CollectionInfo, kind: str) -> float | None:
        pinned = self.rag_config.collections.get(coll.name)
        if pinned is not None and pinned.threshold is not None and (
            pinned.threshold_kind in (None, kind)
        ):
            return pinned.threshold
        return super().threshold_for(coll, kind)


def is_rag_model(model: str) -> bool:
    return model.startswith(RAG_MODEL_PREFIX)


def rag_service(request: Request) -> ConfiguredRagService:
    """The app's RagService, built on first use (construction does no I/O)."""
    svc: ConfiguredRagService | None = getattr(request.app.state, "rag_service", None)
    if svc is None:
        rt: Runtime = request.app.state.runtime
        rc = rt.config.rag
        settings = RagSettings(embed_model=rc.embed_model,
                               generation_model=rc.generation_model, mode=rc.mode, k=rc.k)
        svc = ConfiguredRagService(RagStore(rt.store.engine), rt.pipeline, settings, rc)
        request.app.state.rag_service = svc
    return svc


# ---------------------------------------------------------------- request helpers


def _collection(name: str) -> str:
    if not _COLLECTION.match(name):
        raise BadRequest("Collection names are 1-64 characters: letters, digits, '.', '_', '-' "
                         "(starting with a letter or digit).", param="collection",
                         code="invalid_collection")
    return name


async def _identify(request: Request, api_key: str | None) -> tuple[Principal, Caller]:
    rt: Runtime = request.app.state.runtime
    principal = await rt.pipeline.authenticate(api_key)
    header = request.headers.get(END_USER_HEADER)
    end_user = None
    if header is not None:
        rc = rt.config.rag
        end_user = parse_end_user(header, rc.resolved_end_user_secret(), rc.end_user_max_age)
    return principal, caller_for(principal, end_user)


def _not_found(exc: UnknownCollection) -> NotFound:
    return NotFound(str(exc).replace("no RAG", "No RAG") + ".", code="collection_not_found",
                    param="collection")


def _query_options(body: dict[str, Any]) -> dict[str, Any]:
    k = body.get("k")
    if k is not None and (not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= 50):
        raise BadRequest("k must be an integer from 1 to 50.", param="k")
    mode = body.get("mode")
    if mode is not None and mode not in _MODES:
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
    if model is not None and (not isinstance(model, str) or is_rag_model(model)):
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
        if not isinstance(title, str) or not isinstance(meta, dict) or fmt not in _FORMATS:
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
                         principal: Principal, limit: int) -> dict[str, Any]:
    form = await request.form(max_files=100, max_fields=20, max_part_size=limit)
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
        meta: dict[str, Any] = {}
        meta_field = form.get("metadata")
        if isinstance(meta_field, str) and meta_field:
            try:
                parsed = orjson.loads(meta_field)
            except orjson.JSONDecodeError:
                parsed = None
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


@router.post("/v1/rag/{collection}/documents")
async def ingest(collection: str, request: Request) -> Response:
    rt: Runtime = request.app.state.runtime
    try:
        principal = await rt.pipeline.authenticate(api_key_of(request))
        if not principal.is_master:
            raise Forbidden("Only the master key may ingest RAG documents.",
                            code="ingest_not_allowed")
        name = _collection(collection)
        svc = rag_service(request)
        limit = rt.config.server.max_body_bytes
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            return json_response(await _ingest_upload(svc, name, request, principal, limit))
        body = await read_json(request, limit)
        docs = _documents(body)
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
                await svc.store.create_collection(name, None)
        report = await svc.ingest_documents(name, docs, principal=principal,
                                            sync=body.get("sync") is True,
                                            embed_model=embed_model)
        return json_response(report.as_dict())
    except GatewayError as exc:
        return error_response(exc)
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
            raise _not_found(exc) from None
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
            first = await _first_event(events)
            return StreamingResponse(_query_sse(first, events), media_type="text/event-stream")
        try:
            ans = await svc.answer(name, question, caller, principal=principal, **opts)
        except UnknownCollection as exc:
            raise _not_found(exc) from None
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
        raise _not_found(exc) from None


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


# ---------------------------------------------------------------- rag/<collection> chat


def _last_user_text(body: dict[str, Any]) -> str:
    messages = body.get("messages")
    if isinstance(messages, list):
        for m in reversed(messages):
            if isinstance(m, dict) and m.get("role") == "user":
                c = m.get("content")
                if isinstance(c, str):
                    return c
                if isinstance(c, list):
                    return " ".join(str(p.get("text", "")) for p in c
                                    if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _extension(ans: Answer) -> dict[str, Any]:
    d = ans.as_dict()
    d.pop("answer")
    d.pop("citations")
    return d


def _usage(ans: Answer) -> dict[str, int]:
    p = int(ans.usage.get("prompt_tokens", 0))
    c = int(ans.usage.get("completion_tokens", 0))
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


async def chat_completion(request: Request, call: Call) -> Response:
    """``/v1/chat/completions`` for ``model: "rag/<collection>"`` (``call`` holds the body)."""
    name = _collection(call.model[len(RAG_MODEL_PREFIX):])
    principal, caller = await _identify(request, call.api_key)
    question = _last_user_text(call.body)
    if not question.strip():
        raise BadRequest("messages must end with a user message that has text.",
                         param="messages")
    svc = rag_service(request)
    cid = "chatcmpl-" + uuid.uuid4().hex
    created = int(time.time())
    headers = {"x-request-id": call.request_id}
    if call.body.get("stream") is True:
        events = svc.answer_stream(name, question, caller, principal=principal)
        first = await _first_event(events)
        opts = call.body.get("stream_options")
        usage = isinstance(opts, dict) and opts.get("include_usage") is True
        return StreamingResponse(
            _render(first, events, _ChunkRenderer(cid, created, call.model, usage)),
            media_type="text/event-stream", headers=headers,
        )
    try:
        ans = await svc.answer(name, question, caller, principal=principal)
    except UnknownCollection as exc:
        raise _not_found(exc) from None
    return json_response({
        "id": cid,
        "object": "chat.completion",
        "created": created,
        "model": call.model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": ans.answer},
                     "logprobs": None, "finish_reason": "stop"}],
        "usage": _usage(ans),
        "citations": ans.citations,
        "lockgate_rag": _extension(ans),
    }, headers=headers)


class _ChunkRenderer:
    """StreamEvents -> ``chat.completion.chunk`` objects."""

    def __init__(self, cid: str, created: int, model: str, include_usage: bool) -> None:
        self.base = {"id": cid, "object": "chat.completion.chunk", "created": created,
                     "model": model}
        self.include_usage = include_usage
        self.started = False

    def _chunk(self, delta: dict[str, Any], finish: str | None = None,
               **extra: Any) -> dict[str, Any]:
        return {**self.base, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                          "finish_reason": finish}], **extra}

    def __call__(self, ev: StreamEvent) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if not self.started:
            self.started = True
            out.append(self._chunk({"role": "assistant", "content": ""}))
        if ev.kind == "done" and ev.answer is not None:
            ans = ev.answer
            out.append(self._chunk({}, "stop", citations=ans.citations,
                                   lockgate_rag=_extension(ans)))
            if self.include_usage:
                out.append({**self.base, "choices": [], "usage": _usage(ans)})
        elif ev.text:
            out.append(self._chunk({"content": ev.text}))
        return out
