"""What flows through the pipeline: the caller, the call, and its record."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

CallKind = Literal["chat", "embeddings"]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: an authenticated virtual key (or the master key)."""

    key_id: str
    team_id: str | None
    team_name: str | None = None
    allowed_models: frozenset[str] | None = None
    """None means every model; otherwise the public model names this key may use."""
    is_master: bool = False
    key_name: str | None = None

    def may_use(self, model: str) -> bool:
        return self.allowed_models is None or model in self.allowed_models


def new_request_id() -> str:
    return "req_" + uuid.uuid4().hex


@dataclass(slots=True)
class Call:
    """One model call on its way through the pipeline.

    Adapters build it from a request; features (RAG, jobs, agents) build it
    themselves with ``source`` set and ``principal`` already known.
    """

    kind: CallKind
    model: str
    body: dict[str, Any]
    principal: Principal | None = None
    api_key: str | None = None
    stream: bool = False
    request_id: str = field(default_factory=new_request_id)
    source: str = "http"
    task: str | None = None
    no_cache: bool = False
    """The caller opted out of the response cache (``cache-control: no-cache``)."""
    end_user: str | None = None
    deployment_pin: str | None = None
    """Route to exactly this deployment id (any public model's), set only by trusted
    in-process callers (shadow traffic), never from a request. A pinned call gets a
    one-target plan: no weighted choice, no fallback (retries, timeouts and the
    circuit breaker of that deployment still apply); the policy stage (task routing,
    kill switch) is not applied, and the call is never mirrored."""
    governed: bool = True
    """False: skip the limits + budget stage (no reservation, no settle, no rate-limit
    headers). For calls that are the operator's, not the caller's (shadow traffic);
    authentication, guards, breaker, metrics and the audit row still apply."""
    started: float = field(default_factory=time.perf_counter)
    started_at: float = field(default_factory=time.time)
    # filled in on the way
    deployment: str | None = None
    upstream_seconds: float = 0.0
    response_headers: dict[str, str] = field(default_factory=dict)
    """Headers the adapter adds to the answer (x-ratelimit-*, x-lockgate-cache, guards)."""
    requested_model: str | None = None
    """The model the client asked for, when task routing or a kill switch changed ``model``."""

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def overhead_ms(self) -> float:
        """Time spent in lockgate so far, excluding waiting on the upstream."""
        return max(0.0, (self.elapsed() - self.upstream_seconds) * 1000.0)


@dataclass(slots=True)
class UsageRecord:
    """One audit/usage row. Written in batches by the store's writer."""

    request_id: str
    created_at: float
    key_id: str | None
    team_id: str | None
    model: str
    deployment: str | None
    kind: str
    source: str
    status: int
    error_class: str | None
    prompt_tokens: int
    completion_tokens: int
    cost: float
    latency_ms: float
    overhead_ms: float
    stream: bool
    cached: bool = False
    request_body: str | None = None
    response_body: str | None = None
