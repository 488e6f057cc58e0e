"""Settle: turn a finished call into its usage/audit record (cost from pricing)."""

from __future__ import annotations

from typing import Protocol

import orjson

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
    response_body: object | None = None,
    cached: bool = False,
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
        request_body=orjson.dumps(call.body).decode() if log_bodies else None,
        response_body=(
            orjson.dumps(response_body).decode()
            if log_bodies and response_body is not None
            else None
        ),
    )
