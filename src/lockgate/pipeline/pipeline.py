"""The one path every model call takes.

authenticate -> policy (task routing, kill switch, model exists, key may use it,
validate) -> limits + budget reserve -> input guards (PII, injection) -> cache
-> route (weights, fallbacks) -> resilient call (retries, circuit breakers)
-> output guards (contracts with one repair, PII restore) -> settle budget
-> audit + metrics.

Every governance stage is optional (:class:`Controls`); with none configured the
path is the foundation one: no state round-trips, no guard work. Writes that do
not change the answer (budget settles, breaker outcomes, cache fills, audit
rows) run after the answer, in the background.

Two :class:`Call` fields let trusted in-process callers narrow the path (shadow
traffic uses both): ``deployment_pin`` routes to exactly one deployment (no
policy stage, no fallback, never mirrored) and ``governed=False`` skips the
limits + budget stage. After a successful non-stream chat the optional
``Controls.mirror`` (:class:`~lockgate.pipeline.mirror.Mirror`) may sample it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from lockgate.errors import BadRequest, Forbidden, GatewayError, NotFound, Unavailable
from lockgate.governance import (
    BudgetExceeded,
    CircuitBreaker,
    Ticket,
    prompt_tokens_estimate,
    tokens_for_chars,
)
from lockgate.guards import ContractViolation, GuardError, Guards, RequestGuards
from lockgate.metrics import UNKNOWN_MODEL, Metrics
from lockgate.observability.tracing import (
    STAGE,
    end_span,
    set_attributes,
    span,
    start_span,
    use_span,
)
from lockgate.pipeline.accounting import RecordSink, build_record
from lockgate.pipeline.auth import Authenticator
from lockgate.pipeline.cache import ResponseCache, cache_key
from lockgate.pipeline.call import Call, Principal
from lockgate.pipeline.contract_repair import contract_for, repair_body, strip_gateway_metadata
from lockgate.pipeline.facts import CallFacts, Result, StreamResult
from lockgate.pipeline.kill_switch import KillSwitch
from lockgate.pipeline.mirror import Mirror
from lockgate.pipeline.quotas import Limits
from lockgate.pipeline.resilience import (
    Attempts,
    PrimedStream,
    call_with_fallback,
    in_background,
    prime_stream,
    record_failure,
    to_gateway_error,
)
from lockgate.pipeline.routing import Router, Target
from lockgate.pipeline.validate import check_chat_body, check_embeddings_body
from lockgate.pipeline.virtual import VirtualDeployment
from lockgate.providers.base import Completion, ProviderError, StreamChunk, Usage
from lockgate.settings import ModelDeployment
from lockgate.state.base import StateUnavailable

CLIENT_CLOSED = 499

__all__ = ["CLIENT_CLOSED", "Controls", "Pipeline"]

log = logging.getLogger(__name__)


@dataclass
class Controls:
    """The optional governance stages; each None/empty when not configured."""

    limits: Limits | None = None
    breaker: CircuitBreaker | None = None
    guards: Guards | None = None
    cache: ResponseCache | None = None
    kill_switch: KillSwitch | None = None
    tasks: dict[str, str] = field(default_factory=dict)
    fallbacks: dict[str, str] = field(default_factory=dict)
    """model -> fallback model when the model (or the caller's team) is switched off."""
    on_version: Callable[[int | None], bool] | None = None
    """Fed the invalidation version read during admission; True: re-authenticate."""
    mirror: Mirror | None = None
    """Shadow traffic: ``maybe_mirror(call, body, completion, upstream_s, cost)``, O(1)."""


@dataclass(slots=True)
class _Flow:
    """Per-call governance state carried between stages."""

    facts: CallFacts
    ticket: Ticket | None = None
    guards: RequestGuards | None = None
    span: Any = None
    """A stream's request span: open until the stream ends (tracing on only)."""
    body: dict[str, Any] = field(default_factory=dict)
    cache_key: str | None = None


class Pipeline:
    def __init__(
        self,
        *,
        auth: Authenticator,
        router: Router,
        sink: RecordSink,
        metrics: Metrics,
        log_bodies: bool = False,
        controls: Controls | None = None,
    ) -> None:
        self.auth = auth
        self.router = router
        self._sink = sink
        self.metrics = metrics
        self._log_bodies = log_bodies
        self.controls = controls or Controls()

    # ------------------------------------------------------------ stages

    async def authenticate(self, api_key: str | None) -> Principal:
        return await self.auth.authenticate(api_key)

    def model_label(self, model: str) -> str:
        """``model`` as a metric label: a configured model, a virtual model its family knows
        to exist, else ``unknown`` (labels never grow with client input)."""
        if self.router.configured(model):
            return model
        family = self.router.virtual(model)
        known = getattr(family, "known", None) if family is not None else None
        if known is not None and known(model):
            return model
        return UNKNOWN_MODEL

    def visible_models(self, principal: Principal) -> list[str]:
        """The configured public models this principal may use."""
        return [m for m in self.router.models() if principal.may_use(m)]

    def grantable(self, model: str) -> bool:
        """May a key's ``allowed_models`` list ``model``? A configured model, or a name of a
        virtual family (``rag/<collection>``, ``rag/*``)."""
        if model in self.router.models():
            return True
        return any(f.grantable(model) for f in self.router.virtual_families)

    async def list_models(self, principal: Principal) -> list[str]:
        """Every public model this principal may use, virtual families included."""
        out = self.visible_models(principal)
        for family in self.router.virtual_families:
            out.extend(await family.models(principal))
        return out

    def _policy(self, call: Call, facts: CallFacts) -> None:
        """Task routing and the kill switch: may change the (private) ``call.model``."""
        c = self.controls
        if c.tasks:
            task = call.task
            if task is None:
                meta = call.body.get("metadata")
                if isinstance(meta, dict) and isinstance(meta.get("task"), str):
                    task = call.task = meta["task"]
            target = c.tasks.get(task) if task else None
            if target is not None and target != call.model:
                p = call.principal
                if p is not None and not p.may_use(target):
                    raise Forbidden(f"This key may not use the model '{target}' that task "
                                    f"'{task}' routes to.", param="model")
                facts.requested_model = facts.requested_model or call.model
                call.model = facts.model = target
        ks = c.kill_switch
        if ks is not None and ks.active:
            p = call.principal
            blocked = ks.blocked(call.model, p.team_id if p else None, p.team_name if p else None)
            if blocked is not None:
                ks.hits += 1
                self.metrics.kill_switch_hits.labels(blocked).inc()
                fallback = c.fallbacks.get(call.model)
                if fallback is None or ks.blocked(fallback, None, None) is not None:
                    what = f"model '{call.model}'" if blocked == "model" else "this team"
                    raise Unavailable(
                        f"Calls to {what} are switched off by an administrator (kill switch) "
                        "and no fallback is configured.",
                        code=f"{blocked}_disabled",
                    )
                facts.requested_model = facts.requested_model or call.model
                call.model = facts.model = fallback
                facts.kill_switch = blocked

    async def _admit(self, call: Call, facts: CallFacts) -> list[Target] | VirtualDeployment:
        if call.principal is None:
            with span(STAGE.AUTHENTICATE):
                call.principal = await self.auth.authenticate(call.api_key)
        with span(STAGE.POLICY):
            return self._plan(call, facts)

    def _plan(self, call: Call, facts: CallFacts) -> list[Target] | VirtualDeployment:
        pin = call.deployment_pin
        if pin is None:
            if self.controls.tasks or self.controls.kill_switch is not None:
                self._policy(call, facts)
            plan = self.router.plan(call.model)
            if not plan:
                family = self.router.virtual(call.model)
                if family is None:
                    raise NotFound(f"The model '{call.model}' does not exist.", param="model")
                return self._plan_virtual(call, facts, family)
        else:  # one deployment, chosen by a trusted caller: no policy, no fallback
            plan = self.router.pinned(pin)
            if not plan:
                raise NotFound(f"The deployment '{pin}' does not exist.", param="model",
                               code="deployment_not_found")
        p = call.principal
        if pin is None and p is not None and not p.may_use(facts.requested_model or call.model):
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

    def _plan_virtual(
        self, call: Call, facts: CallFacts, family: VirtualDeployment
    ) -> VirtualDeployment:
        p = call.principal
        if p is not None and not p.may_use(facts.requested_model or call.model):
            raise Forbidden(f"This key may not use the model '{call.model}'.", param="model")
        if call.kind != "chat":
            raise BadRequest(
                f"The model '{call.model}' is a chat model and cannot serve {call.kind}.",
                param="model", code="model_mode_mismatch",
            )
        check_chat_body(call.body)
        return family

    async def _govern(self, call: Call, plan: list[Target], flow: _Flow) -> None:
        """Limits + budget reserve, then input guards. Fills ``flow``."""
        c = self.controls
        flow.body = call.body
        if c.limits is not None and c.limits.active and call.governed:
            deps: list[ModelDeployment] = [t.deployment for t in plan]
            try:
                with span(STAGE.LIMITS):
                    flow.ticket = await c.limits.admit(call, deps)
                    if flow.ticket is not None and flow.ticket.headers:
                        flow.facts.rate_limits.update(flow.ticket.headers)
            except BudgetExceeded:
                self.metrics.governance_denials.labels("budget").inc()
                raise
            except StateUnavailable:
                self.metrics.governance_denials.labels("state_unavailable").inc()
                raise
            except GatewayError as exc:
                if exc.status == 429:
                    self.metrics.governance_denials.labels("rate_limit").inc()
                raise
            if (flow.ticket is not None and c.on_version is not None
                    and c.on_version(flow.ticket.version) and call.api_key):
                # the key cache was reset by another gateway: check the key again
                call.principal = await self.auth.authenticate(call.api_key)
        if c.guards is not None and call.kind == "chat":
            p = call.principal
            try:
                with span(STAGE.INPUT_GUARDS):
                    rg = c.guards.check_request(
                        flow.body, team_id=p.team_id if p else None,
                        team_name=p.team_name if p else None,
                    )
            except GatewayError as exc:
                self.metrics.guard_actions.labels("input", exc.error_class).inc()
                raise
            flow.guards = rg
            flow.body = rg.body
            if rg.pii is not None and rg.pii.findings:
                flow.facts.pii_entities = tuple(rg.pii.entities)
                self.metrics.guard_actions.labels("pii", rg.pii_policy.action).inc()
            if rg.injection is not None and rg.injection.hit:
                flow.facts.injection = rg.injection.header_value()
                self.metrics.guard_actions.labels("injection",
                                                  rg.injection_policy.action).inc()
        if "metadata" in flow.body:
            flow.body = strip_gateway_metadata(flow.body)

    # ------------------------------------------------------------ non-stream

    async def chat(self, call: Call) -> Result:
        """The answer and its facts. ``call`` is never changed (the pipeline works on a
        copy); errors are ``GatewayError`` with ``facts`` set."""
        return await self._traced(call, "chat")

    async def embeddings(self, call: Call) -> Result:
        return await self._traced(call, "embeddings")

    async def _traced(self, call: Call, kind: str) -> Result:
        with span(STAGE.REQUEST, request_id=call.request_id, model=call.model,
                  source=call.source, stream=False):
            return await self._complete(replace(call), kind)

    async def _complete(self, call: Call, kind: str) -> Result:
        attempts = Attempts()
        facts = CallFacts(call.request_id, call.model, call.started)
        flow = _Flow(facts)
        c = self.controls
        try:
            plan = await self._admit(call, facts)
            if not isinstance(plan, list):
                return await self._complete_virtual(call, facts, plan)
            await self._govern(call, plan, flow)
            cache = c.cache
            if cache is not None:
                if call.no_cache:
                    facts.cache = "bypass"
                else:
                    flow.cache_key = cache_key(call, flow.body)
                    with span(STAGE.CACHE):
                        hit = await cache.get(flow.cache_key)
                    if hit is not None:
                        return self._cache_hit(call, flow, hit)
                    facts.cache = "miss"
                    self.metrics.cache.labels("miss").inc()

            def runner(body: dict[str, Any]) -> Callable[[Target], Awaitable[Completion]]:
                async def run(target: Target) -> Completion:
                    provider = target.provider
                    if kind == "chat":
                        return await provider.chat(body)
                    return await provider.embeddings(body)
                return run

            result = await call_with_fallback(plan, runner(flow.body), attempts,
                                              on_error=self._count_error, breaker=c.breaker)
            if c.guards is not None and kind == "chat":
                result = await self._check_contract(call, plan, flow, attempts, result, runner)
            if flow.cache_key is not None and cache is not None:
                in_background(cache.put(flow.cache_key, result.body))
            if flow.guards is not None:
                with span(STAGE.OUTPUT_GUARDS):
                    new = flow.guards.process_response(result.body)
                if new is not result.body:
                    result = Completion(new, result.usage, None)
        except GatewayError as exc:
            self._end_ticket(flow, None, attempts)
            self._finish_attempts(facts, attempts)
            self._record(call, facts, attempts, exc.status, exc.error_class, Usage())
            exc.facts = facts
            raise
        except asyncio.CancelledError:
            self._end_ticket(flow, None, attempts, cancelled=True)
            self._finish_attempts(facts, attempts)
            self._record(call, facts, attempts, CLIENT_CLOSED, "client_disconnected", Usage())
            raise
        self._finish_attempts(facts, attempts)
        cost = self._record(call, facts, attempts, 200, None, result.usage,
                            response=result.body)
        self._end_ticket(flow, result.usage, attempts, cost=cost)
        if c.mirror is not None and kind == "chat" and call.deployment_pin is None:
            try:
                c.mirror.maybe_mirror(call, facts, flow.body, result, cost)
            except Exception:  # the primary answer never depends on its shadow
                log.exception("shadow mirror failed to sample %s", call.request_id)
        return Result(result.body, result.usage, result.raw, facts)

    async def _complete_virtual(
        self, call: Call, facts: CallFacts, family: VirtualDeployment
    ) -> Result:
        """A virtual deployment answers; only its inner calls are governed and charged.

        Errors propagate to the caller's handler, which records them.
        """
        facts.deployment = family.deployment_id(call.model)
        t0 = time.perf_counter()
        try:
            result = await family.chat(call)
        finally:
            facts.upstream_seconds += time.perf_counter() - t0
        self._record(call, facts, Attempts(), 200, None, Usage(), response=result.body)
        return Result(result.body, result.usage, result.raw, facts)

    async def _open_virtual(
        self, call: Call, facts: CallFacts, family: VirtualDeployment, opened: Any
    ) -> StreamResult:
        facts.deployment = family.deployment_id(call.model)
        t0 = time.perf_counter()
        try:
            stream = await family.chat_stream(call)
        finally:
            facts.upstream_seconds += time.perf_counter() - t0
        return StreamResult(self._relay_virtual(call, facts, stream, opened), facts)

    async def _relay_virtual(
        self, call: Call, facts: CallFacts, stream: AsyncIterator[StreamChunk], opened: Any
    ) -> AsyncIterator[StreamChunk]:
        status, error_class = 200, None
        try:
            while True:
                t0 = time.perf_counter()
                try:
                    chunk = await stream.__anext__()
                except StopAsyncIteration:
                    break
                finally:
                    facts.upstream_seconds += time.perf_counter() - t0
                yield chunk
        except GatewayError as exc:
            status, error_class = exc.status, exc.error_class
            exc.facts = facts
            raise
        except (asyncio.CancelledError, GeneratorExit):
            status, error_class = CLIENT_CLOSED, "client_disconnected"
            raise
        except Exception:
            status, error_class = 500, "internal_error"
            raise
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()
            with use_span(opened):
                self._record(call, facts, Attempts(), status, error_class, Usage())
            end_span(opened)

    async def _check_contract(
        self, call: Call, plan: list[Target], flow: _Flow, attempts: Attempts,
        result: Completion,
        runner: Callable[[dict[str, Any]], Callable[[Target], Awaitable[Completion]]],
    ) -> Completion:
        guards = self.controls.guards
        contract = contract_for(call.body, guards.contracts if guards else None)
        if contract is None:
            return result
        check = contract.check_completion(result.body)
        if check.ok:
            return result
        self.metrics.guard_actions.labels("contract", "repair").inc()
        flow.facts.contract_repaired = True
        body = repair_body(flow.body, contract, check.raw, check.errors)
        second = await call_with_fallback(
            plan, runner(body), attempts, on_error=self._count_error,
            breaker=self.controls.breaker,
        )
        usage = Usage(result.usage.prompt_tokens + second.usage.prompt_tokens,
                      result.usage.completion_tokens + second.usage.completion_tokens)
        check = contract.check_completion(second.body)
        if not check.ok:
            self.metrics.guard_actions.labels("contract", "failed").inc()
            # the repair cost money: settle it even though the call fails
            flow_usage = usage
            self._end_ticket(flow, flow_usage, attempts,
                             cost=self._price(attempts, flow_usage))
            raise ContractViolation(contract.id, check.errors)
        return Completion(second.body, usage, second.raw)

    def _cache_hit(self, call: Call, flow: _Flow, hit: dict[str, Any]) -> Result:
        self.metrics.cache.labels("hit").inc()
        facts = flow.facts
        facts.cache = "hit"
        facts.deployment = "cache"
        body = hit
        if flow.guards is not None:
            body = flow.guards.process_response(hit)
        raw_usage = hit.get("usage")
        usage = Usage.from_openai(raw_usage) if isinstance(raw_usage, dict) else Usage()
        record = build_record(call, facts, deployment=None, status=200, error_class=None,
                              usage=usage, log_bodies=self._log_bodies, response_body=body,
                              cached=True)
        self._sink.submit(record)
        self.metrics.observe_call(self.model_label(call.model), call.kind, 200,
                                  record.latency_ms / 1000.0, record.overhead_ms / 1000.0,
                                  0, 0, 0.0)
        if flow.ticket is not None:
            in_background(flow.ticket.settle(tokens=0, cost=0.0))
        return Result(body, usage, None, facts)

    # ------------------------------------------------------------ stream

    async def chat_stream(self, call: Call) -> StreamResult:
        """Admit, govern, route and open the stream; returns once the first chunk is in.

        Errors up to the first chunk raise here (fallback happened already);
        later failures raise :class:`GatewayError` from the iterator, after
        which the caller must send an error event, never a clean end.
        Streams bypass the response cache. ``call`` is never changed; the result's
        ``facts`` keep filling in while the stream runs.
        """
        attempts = Attempts()
        call = replace(call, stream=True)
        facts = CallFacts(call.request_id, call.model, call.started)
        flow = _Flow(facts)
        flow.span = start_span(STAGE.REQUEST, request_id=call.request_id, model=call.model,
                               source=call.source, stream=True)
        try:
            with use_span(flow.span):
                return await self._open_stream(call, facts, flow, attempts)
        except BaseException:
            end_span(flow.span)
            raise

    async def _open_stream(
        self, call: Call, facts: CallFacts, flow: _Flow, attempts: Attempts
    ) -> StreamResult:
        c = self.controls
        try:
            plan = await self._admit(call, facts)
            if not isinstance(plan, list):
                return await self._open_virtual(call, facts, plan, flow.span)
            await self._govern(call, plan, flow)
            if c.cache is not None:
                facts.cache = "bypass"
            body = flow.body
            primed = await call_with_fallback(
                plan, lambda t: prime_stream(t, body), attempts, on_error=self._count_error,
                breaker=c.breaker,
            )
        except GatewayError as exc:
            self._end_ticket(flow, None, attempts)
            self._finish_attempts(facts, attempts)
            self._record(call, facts, attempts, exc.status, exc.error_class, Usage())
            exc.facts = facts
            raise
        except asyncio.CancelledError:
            self._end_ticket(flow, None, attempts, cancelled=True)
            self._finish_attempts(facts, attempts)
            self._record(call, facts, attempts, CLIENT_CLOSED, "client_disconnected", Usage())
            raise
        self._finish_attempts(facts, attempts)
        return StreamResult(self._relay(call, attempts, primed, flow), facts)

    async def _relay(
        self, call: Call, attempts: Attempts, stream: PrimedStream, flow: _Flow
    ) -> AsyncIterator[StreamChunk]:
        opts = call.body.get("stream_options")
        want_usage = isinstance(opts, dict) and bool(opts.get("include_usage"))
        usage: Usage | None = None
        text_len = 0
        status, error_class = 200, None
        target = attempts.deployment
        sg = flow.guards.stream_guard() if flow.guards is not None else None
        try:
            while True:
                t0 = time.perf_counter()
                try:
                    chunk = await stream.__anext__()
                except StopAsyncIteration:
                    break
                finally:
                    flow.facts.upstream_seconds += time.perf_counter() - t0
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
                    if sg is not None:
                        chunk = sg.process(chunk)
                elif raw_usage is not None and not want_usage:
                    continue
                yield chunk
            if sg is not None:
                for extra in sg.close():
                    yield extra
        except ProviderError as exc:
            err = to_gateway_error(exc, target.id if target else "?")
            status, error_class = err.status, err.error_class
            if target is not None:
                self._count_error(target, exc)
                record_failure(self.controls.breaker, attempts.permit, exc)
            err.facts = flow.facts
            raise err from None
        except GuardError as exc:
            status, error_class = exc.status, exc.error_class
            exc.facts = flow.facts
            self.metrics.guard_actions.labels("output", exc.error_class).inc()
            raise
        except (asyncio.CancelledError, GeneratorExit):
            status, error_class = CLIENT_CLOSED, "client_disconnected"
            raise
        finally:
            await stream.aclose()
            if usage is None:
                usage = Usage(prompt_tokens_estimate(call.body), tokens_for_chars(text_len))
            with use_span(flow.span):
                cost = self._record(call, flow.facts, attempts, status, error_class, usage)
            end_span(flow.span)
            self._end_ticket(flow, usage, attempts, cost=cost)

    # ------------------------------------------------------------ settle

    def _end_ticket(
        self, flow: _Flow, usage: Usage | None, attempts: Attempts, *,
        cost: float | None = None, cancelled: bool = False,
    ) -> None:
        """Settle (true usage), or release (nothing consumed); off the request path."""
        ticket = flow.ticket
        if ticket is None or ticket.done:
            return
        flow.ticket = None
        if usage is not None:
            in_background(ticket.settle(
                tokens=usage.prompt_tokens + usage.completion_tokens,
                cost=cost if cost is not None else 0.0,
            ))
        elif cancelled and attempts.tries:
            in_background(ticket.settle())  # the upstream may have charged: keep the estimate
        else:
            in_background(ticket.release())

    @staticmethod
    def _price(attempts: Attempts, usage: Usage) -> float:
        target = attempts.deployment
        if target is None:
            return 0.0
        return target.deployment.pricing.cost(usage.prompt_tokens, usage.completion_tokens)

    def _count_error(self, target: Target, exc: ProviderError) -> None:
        self.metrics.upstream_errors.labels(target.id, exc.kind).inc()

    @staticmethod
    def _finish_attempts(facts: CallFacts, attempts: Attempts) -> None:
        facts.upstream_seconds += attempts.upstream_seconds
        if attempts.deployment is not None:
            facts.deployment = attempts.deployment.id

    def _record(
        self,
        call: Call,
        facts: CallFacts,
        attempts: Attempts,
        status: int,
        error_class: str | None,
        usage: Usage,
        response: Any = None,
    ) -> float:
        deployment = attempts.deployment.deployment if attempts.deployment else None
        set_attributes(status=status, error_class=error_class, deployment=facts.deployment,
                       prompt_tokens=usage.prompt_tokens,
                       completion_tokens=usage.completion_tokens)
        record = build_record(
            call,
            facts,
            deployment=deployment,
            status=status,
            error_class=error_class,
            usage=usage,
            log_bodies=self._log_bodies,
            response_body=response,
        )
        self._sink.submit(record)
        self.metrics.observe_call(
            self.model_label(call.model), call.kind, status, record.latency_ms / 1000.0,
            record.overhead_ms / 1000.0, usage.prompt_tokens, usage.completion_tokens,
            record.cost,
        )
        return record.cost
