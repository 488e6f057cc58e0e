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
limits + budget stage. After a successful chat (stream or not) the optional
``Controls.mirror`` (:class:`~lockgate.pipeline.mirror.Mirror`) may sample it.

Streams take every control (see :meth:`Pipeline.chat_stream`): the response cache
(a hit is replayed as a stream, a completed stream fills it), output contracts
(validated when the stream ends, or buffered: ``guards.contract_stream``), shadow
traffic (the mirror gets the assembled answer after the stream ended) and audit.
Any failure, expected or not, is audited and settles or releases the budget
reservation; an unexpected exception becomes a 500 ``internal_error`` GatewayError
(before a stream starts) or an SSE error event (mid-stream), never a dropped call.
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
    completion_cap,
    prompt_tokens_bound,
    requested_completion_limit,
    text_tokens_bound,
)
from lockgate.guards import (
    Contract,
    ContractViolation,
    GuardError,
    Guards,
    PassageVerdict,
    RequestGuards,
)
from lockgate.metrics import UNKNOWN_MODEL, Metrics
from lockgate.observability.tracing import (
    STAGE,
    end_span,
    set_attributes,
    span,
    start_span,
    use_span,
)
from lockgate.pipeline.accounting import RecordSink, build_record, guard_detail
from lockgate.pipeline.auth import Authenticator
from lockgate.pipeline.cache import ResponseCache, cache_key
from lockgate.pipeline.call import Call, Principal
from lockgate.pipeline.contract_repair import contract_for, repair_body, strip_gateway_metadata
from lockgate.pipeline.facts import CallFacts, Result, StreamResult
from lockgate.pipeline.kill_switch import KillSwitch
from lockgate.pipeline.mirror import Mirror
from lockgate.pipeline.quotas import Limits
from lockgate.pipeline.reservation import count_prompt
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
from lockgate.pipeline.stream_assembly import StreamAssembler, completion_chunks
from lockgate.pipeline.validate import check_chat_body, check_embeddings_body
from lockgate.pipeline.virtual import VirtualDeployment
from lockgate.providers.base import Completion, ProviderError, StreamChunk, Usage
from lockgate.settings import ModelDeployment
from lockgate.state.base import StateUnavailable

CLIENT_CLOSED = 499
INTERNAL_ERROR = "internal_error"

__all__ = ["CLIENT_CLOSED", "INTERNAL_ERROR", "Controls", "Pipeline"]

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
    """Shadow traffic: ``maybe_mirror(call, facts, body, completion, cost)``, O(1)."""


Runner = Callable[[dict[str, Any]], Callable[[Target], Awaitable[Completion]]]


def _runner(kind: str) -> Runner:
    """``runner(body)(target)``: one upstream call of ``kind`` with ``body``."""
    def runner(body: dict[str, Any]) -> Callable[[Target], Awaitable[Completion]]:
        def run(target: Target) -> Awaitable[Completion]:  # the provider's coroutine itself
            provider = target.provider
            if kind == "chat":
                return provider.chat(body)
            return provider.embeddings(body)
        return run
    return runner


def _wants_usage(body: dict[str, Any]) -> bool:
    opts = body.get("stream_options")
    return isinstance(opts, dict) and opts.get("include_usage") is True


def _usage_doc(usage: Usage) -> dict[str, int]:
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens}


def _cached_usage(body: dict[str, Any]) -> Usage:
    """The usage stored with a cached answer (zero when it is missing or unreadable)."""
    raw = body.get("usage")
    if not isinstance(raw, dict):
        return Usage()
    try:
        return Usage.from_openai(raw)
    except ProviderError:
        return Usage()


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
    blocked: GatewayError | None = None
    """The input guards refused the call (recorded in its audit row)."""
    extra: list[Ticket] = field(default_factory=list)
    """Budget top-ups (a guard lengthened the prompt, a contract repair): settled at 0."""
    prompt_reserved: int = 0
    """Prompt tokens the ticket holds (exact count or bound): the settle of last resort."""
    governed: Call | None = None
    """The call as admitted (its scopes), for budget top-ups."""


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

    def screen_passages(
        self, texts: list[str], principal: Principal | None
    ) -> list[PassageVerdict]:
        """The input guards' injection check on retrieved passages (RAG) before a feature
        puts them in a prompt: one verdict per text (all clear without guards)."""
        guards = self.controls.guards
        if guards is None:
            return [PassageVerdict() for _ in texts]
        verdicts = guards.screen_passages(
            texts, team_id=principal.team_id if principal else None,
            team_name=principal.team_name if principal else None,
        )
        for v in verdicts:
            if v.rules:
                self.metrics.guard_actions.labels(
                    "injection", "withheld" if v.withheld else "flag").inc()
        return verdicts

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

    def _admit_now(self, call: Call, facts: CallFacts) -> list[Target] | VirtualDeployment | None:
        """:meth:`_admit` without a coroutine when the key is known already (cached or the
        master key); None when it must be looked up (then await :meth:`_admit`)."""
        if call.principal is None:
            with span(STAGE.AUTHENTICATE):
                principal = self.auth.known(call.api_key)
            if principal is None:
                return None
            call.principal = principal
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

    def _governs(self, call: Call) -> bool:
        """Whether :meth:`_govern` has work for ``call`` (limits or guards); if not,
        :meth:`_ungoverned` fills ``flow`` without a coroutine."""
        c = self.controls
        return (c.limits is not None and c.limits.active and call.governed) or (
            c.guards is not None)

    @staticmethod
    def _ungoverned(call: Call, flow: _Flow) -> None:
        body = call.body
        flow.body = strip_gateway_metadata(body) if "metadata" in body else body

    async def _govern(self, call: Call, plan: list[Target], flow: _Flow) -> None:
        """Limits + budget reserve, then input guards. Fills ``flow``."""
        c = self.controls
        flow.body = call.body
        if c.limits is not None and c.limits.active and call.governed:
            deps: list[ModelDeployment] = [t.deployment for t in plan]
            limits = c.limits

            async def counted(body: dict[str, Any]) -> int:
                n = await count_prompt(plan, body, media_tokens=limits.media_tokens)
                flow.prompt_reserved = n
                return n

            try:
                with span(STAGE.LIMITS):
                    flow.ticket = await limits.admit(call, deps, counted)
                    flow.governed = call
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
        if c.guards is not None:
            p = call.principal
            check = c.guards.check_request if call.kind == "chat" else c.guards.check_embeddings
            try:
                with span(STAGE.INPUT_GUARDS):
                    rg = check(flow.body, team_id=p.team_id if p else None,
                               team_name=p.team_name if p else None)
            except GatewayError as exc:
                self.metrics.guard_actions.labels("input", exc.error_class).inc()
                flow.blocked = exc
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
        if flow.ticket is not None:
            await self._hold_to_reservation(call, plan, flow)

    async def _hold_to_reservation(self, call: Call, plan: list[Target], flow: _Flow) -> None:
        """Make the upstream call unable to cost more than the ticket holds.

        The completion cap reserved is sent upstream (``governance.max_tokens_field``, by
        default ``max_tokens``) when the client gave
        none; a guard that lengthened the prompt (PII placeholders) gets a budget top-up.
        """
        limits = self.controls.limits
        assert limits is not None
        if call.kind == "chat" and requested_completion_limit(flow.body) is None:
            flow.body = {**flow.body, limits.max_tokens_field: limits.default_max_tokens}
        if flow.guards is not None and any(flow.body.get(k) != call.body.get(k)
                                           for k in ("messages", "input")):
            now = await count_prompt(plan, flow.body, media_tokens=limits.media_tokens)
            if now > flow.prompt_reserved:
                await self._top_up(plan, flow, now - flow.prompt_reserved, 0)

    async def _top_up(self, plan: list[Target], flow: _Flow, prompt: int, completion: int
                      ) -> None:
        limits = self.controls.limits
        call = flow.governed
        if limits is None or flow.ticket is None or call is None:
            return
        pin = max((t.deployment.pricing.input_per_mtok for t in plan), default=0.0)
        pout = max((t.deployment.pricing.output_per_mtok for t in plan), default=0.0)
        try:
            extra = await limits.top_up(call, prompt + completion,
                                        (prompt * pin + completion * pout) / 1e6)
        except BudgetExceeded:
            self.metrics.governance_denials.labels("budget").inc()
            raise
        if extra is not None:
            flow.extra.append(extra)

    # ------------------------------------------------------------ non-stream

    async def chat(self, call: Call) -> Result:
        """The answer and its facts. ``call`` is never changed (the pipeline works on a
        copy); errors are ``GatewayError`` with ``facts`` set."""
        with span(STAGE.REQUEST, request_id=call.request_id, model=call.model,
                  source=call.source, stream=False):
            return await self._complete(call.copy(), "chat")

    async def embeddings(self, call: Call) -> Result:
        with span(STAGE.REQUEST, request_id=call.request_id, model=call.model,
                  source=call.source, stream=False):
            return await self._complete(call.copy(), "embeddings")

    async def _complete(self, call: Call, kind: str) -> Result:
        attempts = Attempts()
        facts = CallFacts(call.request_id, call.model, call.started)
        flow = _Flow(facts)
        c = self.controls
        try:
            plan = self._admit_now(call, facts)
            if plan is None:
                plan = await self._admit(call, facts)
            if not isinstance(plan, list):
                return await self._complete_virtual(call, facts, plan)
            if self._governs(call):
                await self._govern(call, plan, flow)
            else:
                self._ungoverned(call, flow)
            contract = self._contract(call)
            if c.cache is not None:
                hit = await self._cache_lookup(call, flow, contract)
                if hit is not None:
                    return self._cache_hit(call, flow, hit)
            result = await call_with_fallback(plan, _runner(kind)(flow.body), attempts,
                                              on_error=self._count_error, breaker=c.breaker)
            if contract is not None:
                result = await self._check_contract(plan, flow, attempts, result, contract)
            self._fill(flow, result.body)
            if flow.guards is not None:
                with span(STAGE.OUTPUT_GUARDS):
                    new = flow.guards.process_response(result.body)
                if new is not result.body:
                    result = Completion(new, result.usage, None)
        except GatewayError as exc:
            self._end_ticket(flow, None, attempts)
            self._finish_attempts(facts, attempts)
            self._record(call, facts, attempts, exc.status, exc.error_class, Usage(), flow=flow)
            exc.facts = facts
            raise
        except asyncio.CancelledError:
            self._end_ticket(flow, None, attempts, cancelled=True)
            self._finish_attempts(facts, attempts)
            self._record(call, facts, attempts, CLIENT_CLOSED, "client_disconnected", Usage(),
                         flow=flow)
            raise
        except Exception as exc:  # a bug or an unforeseen failure: still audited, released
            raise self._unexpected(call, flow, attempts, exc) from exc
        self._finish_attempts(facts, attempts)
        cost = self._record(call, facts, attempts, 200, None, result.usage,
                            response=result.body, flow=flow)
        self._end_ticket(flow, result.usage, attempts, cost=cost)
        if kind == "chat":
            self._mirror(call, flow, result, cost)
        return Result(result.body, result.usage, result.raw, facts)

    def _contract(self, call: Call) -> Contract | None:
        """The output contract the chat body asks for (400 for an unknown id), or None."""
        guards = self.controls.guards
        if guards is None or call.kind != "chat":
            return None
        return contract_for(call.body, guards.contracts)

    def _stream_mode(self, contract: Contract) -> str:
        guards = self.controls.guards
        return contract.stream or (guards.config.contract_stream if guards else "end")

    async def _cache_lookup(
        self, call: Call, flow: _Flow, contract: Contract | None
    ) -> dict[str, Any] | None:
        """The cached answer for this call, or None (sets ``flow.cache_key`` for the fill).

        A cached answer that does not satisfy the call's contract is a miss (the cache key
        ignores ``metadata``, so another contract may have filled it)."""
        cache = self.controls.cache
        if cache is None:
            return None
        facts = flow.facts
        if call.no_cache:
            facts.cache = "bypass"
            return None
        flow.cache_key = cache_key(call, flow.body)
        with span(STAGE.CACHE):
            hit = await cache.get(flow.cache_key)
        if hit is not None and (contract is None or contract.check_completion(hit).ok):
            return hit
        facts.cache = "miss"
        self.metrics.cache.labels("miss").inc()
        return None

    def _fill(self, flow: _Flow, body: dict[str, Any]) -> None:
        cache = self.controls.cache
        if flow.cache_key is not None and cache is not None:
            in_background(cache.put(flow.cache_key, body))

    def _mirror(self, call: Call, flow: _Flow, answer: Completion, cost: float) -> None:
        mirror = self.controls.mirror
        if mirror is None or call.deployment_pin is not None:
            return
        try:
            mirror.maybe_mirror(call, flow.facts, flow.body, answer, cost)
        except Exception:  # the primary answer never depends on its shadow
            log.exception("shadow mirror failed to sample %s", call.request_id)

    def _unexpected(
        self, call: Call, flow: _Flow, attempts: Attempts, exc: BaseException
    ) -> GatewayError:
        """An exception that is not a GatewayError: log it, release the reservation,
        audit a 500 and return the ``internal_error`` GatewayError to raise instead."""
        log.error("request %s failed unexpectedly", call.request_id, exc_info=exc)
        facts = flow.facts
        self._end_ticket(flow, None, attempts)
        self._finish_attempts(facts, attempts)
        self._record(call, facts, attempts, 500, INTERNAL_ERROR, Usage(), flow=flow)
        err = _internal_error(call)
        err.facts = facts
        return err

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
        self, plan: list[Target], flow: _Flow, attempts: Attempts, result: Completion,
        contract: Contract,
    ) -> Completion:
        """The answer if it satisfies ``contract``, else one repair call's answer;
        ContractViolation (502) when that is still invalid."""
        check = contract.check_completion(result.body)
        if check.ok:
            return result
        self.metrics.guard_actions.labels("contract", "repair").inc()
        flow.facts.contract_repaired = True
        body = repair_body(flow.body, contract, check.raw, check.errors)
        limits = self.controls.limits
        if flow.ticket is not None and limits is not None:
            try:  # the repair is a second upstream call: reserve it like one
                prompt = await count_prompt(plan, body, media_tokens=limits.media_tokens)
                await self._top_up(plan, flow, prompt,
                                   completion_cap(body, limits.default_max_tokens))
            except BudgetExceeded:
                self._end_ticket(flow, result.usage, attempts,
                                 cost=self._price(attempts, result.usage))
                raise
        second = await call_with_fallback(
            plan, _runner("chat")(body), attempts, on_error=self._count_error,
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
            raise ContractViolation(contract.id, check.errors, answer=check.raw)
        return Completion(second.body, usage, second.raw)

    def _cache_hit(self, call: Call, flow: _Flow, hit: dict[str, Any]) -> Result:
        facts = self._count_hit(flow)
        body = hit
        if flow.guards is not None:
            body = flow.guards.process_response(hit)
        usage = _cached_usage(hit)
        self._record_cached(call, facts, 200, None, usage, body, flow=flow)
        self._end_ticket(flow, Usage(), Attempts(), cost=0.0)
        return Result(body, usage, None, facts)

    def _count_hit(self, flow: _Flow) -> CallFacts:
        self.metrics.cache.labels("hit").inc()
        facts = flow.facts
        facts.cache = "hit"
        facts.deployment = "cache"
        return facts

    def _record_cached(
        self, call: Call, facts: CallFacts, status: int, error_class: str | None,
        usage: Usage, body: dict[str, Any], *, flow: _Flow | None = None,
    ) -> None:
        """The audit row of an answer served from the cache (cost 0, no upstream tokens)."""
        request_body, response_body, detail = self._audit_parts(call, flow, body)
        record = build_record(call, facts, deployment=None, status=status,
                              error_class=error_class, usage=usage,
                              log_bodies=self._log_bodies, request_body=request_body,
                              response_body=response_body, cached=True, detail=detail)
        self._sink.submit(record)
        self.metrics.observe_call(self.model_label(call.model), call.kind, status,
                                  record.latency_ms / 1000.0, record.overhead_ms / 1000.0,
                                  0, 0, 0.0)

    # ------------------------------------------------------------ stream

    async def chat_stream(self, call: Call) -> StreamResult:
        """Admit, govern, route and open the stream; returns once the first chunk is in.

        Errors up to the first chunk raise here (fallback happened already);
        later failures raise :class:`GatewayError` from the iterator, after
        which the caller must send an error event, never a clean end.

        Every control applies: a cached answer is replayed as a stream (``facts.cache``
        ``hit``; usage chunk when ``stream_options.include_usage``), a stream that
        completes fills the cache (an interrupted or failed one never does); an output
        contract is validated on the assembled answer when the stream ends (a violation
        raises ContractViolation from the iterator, so the stream ends with an error event
        and no ``[DONE]``), or, in ``buffer`` mode, the whole answer is taken, validated
        and repaired first and then streamed; the shadow mirror gets the assembled answer
        after the stream ended. ``call`` is never changed; the result's ``facts`` keep
        filling in while the stream runs.
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
            contract = self._contract(call)
            hit = await self._cache_lookup(call, flow, contract)
            if hit is not None:
                self._count_hit(flow)
                answer = Completion(hit, _cached_usage(hit))
                return StreamResult(self._replay(call, attempts, flow, answer, cached=True),
                                    facts)
            if contract is not None and self._stream_mode(contract) == "buffer":
                return await self._open_buffered(call, plan, flow, attempts, contract)
            body = flow.body
            primed = await call_with_fallback(
                plan, lambda t: prime_stream(t, body), attempts, on_error=self._count_error,
                breaker=c.breaker,
            )
        except GatewayError as exc:
            self._end_ticket(flow, None, attempts)
            self._finish_attempts(facts, attempts)
            self._record(call, facts, attempts, exc.status, exc.error_class, Usage(), flow=flow)
            exc.facts = facts
            raise
        except asyncio.CancelledError:
            self._end_ticket(flow, None, attempts, cancelled=True)
            self._finish_attempts(facts, attempts)
            self._record(call, facts, attempts, CLIENT_CLOSED, "client_disconnected", Usage(),
                         flow=flow)
            raise
        except Exception as exc:  # a bug or an unforeseen failure: still audited, released
            raise self._unexpected(call, flow, attempts, exc) from exc
        self._finish_attempts(facts, attempts)
        return StreamResult(self._relay(call, attempts, primed, flow, contract), facts)

    async def _open_buffered(
        self, call: Call, plan: list[Target], flow: _Flow, attempts: Attempts,
        contract: Contract,
    ) -> StreamResult:
        """``buffer`` contract: the whole answer (non-stream upstream call), validated and
        repaired before anything is streamed; errors raise here, before the stream."""
        c = self.controls
        result = await call_with_fallback(plan, _runner("chat")(flow.body), attempts,
                                          on_error=self._count_error, breaker=c.breaker)
        result = await self._check_contract(plan, flow, attempts, result, contract)
        self._fill(flow, result.body)
        self._finish_attempts(flow.facts, attempts)
        return StreamResult(self._replay(call, attempts, flow, result, cached=False),
                            flow.facts)

    async def _replay(
        self, call: Call, attempts: Attempts, flow: _Flow, answer: Completion, *, cached: bool
    ) -> AsyncIterator[StreamChunk]:
        """A finished answer (cache hit or buffered) as a stream, then its audit row."""
        facts = flow.facts
        body = answer.body
        status, error_class = 200, None
        cost = 0.0
        try:
            if flow.guards is not None:
                with span(STAGE.OUTPUT_GUARDS):
                    body = flow.guards.process_response(body)
            usage = _usage_doc(answer.usage) if _wants_usage(call.body) else None
            for chunk in completion_chunks(body, usage=usage):
                yield chunk
        except GatewayError as exc:
            status, error_class = exc.status, exc.error_class
            exc.facts = facts
            raise
        except (asyncio.CancelledError, GeneratorExit):
            status, error_class = CLIENT_CLOSED, "client_disconnected"
            raise
        except Exception as exc:
            status, error_class = 500, INTERNAL_ERROR
            log.error("request %s failed while replaying its answer", call.request_id,
                      exc_info=exc)
            err = _internal_error(call)
            err.facts = facts
            raise err from exc
        finally:
            with use_span(flow.span):
                if cached:
                    self._record_cached(call, facts, status, error_class, answer.usage, body,
                                        flow=flow)
                else:
                    cost = self._record(call, facts, attempts, status, error_class,
                                        answer.usage, response=body, flow=flow)
            end_span(flow.span)
            self._end_ticket(flow, answer.usage if not cached else Usage(), attempts,
                             cost=cost)
            if not cached and status == 200:
                self._mirror(call, flow, Completion(body, answer.usage), cost)

    async def _relay(
        self, call: Call, attempts: Attempts, stream: PrimedStream, flow: _Flow,
        contract: Contract | None = None,
    ) -> AsyncIterator[StreamChunk]:
        c = self.controls
        want_usage = _wants_usage(call.body)
        usage: Usage | None = None
        text_len = 0
        status, error_class = 200, None
        target = attempts.deployment
        sg = flow.guards.stream_guard() if flow.guards is not None else None
        mirror = c.mirror if call.deployment_pin is None else None
        if mirror is not None and not mirror.mirrors(call.model):
            mirror = None
        fill = flow.cache_key is not None and c.cache is not None
        # the whole answer is assembled only when a control needs it
        assembler = (StreamAssembler() if contract is not None or fill or mirror is not None
                     else None)
        answer: dict[str, Any] | None = None
        cost = 0.0
        try:
            while True:
                t0 = time.perf_counter()
                try:
                    chunk = await stream.__anext__()
                except StopAsyncIteration:
                    break
                finally:
                    flow.facts.upstream_seconds += time.perf_counter() - t0
                if assembler is not None:
                    assembler.feed(chunk)
                raw_usage = chunk.get("usage")
                if raw_usage is not None and (raw_usage or not isinstance(raw_usage, dict)):
                    usage = Usage.from_openai(raw_usage)  # junk: ProviderError -> 502
                choices = chunk.get("choices")
                if choices:
                    for choice in choices:
                        delta = choice.get("delta") or {}
                        content = delta.get("content")
                        if isinstance(content, str):
                            text_len += text_tokens_bound(content)
                        for tc in delta.get("tool_calls") or ():
                            fn = tc.get("function") if isinstance(tc, dict) else None
                            args = fn.get("arguments") if isinstance(fn, dict) else None
                            if isinstance(args, str):
                                text_len += text_tokens_bound(args)
                    if not want_usage and "usage" in chunk:
                        chunk = {k: v for k, v in chunk.items() if k != "usage"}
                    if sg is not None:
                        chunk = sg.process(chunk)
                elif raw_usage is not None and not want_usage:
                    continue
                yield chunk
            if assembler is not None:
                answer = assembler.completion()
                if contract is not None:
                    check = contract.check_completion(answer)
                    if not check.ok:  # bytes went out: nothing to repair, end with an error
                        self.metrics.guard_actions.labels("contract", "failed").inc()
                        raise ContractViolation(contract.id, check.errors)
            if sg is not None:
                for extra in sg.close():
                    yield extra
        except ProviderError as exc:
            err = to_gateway_error(exc, target.id if target else "?")
            status, error_class = err.status, err.error_class
            if target is not None:
                self._count_error(target, exc)
                record_failure(c.breaker, attempts.permit, exc)
            err.facts = flow.facts
            raise err from None
        except GuardError as exc:
            status, error_class = exc.status, exc.error_class
            exc.facts = flow.facts
            self.metrics.guard_actions.labels("output", exc.error_class).inc()
            raise
        except GatewayError as exc:  # the contract failed at the end
            status, error_class = exc.status, exc.error_class
            exc.facts = flow.facts
            raise
        except (asyncio.CancelledError, GeneratorExit):
            status, error_class = CLIENT_CLOSED, "client_disconnected"
            raise
        except Exception as exc:  # a bug, a decode error: an error event, never a dropped line
            status, error_class = 500, INTERNAL_ERROR
            log.error("request %s failed mid-stream", call.request_id, exc_info=exc)
            err = _internal_error(call)
            err.facts = flow.facts
            raise err from exc
        finally:
            await stream.aclose()
            if usage is None:  # no usage reported: settle at bounds, never below the truth
                usage = self._usage_bound(call, flow, text_len)
            with use_span(flow.span):
                cost = self._record(call, flow.facts, attempts, status, error_class, usage,
                                    flow=flow)
            end_span(flow.span)
            self._end_ticket(flow, usage, attempts, cost=cost)
            if status == 200 and answer is not None:  # completed, valid: cache and mirror
                if fill:
                    self._fill(flow, answer)
                if mirror is not None:
                    self._mirror(call, flow, Completion(answer, usage), cost)

    # ------------------------------------------------------------ settle

    def _audit_parts(
        self, call: Call, flow: _Flow | None, response: Any
    ) -> tuple[Any, Any, str | None]:
        """What the audit row may hold: the request body the guards produced (never the
        caller's unredacted one when guards are on), the answer before placeholders were
        restored, and the guards' findings (``detail``)."""
        guards = self.controls.guards
        rg = flow.guards if flow is not None else None
        detail = guard_detail(rg, flow.blocked if flow is not None else None)
        if not self._log_bodies:
            return None, None, detail
        if guards is None:
            return call.body, response, detail
        if rg is not None:
            assert flow is not None
            logged = rg.logged_response if rg.logged_response is not None else response
            return flow.body, logged, detail
        # no guarded body: refused, failed before the guards, or a virtual (RAG) call
        p = call.principal
        body = guards.redact_for_log(call.body, kind=call.kind,
                                     team_id=p.team_id if p else None,
                                     team_name=p.team_name if p else None)
        return body, None, detail  # an answer no guard saw may hold restored PII

    def _end_ticket(
        self, flow: _Flow, usage: Usage | None, attempts: Attempts, *,
        cost: float | None = None, cancelled: bool = False,
    ) -> None:
        """Settle (true usage), or release (nothing consumed); off the request path."""
        for extra in flow.extra:  # top-ups hold budget only: the main ticket charges
            in_background(extra.release())
        flow.extra = []
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

    def _usage_bound(self, call: Call, flow: _Flow, output_bytes: int) -> Usage:
        """Usage of a stream whose upstream reported none: the prompt as reserved (exact
        count or bound), the output by its bytes, capped at the completion limit."""
        limits = self.controls.limits
        default = limits.default_max_tokens if limits is not None else output_bytes
        prompt = flow.prompt_reserved
        if not prompt:
            prompt = prompt_tokens_bound(flow.body or call.body)
        cap = completion_cap(flow.body or call.body, max(default, 1))
        return Usage(prompt, min(output_bytes, cap))

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
        *,
        flow: _Flow | None = None,
    ) -> float:
        deployment = attempts.deployment.deployment if attempts.deployment else None
        request_body, response_body, detail = self._audit_parts(call, flow, response)
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
            request_body=request_body,
            response_body=response_body,
            detail=detail,
        )
        self._sink.submit(record)
        self.metrics.observe_call(
            self.model_label(call.model), call.kind, status, record.latency_ms / 1000.0,
            record.overhead_ms / 1000.0, usage.prompt_tokens, usage.completion_tokens,
            record.cost,
        )
        return record.cost


def _internal_error(call: Call) -> GatewayError:
    return GatewayError(
        f"lockgate could not complete request {call.request_id} because of an internal "
        "error (it has been logged).", status=500, code=INTERNAL_ERROR,
    )
