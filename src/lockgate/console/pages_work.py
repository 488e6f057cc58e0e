"""Console screens for the work itself: review queue, RAG collections and their query
playground, and a chat playground.

- Reviews sit on the review service exactly as ``/v1/reviews`` does: an admin sees every
  team's items, a team user its team's; deciding follows :meth:`ReviewService.may_review`.
- The RAG playground runs :meth:`RagService.answer` for the signed-in principal and an
  optional end user (id + groups, as a signed ``x-lockgate-end-user`` would give), and
  shows the answer, its citations and the ACL principals the query was matched against.
- The chat playground makes one chat call through the pipeline as the signed-in principal
  (source ``console``): governance, guards and audit apply as for any call.
- Agent runs: :mod:`.pages_agents`.
"""

from __future__ import annotations

import re
import time
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from lockgate.console.render import page
from lockgate.console.session import ConsoleUser, runtime_of
from lockgate.console.web import form_text, redirect, screen
from lockgate.errors import BadRequest, GatewayError, NotFound
from lockgate.pipeline import Call, EndUser
from lockgate.rag.identity import caller_for
from lockgate.rag.service import UnknownCollection

__all__ = ["router"]

router = APIRouter(prefix="/console", include_in_schema=False)
_NAME = re.compile(r"^[^\s;,=]{1,200}$")


# ------------------------------------------------------------------- reviews


@router.get("/reviews")
@screen()
async def reviews_page(request: Request, user: ConsoleUser) -> Response:
    rt = runtime_of(request)
    assert rt.review is not None
    svc = rt.review
    state = request.query_params.get("state") or "pending"
    if state not in ("pending", "approved", "edited", "rejected", "auto_approved", "all"):
        raise BadRequest("Unknown review state.", param="state")
    items = await svc.repo.find(state=None if state == "all" else state,
                                teams=svc.teams_of(user.principal), task=None, source=None,
                                limit=100, after=None)
    now = time.time()
    return page(request, "reviews.html", user=user, title="Review queue",
                items=[i.public(now) for i in items], state=state)


@router.get("/reviews/{item_id}")
@screen()
async def review_detail(request: Request, user: ConsoleUser, item_id: str) -> Response:
    rt = runtime_of(request)
    assert rt.review is not None
    item = await rt.review.get(item_id[:100], user.principal)
    view = item.public_with_answer(time.time())
    return page(request, "review_detail.html", user=user, title=f"Review {item.id}",
                item=view, may_decide=rt.review.may_review(user.principal, item),
                pretty=_pretty)


@router.post("/reviews/{item_id}/decide")
@screen()
async def review_decide(request: Request, user: ConsoleUser, item_id: str) -> Response:
    rt = runtime_of(request)
    assert rt.review is not None
    form = request.state.form
    action = form_text(form, "action", required=True, max_len=20)
    reason = form_text(form, "reason", max_len=2000)
    raw_output = form_text(form, "output", max_len=200_000)
    output: Any = None
    if action == "edit":
        if raw_output is None:
            raise BadRequest("An edit needs the corrected output.", param="output")
        try:
            output = orjson.loads(raw_output)
        except orjson.JSONDecodeError:
            output = raw_output
    assert action is not None
    item = await rt.review.decide(item_id[:100], user.principal, action, output=output,
                                  reason=reason, has_output=action == "edit")
    return redirect(f"/console/reviews/{item.id}")


def _pretty(value: Any) -> str:
    if isinstance(value, str):
        return value
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()


# ----------------------------------------------------------------------- RAG


@router.get("/rag")
@screen()
async def rag_page(request: Request, user: ConsoleUser) -> Response:
    rt = runtime_of(request)
    colls = await rt.rag.collections()
    out = []
    for c in colls:
        if not user.principal.may_use(f"rag/{c.name}"):
            continue
        out.append({"name": c.name, "embed_model": c.embed_model,
                    **(await rt.rag.status(c.name))})
    return page(request, "rag.html", user=user, title="RAG collections", collections=out)


@router.get("/rag/{name}")
@screen()
async def rag_collection(request: Request, user: ConsoleUser, name: str) -> Response:
    return await _rag_view(request, user, name, None)


@router.post("/rag/{name}/query")
@screen()
async def rag_query(request: Request, user: ConsoleUser, name: str) -> Response:
    rt = runtime_of(request)
    form = request.state.form
    question = form_text(form, "question", required=True, max_len=4000)
    end_user = _end_user(form_text(form, "user", max_len=200),
                         form_text(form, "groups", max_len=2000))
    caller = caller_for(user.principal, end_user)
    assert question is not None
    try:
        ans = await rt.rag.answer(name[:64], question, caller, principal=user.principal)
    except UnknownCollection:
        raise NotFound(f"No RAG collection '{name[:64]}'.") from None
    result = {"question": question, "answer": ans.as_dict(),
              "principals": caller.principals() if not caller.all_access else ["(all access)"],
              "user": end_user.user_id if end_user else None}
    if "hx-request" in request.headers:
        return page(request, "_rag_answer.html", user=user, result=result)
    return await _rag_view(request, user, name, result)


def _end_user(user_id: str | None, groups: str | None) -> EndUser | None:
    if user_id is None:
        return None
    names = [g.strip() for g in (groups or "").split(",") if g.strip()]
    for n in (user_id, *names):
        if not _NAME.match(n):
            raise BadRequest("User ids and groups are 1-200 characters without spaces, "
                             "';', ',' or '='.", param="user")
    return EndUser(user_id=user_id, groups=tuple(names), ts=int(time.time()))


async def _rag_view(request: Request, user: ConsoleUser, name: str,
                    result: dict[str, Any] | None) -> Response:
    rt = runtime_of(request)
    if not user.principal.may_use(f"rag/{name[:64]}"):
        raise NotFound(f"No RAG collection '{name[:64]}'.")
    try:
        coll = await rt.rag.collection(name[:64])
        rag_status = await rt.rag.status(coll.name)
    except UnknownCollection:
        raise NotFound(f"No RAG collection '{name[:64]}'.") from None
    docs = sorted((await rt.rag.store.documents(coll.id)).values(), key=lambda d: d.doc_id)
    return page(request, "rag_collection.html", user=user, title=f"RAG: {coll.name}",
                coll=coll, rag_status=rag_status, docs=docs[:500], n_docs=len(docs), result=result)


# ----------------------------------------------------------------- playground


@router.get("/playground")
@screen()
async def playground(request: Request, user: ConsoleUser) -> Response:
    rt = runtime_of(request)
    models = await rt.pipeline.list_models(user.principal)
    return page(request, "playground.html", user=user, title="Chat playground",
                models=models, result=None)


@router.post("/playground")
@screen()
async def playground_call(request: Request, user: ConsoleUser) -> Response:
    rt = runtime_of(request)
    form = request.state.form
    model = form_text(form, "model", required=True, max_len=200)
    prompt = form_text(form, "prompt", required=True, max_len=20_000)
    assert model is not None and prompt is not None
    call = Call(kind="chat", model=model,
                body={"model": model, "messages": [{"role": "user", "content": prompt}]},
                principal=user.principal, source="console")
    result: dict[str, Any] = {"model": model, "prompt": prompt}
    try:
        res = await rt.pipeline.chat(call)
        body = res.raw or res.body
        if isinstance(body, bytes):
            body = orjson.loads(body)
        choice = (body.get("choices") or [{}])[0]
        result["answer"] = (choice.get("message") or {}).get("content") or ""
        result["deployment"] = res.facts.deployment if res.facts else None
        result["request_id"] = call.request_id
    except GatewayError as exc:
        result["error"] = exc.message
        result["request_id"] = call.request_id
    if "hx-request" in request.headers:
        return page(request, "_chat_answer.html", user=user, result=result)
    models = await rt.pipeline.list_models(user.principal)
    return page(request, "playground.html", user=user, title="Chat playground",
                models=models, result=result)


_ = redirect  # used by the decide route
