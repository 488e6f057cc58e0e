"""The one path every model call takes.

authenticate -> policy (model exists, key may use it) -> validate -> route
-> resilient call (retries, fallback) -> settle (usage, cost) -> audit + metrics.

Governance stages from the later issues (limits, budgets, guards, cache) slot in
between policy and route; they are not part of this module yet.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from lockgate.errors import BadRequest, Forbidden, GatewayError, NotFound
from lockgate.metrics import Metrics
from lockgate.pipeline.accounting import RecordSink, build_record, estimate_tokens
from lockgate.pipeline.auth import Authenticator
from lockgate.pipeline.call import Call, Principal
from lockgate.pipeline.resilience import (
    Attempts,
    PrimedStream,
    call_with_fallback,
    prime_stream,
    to_gateway_error,
)
from lockgate.pipeline.routing import Router, Target
from lockgate.pipeline.validate import check_chat_body, check_embeddings_body
from lockgate.providers.base import Completion, ProviderError, StreamChunk, Usage

CLIENT_CLOSED = 499


class Pipeline:
    def __init__(
        self,
        *,
        auth: Authenticator,
        router: Router,
        sink: RecordSink,
        metrics: Metrics,
        log_bodies: bool = False,
    ) -> None:
        self.auth = auth
        self.router = router
        self._sink = sink
        self.metrics = metrics
        self._log_bodies = log_bodies

    # ------------------------------------------------------------ stages

    async def authenticate(self, api_key: str | None) -> Principal:
        return await self.auth.authenticate(api_key)

    def visible_models(self, principal: Principal) -> list[str]:
        return [m for m in self.router.models() if principal.may_use(m)]

    async def _admit(self, call: Call) -> list[Target]:
        if call.principal is None:
            call.principal = await self.auth.authenticate(call.api_key)
        plan = self.router.plan(call.model)
        if not plan:
            raise NotFound(f"The model '{call.model}' does not exist.", param="model")
        if not call.principal.may_use(call.model):
            raise Forbidden(f"This key may not use the model '{call.model}'.", param="model")
        mode = plan[0].deployment.mode
        if mode != ("chat" if call.kind == "chat" else "embeddings"):
            raise BadRequest(
                f"The model '{call.model}' is a {mode} model and cannot serve {call.kind}.",
                param="model", code="model_mode_mismatch",
            )
        if call.kind == "chat":
            check_chat_body(call.body)
        else:
            check_embeddings_body(call.body)
        return plan

    # ------------------------------------------------------------ non-stream

    async def chat(self, call: Call) -> Completion:
        return await self._complete(call, "chat")

    async def embeddings(self, call: Call) -> Completion:
        return await self._complete(call, "embeddings")

    async def _complete(self, call: Call, kind: str) -> Completion:
        attempts = Attempts()
        try:
            plan = await self._admit(call)

            async def run(target: Target) -> Completion:
                provider = target.provider
                if kind == "chat":
                    return await provider.chat(call.body)
                return await provider.embeddings(call.body)

            result = await call_with_fallback(plan, run, attempts, on_error=self._count_error)
        except GatewayError as exc:
            self._finish_attempts(call, attempts)
            self._record(call, attempts, exc.status, exc.error_class, Usage())
            raise
        except asyncio.CancelledError:
            self._finish_attempts(call, attempts)
            self._record(call, attempts, CLIENT_CLOSED, "client_disconnected", Usage())
            raise
        self._finish_attempts(call, attempts)
        self._record(call, attempts, 200, None, result.usage, response=result.body)
        return result

    # ------------------------------------------------------------ stream

    async def chat_stream(self, call: Call) -> AsyncIterator[StreamChunk]:
        """Admit, route and open the stream; returns once the first chunk is in.

        Errors up to the first chunk raise here (fallback happened already);
        later failures raise :class:`GatewayError` from the iterator, after
        which the caller must send an error event, never a clean end.
        """
        attempts = Attempts()
        call.stream = True
        try:
            plan = await self._admit(call)
            primed = await call_with_fallback(
                plan, lambda t: prime_stream(t, call.body), attempts, on_error=self._count_error
            )
        except GatewayError as exc:
            self._finish_attempts(call, attempts)
            self._record(call, attempts, exc.status, exc.error_class, Usage())
            raise
        except asyncio.CancelledError:
            self._finish_attempts(call, attempts)
            self._record(call, attempts, CLIENT_CLOSED, "client_disconnected", Usage())
            raise
        self._finish_attempts(call, attempts)
        return self._relay(call, attempts, primed)

    async def _relay(
        self, call: Call, attempts: Attempts, stream: PrimedStream
    ) -> AsyncIterator[StreamChunk]:
        opts = call.body.get("stream_options")
        want_usage = isinstance(opts, dict) and bool(opts.get("include_usage"))
        usage: Usage | None = None
        text_len = 0
        status, error_class = 200, None
        target = attempts.deployment
        try:
            while True:
                t0 = time.perf_counter()
                try:
                    chunk = await stream.__anext__()
                except StopAsyncIteration:
                    break
                finally:
                    call.upstream_seconds += time.perf_counter() - t0
                raw_usage = chunk.get("usage")
                if raw_usage:
                    usage = Usage.from_openai(raw_usage)
                choices = chunk.get("choices")
                if choices:
                    for choice in choices:
                        delta = choice.get("delta") or {}
                        content = delta.get("content")
                        if content:
                            text_len += len(content)
                    if not want_usage and "usage" in chunk:
                        chunk = {k: v for k, v in chunk.items() if k != "usage"}
                elif raw_usage is not None and not want_usage:
                    continue
                yield chunk
        except ProviderError as exc:
            err = to_gateway_error(exc, target.id if target else "?")
            status, error_class = err.status, err.error_class
            if target is not None:
                self._count_error(target, exc)
            raise err from None
        except (asyncio.CancelledError, GeneratorExit):
            status, error_class = CLIENT_CLOSED, "client_disconnected"
            raise
        finally:
            await stream.aclose()
            if usage is None:
                usage = Usage(
                    estimate_tokens(str(call.body.get("messages", ""))),
                    estimate_tokens("x" * text_len),
                )
            self._record(call, attempts, status, error_class, usage)

    # ------------------------------------------------------------ settle

    def _count_error(self, target: Target, exc: ProviderError) -> None:
        self.metrics.upstream_errors.labels(target.id, exc.kind).inc()

    @staticmethod
    def _finish_attempts(call: Call, attempts: Attempts) -> None:
        call.upstream_seconds += attempts.upstream_seconds
        if attempts.deployment is not None:
            call.deployment = attempts.deployment.id

    def _record(
        self,
        call: Call,
        attempts: Attempts,
        status: int,
        error_class: str | None,
        usage: Usage,
        response: Any = None,
    ) -> None:
        deployment = attempts.deployment.deployment if attempts.deployment else None
        record = build_record(
            call,
            deployment=deployment,
            status=status,
            error_class=error_class,
            usage=usage,
            log_bodies=self._log_bodies,
            response_body=response,
        )
        self._sink.submit(record)
        self.metrics.observe_call(
            call.model, call.kind, status, record.latency_ms / 1000.0,
            record.overhead_ms / 1000.0, usage.prompt_tokens, usage.completion_tokens,
            record.cost,
        )
