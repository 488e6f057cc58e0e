"""Settle: turn a finished call into its usage/audit record (cost from pricing).

The pipeline decides what may be stored (:func:`guard_detail`, and the body the
guards produced, never the caller's unredacted one): ``request_body`` and
``response_body`` here are stored as given when ``log_bodies`` is on.
"""

from __future__ import annotations

from typing import Any, Protocol

import orjson

from lockgate.errors import GatewayError
from lockgate.guards import InjectionBlocked, PiiBlocked, RequestGuards
from lockgate.pipeline.call import Call, UsageRecord
from lockgate.pipeline.facts import CallFacts
from lockgate.providers.base import Usage
from lockgate.settings import ModelDeployment


class RecordSink(Protocol):
    def submit(self, record: UsageRecord) -> None: ...


def build_record(
    call: Call,
    facts: CallFacts,
    *,
    deployment: ModelDeployment | None,
    status: int,
    error_class: str | None,
    usage: Usage,
    log_bodies: bool,
    request_body: object | None = None,
    response_body: object | None = None,
    cached: bool = False,
    detail: str | None = None,
) -> UsageRecord:
    cost = 0.0
    if deployment is not None and not cached:
        cost = deployment.pricing.cost(usage.prompt_tokens, usage.completion_tokens)
    principal = call.principal
    return UsageRecord(
        request_id=call.request_id,
        created_at=call.started_at,
        key_id=principal.key_id if principal else None,
        team_id=principal.team_id if principal else None,
        model=facts.model,
        deployment=facts.deployment,
        kind=call.kind,
        source=call.source,
        status=status,
        error_class=error_class,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        cost=cost,
        latency_ms=call.elapsed() * 1000.0,
        overhead_ms=facts.overhead_ms(),
        stream=call.stream,
        cached=cached,
        request_body=(
            orjson.dumps(request_body).decode()
            if log_bodies and request_body is not None
            else None
        ),
        response_body=(
            orjson.dumps(response_body).decode()
            if log_bodies and response_body is not None
            else None
        ),
        detail=detail,
    )


def guard_detail(guards: RequestGuards | None, blocked: GatewayError | None) -> str | None:
    """The call's ``detail`` JSON: what the guards found (types and rule ids, never
    values), or which guard refused the call; None when they found nothing."""
    found: dict[str, Any] | None = None
    if blocked is not None:
        found = {"blocked": blocked.code}
        if isinstance(blocked, PiiBlocked):
            found["pii_entities"] = list(blocked.entities)
        elif isinstance(blocked, InjectionBlocked):
            found["injection_score"] = blocked.score
            found["injection_rules"] = list(blocked.rules)
    elif guards is not None and guards.found:
        found = guards.audit()
    if found is None:
        return None
    return orjson.dumps({"guards": found}).decode()
