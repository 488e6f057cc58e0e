"""``model: "rag/<collection>"``: RAG answers as a virtual deployment of the pipeline.

:class:`RagDeployment` implements :class:`~lockgate.pipeline.virtual.VirtualDeployment`
for the prefix ``rag/``. The runtime registers it with the router, so every entry
point that makes a chat call — ``/v1/chat/completions``, ``/v1/messages``, jobs, batch
rows, event consumers — can name a RAG collection as its model, and ``/v1/models``
lists the collections for keys that may use them (``allowed_models`` naming
``rag/<collection>`` or ``rag/*``, or unrestricted keys).

The question is the last user message. The answer is a normal ``chat.completion``
plus top-level ``citations`` (``n``, doc id, title, chunk id, character span, score)
and ``lockgate_rag`` (refused, confidence, passages, ...). Streamed: normal
``chat.completion.chunk`` deltas; the final chunk (``finish_reason: "stop"``)
carries ``citations`` and ``lockgate_rag``; with ``stream_options.include_usage`` a
usage chunk follows. ``usage`` reports the inner generation call's tokens.

Who the query runs for: :func:`lockgate.rag.identity.caller_for` of the call's
principal and verified end user (:attr:`Call.acting_for`).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from lockgate.errors import BadRequest, NotFound
from lockgate.pipeline import Call, Completion, Principal, StreamChunk, Usage
from lockgate.rag.answer import Answer
from lockgate.rag.identity import caller_for
from lockgate.rag.retrieval import check_question
from lockgate.rag.service import RagService, StreamEvent, UnknownCollection

__all__ = [
    "RAG_MODEL_PREFIX",
    "RagDeployment",
    "check_collection_name",
    "grantable_rag_model",
    "not_found",
]

RAG_MODEL_PREFIX = "rag/"
_COLLECTION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_collection_name(name: str) -> str:
    """``name`` if it is a valid collection name, else a 400."""
    if not _COLLECTION.match(name):
        raise BadRequest("Collection names are 1-64 characters: letters, digits, '.', '_', '-' "
                         "(starting with a letter or digit).", param="collection",
                         code="invalid_collection")
    return name


def grantable_rag_model(model: str) -> bool:
    """``rag/*`` or ``rag/<valid collection name>``: names a key's allowed models may hold."""
    if not model.startswith(RAG_MODEL_PREFIX):
        return False
    rest = model[len(RAG_MODEL_PREFIX):]
    return rest == "*" or _COLLECTION.match(rest) is not None


def not_found(exc: UnknownCollection) -> NotFound:
    return NotFound(str(exc).replace("no RAG", "No RAG") + ".", code="collection_not_found",
                    param="collection")


def last_user_text(body: dict[str, Any]) -> str:
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


def rag_extension(ans: Answer) -> dict[str, Any]:
    d = ans.as_dict()
    d.pop("answer")
    d.pop("citations")
    return d


def _usage(ans: Answer) -> dict[str, int]:
    p = int(ans.usage.get("prompt_tokens", 0))
    c = int(ans.usage.get("completion_tokens", 0))
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


class RagDeployment:
    """RAG collections as the public models ``rag/<collection>``."""

    prefix = RAG_MODEL_PREFIX

    def __init__(self, service: RagService) -> None:
        self.service = service
        self._known: set[str] = set()
        """Models seen to exist (answered, or listed): bounded by the real collections."""

    def grantable(self, model: str) -> bool:
        return grantable_rag_model(model)

    def known(self, model: str) -> bool:
        return model in self._known

    def deployment_id(self, model: str) -> str:
        return model

    async def models(self, principal: Principal) -> list[str]:
        names = [self.prefix + c.name for c in await self.service.collections()]
        self._known.update(names)
        return [m for m in names if principal.may_use(m)]

    def _question(self, call: Call) -> tuple[str, str]:
        name = check_collection_name(call.model[len(self.prefix):])
        question = last_user_text(call.body)
        if not question.strip():
            raise BadRequest("messages must end with a user message that has text.",
                             param="messages")
        check_question(question, param="messages")
        return name, question

    async def chat(self, call: Call) -> Completion:
        name, question = self._question(call)
        assert call.principal is not None  # the pipeline authenticates first
        caller = caller_for(call.principal, call.acting_for)
        try:
            ans = await self.service.answer(name, question, caller, principal=call.principal)
        except UnknownCollection as exc:
            raise not_found(exc) from None
        self._known.add(call.model)
        usage = _usage(ans)
        body = {
            "id": "chatcmpl-" + uuid.uuid4().hex,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": call.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": ans.answer},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": usage,
            "citations": ans.citations,
            "lockgate_rag": rag_extension(ans),
        }
        return Completion(body, Usage(usage["prompt_tokens"], usage["completion_tokens"]))

    async def chat_stream(self, call: Call) -> AsyncIterator[StreamChunk]:
        name, question = self._question(call)
        assert call.principal is not None
        caller = caller_for(call.principal, call.acting_for)
        events = self.service.answer_stream(name, question, caller, principal=call.principal)
        try:
            first = await events.__anext__()
        except UnknownCollection as exc:
            raise not_found(exc) from None
        self._known.add(call.model)
        opts = call.body.get("stream_options")
        include_usage = isinstance(opts, dict) and opts.get("include_usage") is True
        render = ChunkRenderer("chatcmpl-" + uuid.uuid4().hex, int(time.time()), call.model,
                               include_usage)
        return _chunks(first, events, render)


async def _chunks(first: StreamEvent, events: AsyncIterator[StreamEvent],
                  render: ChunkRenderer) -> AsyncIterator[StreamChunk]:
    try:
        for chunk in render(first):
            yield chunk
        async for ev in events:
            for chunk in render(ev):
                yield chunk
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()


class ChunkRenderer:
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
                                   lockgate_rag=rag_extension(ans)))
            if self.include_usage:
                out.append({**self.base, "choices": [], "usage": _usage(ans)})
        elif ev.text:
            out.append(self._chunk({"content": ev.text}))
        return out
