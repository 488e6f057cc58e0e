"""What flows through the pipeline: the caller, the call, and its record."""

from __future__ import annotations

import operator
import os
import time
from dataclasses import dataclass, field, fields
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
        """``allowed_models`` lists public names; ``family/*`` allows a virtual family
        (e.g. ``rag/*`` for every RAG collection)."""
        allowed = self.allowed_models
        if allowed is None or model in allowed:
            return True
        family, sep, _ = model.partition("/")
        return bool(sep) and f"{family}/*" in allowed


@dataclass(frozen=True, slots=True)
class EndUser:
    """A verified end user a call acts for (e.g. from a signed ``x-lockgate-end-user``).

    Features that apply per-user permissions (RAG ACLs) read it from
    :attr:`Call.acting_for`; nothing the client sends unsigned ever becomes one.
    """

    user_id: str
    groups: tuple[str, ...] = ()
    ts: int = 0
    """When the identity was asserted (unix seconds); 0 when unknown."""


def new_request_id() -> str:
    """``req_`` and 32 hex digits of ``os.urandom`` (as random as ``uuid4().hex``, without
    building a UUID object: a microsecond per request)."""
    return "req_" + os.urandom(16).hex()


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
    """The client's own end-user label (OpenAI ``user``): for logs, never for permissions."""
    acting_for: EndUser | None = None
    """A verified end user the call acts for; permission-aware features (RAG) use it."""
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

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def copy(self) -> Call:
        """A shallow copy (``dataclasses.replace(call)`` without its per-field work)."""
        return Call(*_CALL_FIELDS(self))


_CALL_FIELDS = operator.attrgetter(*(f.name for f in fields(Call)))
"""Every field of :class:`Call` in ``__init__`` order (all are init fields)."""


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
    detail: str | None = None
    """JSON: what the guards found (types and rule ids only, never values)."""
