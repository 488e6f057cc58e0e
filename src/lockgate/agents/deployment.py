"""``model: "agent/<name>"``: agents as a virtual deployment of the pipeline.

:class:`AgentDeployment` implements :class:`~lockgate.pipeline.virtual.VirtualDeployment`
for the prefix ``agent/``, so ``/v1/chat/completions`` (and every other chat entry point)
can name an agent as its model with no special code: the pipeline authenticates, checks
the key's allowed models (``agent/<name>`` or ``agent/*``), audits the outer call at zero
cost, and hands the call here; every model turn of the run is its own pipeline call.

The answer is a normal ``chat.completion`` whose content is the run's final answer,
plus the top-level extension ``lockgate_agent``: ``{run_id, status, error, review_id,
cost, steps: [...]}`` (each step: kind, name, status, arguments, result, duration).
A run that pauses for approval answers at once: the content says so, ``status`` is
``awaiting_approval``; poll ``GET /v1/agents/<name>/runs/<run_id>``.

Streamed: a first role chunk, then one ``chat.completion.chunk`` per step with an empty
delta and the extra field ``lockgate_agent_step`` (the step), then the final answer as
content deltas and a last chunk (``finish_reason: "stop"``) carrying ``lockgate_agent``
(without the step list); with ``stream_options.include_usage`` a usage chunk follows.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson

from lockgate.agents.model import Run
from lockgate.agents.service import AGENT_PREFIX, AgentService
from lockgate.errors import BadRequest
from lockgate.pipeline import Call, Completion, Principal, StreamChunk, Usage

__all__ = ["AgentDeployment", "final_text", "grantable_agent_model"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,47}$")


def grantable_agent_model(model: str) -> bool:
    if not model.startswith(AGENT_PREFIX):
        return False
    rest = model[len(AGENT_PREFIX):]
    return rest == "*" or _NAME.match(rest) is not None


def final_text(run: Run) -> str:
    if run.state == "succeeded":
        out = run.output
        return out if isinstance(out, str) else orjson.dumps(out).decode()
    if run.state == "awaiting_approval":
        return (f"Run {run.id} is waiting for a person's approval (review {run.review_id}); "
                f"poll /v1/agents/{run.agent}/runs/{run.id} for the result.")
    return f"Run {run.id} {run.state}: {run.error}"


def _usage(steps: list[dict[str, Any]]) -> dict[str, int]:
    p = c = 0
    for s in steps:
        u = (s.get("detail") or {}).get("usage") or {}
        p += int(u.get("prompt_tokens", 0))
        c += int(u.get("completion_tokens", 0))
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def extension(run: Run, steps: list[dict[str, Any]] | None) -> dict[str, Any]:
    doc: dict[str, Any] = {"run_id": run.id, "agent": run.agent, "status": run.state,
                           "error": run.error, "review_id": run.review_id,
                           "cost": round(run.cost, 8)}
    if steps is not None:
        doc["steps"] = steps
    return doc


class AgentDeployment:
    prefix = AGENT_PREFIX

    def __init__(self, service: AgentService) -> None:
        self.service = service

    def grantable(self, model: str) -> bool:
        return grantable_agent_model(model)

    def known(self, model: str) -> bool:
        return model[len(self.prefix):] in self.service.specs()

    def deployment_id(self, model: str) -> str:
        return model

    async def models(self, principal: Principal) -> list[str]:
        await self.service.refresh()
        return [self.prefix + n for n in self.service.visible(principal)]

    async def _start(self, call: Call) -> Run:
        name = call.model[len(self.prefix):]
        assert call.principal is not None  # the pipeline authenticates first
        messages = call.body.get("messages")
        if not isinstance(messages, list):
            raise BadRequest("'messages' must be a list.", param="messages")
        return await self.service.start(name, messages, call.principal,
                                        end_user=call.acting_for, request_id=call.request_id)

    async def chat(self, call: Call) -> Completion:
        run = await self._start(call)
        steps: list[dict[str, Any]] = []

        async def collect(ev: dict[str, Any]) -> None:
            if ev.get("type") == "step":
                steps.append(ev["step"])

        run = await self.service.advance(run, collect)
        usage = _usage(steps)
        body = {
            "id": "chatcmpl-" + uuid.uuid4().hex,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": call.model,
            "choices": [{"index": 0, "message": {"role": "assistant",
                                                 "content": final_text(run)},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": usage,
            "lockgate_agent": extension(run, steps),
        }
        return Completion(body, Usage(usage["prompt_tokens"], usage["completion_tokens"]))

    async def chat_stream(self, call: Call) -> AsyncIterator[StreamChunk]:
        run = await self._start(call)
        opts = call.body.get("stream_options")
        include_usage = isinstance(opts, dict) and opts.get("include_usage") is True
        return self._chunks(run, call.model, include_usage)

    async def _chunks(self, run: Run, model: str,
                      include_usage: bool) -> AsyncIterator[StreamChunk]:
        base = {"id": "chatcmpl-" + uuid.uuid4().hex, "object": "chat.completion.chunk",
                "created": int(time.time()), "model": model}

        def chunk(delta: dict[str, Any], finish: str | None = None,
                  **extra: Any) -> dict[str, Any]:
            return {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                         "finish_reason": finish}], **extra}

        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        steps: list[dict[str, Any]] = []

        async def push(ev: dict[str, Any]) -> None:
            if ev.get("type") == "step":
                steps.append(ev["step"])
                await queue.put(ev["step"])

        task = asyncio.get_running_loop().create_task(self.service.advance(run, push))
        task.add_done_callback(lambda _t: queue.put_nowait(None))
        try:
            yield chunk({"role": "assistant", "content": ""})
            while True:
                item = await queue.get()
                if item is None:
                    break
                yield chunk({}, lockgate_agent_step=item)
            run = await task
            yield chunk({"content": final_text(run)})
            yield chunk({}, "stop", lockgate_agent=extension(run, None))
            if include_usage:
                yield {**base, "choices": [], "usage": _usage(steps)}
        finally:
            if not task.done():  # the client left: the run goes on to a stored end
                self.service.adopt(task)
