"""Plain values the store hands out (never ORM objects) and the row shapes it accepts.

``Team`` and ``ApiKey`` are frozen dataclasses. ``UsageRecordLike`` is the read
side of :class:`lockgate.pipeline.call.UsageRecord`, declared here so the store
does not import the pipeline (the pipeline depends on the store, not back).
:func:`usage_row` and :func:`shadow_row` turn a usage record / a shadow result
into the JSON-safe row dicts the :class:`~lockgate.store.AuditWriter` batches.
"""

from __future__ import annotations

import hashlib
import math
import operator
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Protocol

import orjson

__all__ = [
    "ADMIN_KIND",
    "FACADE_CALL_FIELDS",
    "NOT_CALLS",
    "REVIEW_KIND",
    "SHADOW_FIELDS",
    "SHADOW_SOURCE",
    "USAGE_FIELDS",
    "ApiKey",
    "Team",
    "UsageRecordLike",
    "UsageRow",
    "admin_row",
    "facade_call_row",
    "hash_key",
    "shadow_row",
    "usage_row",
]

SHADOW_SOURCE: Final = "shadow"
"""``usage_records.source`` of a shadow (candidate) call: audited, never billed
(usage summaries count it apart, budgets never see it)."""


ADMIN_KIND: Final = "admin"
REVIEW_KIND: Final = "review"
"""``usage_records.kind`` of a review-queue event (lockgate.review): not a model call."""
NOT_CALLS: Final = (ADMIN_KIND, REVIEW_KIND, "canary_rollback", "canary_restore")
"""Audit links that are no model calls: usage summaries leave them out."""
"""``usage_records.kind`` (and ``source``) of an administrator's action (key created,
kill switch set, ...): a link in the audit chain, never usage (summaries skip it).
``model`` holds the action name, ``key_id`` who did it, ``detail`` what changed."""


def hash_key(plaintext: str) -> str:
    """sha256 hex of a key's plaintext: what ``api_keys.key_hash`` holds."""
    return hashlib.sha256(plaintext.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Team:
    id: str
    name: str
    business_unit: str | None
    settings: Mapping[str, Any] = field(hash=False)
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A virtual key. The plaintext is never stored; ``key_prefix`` is for display."""

    id: str
    team_id: str
    team_name: str | None
    name: str
    key_prefix: str
    allowed_models: tuple[str, ...] | None
    """None means every model."""
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


class UsageRecordLike(Protocol):
    """What :meth:`Store.write_usage` and :class:`AuditWriter` read from a record."""

    @property
    def request_id(self) -> str: ...
    @property
    def created_at(self) -> float: ...
    @property
    def key_id(self) -> str | None: ...
    @property
    def team_id(self) -> str | None: ...
    @property
    def model(self) -> str: ...
    @property
    def deployment(self) -> str | None: ...
    @property
    def kind(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def status(self) -> int: ...
    @property
    def error_class(self) -> str | None: ...
    @property
    def prompt_tokens(self) -> int: ...
    @property
    def completion_tokens(self) -> int: ...
    @property
    def cost(self) -> float: ...
    @property
    def latency_ms(self) -> float: ...
    @property
    def overhead_ms(self) -> float: ...
    @property
    def stream(self) -> bool: ...
    @property
    def cached(self) -> bool: ...
    @property
    def request_body(self) -> str | None: ...
    @property
    def response_body(self) -> str | None: ...
    # ``detail`` (JSON text: guard findings / admin change) is read with getattr(..., None)


USAGE_FIELDS: tuple[str, ...] = (
    "request_id",
    "created_at",
    "key_id",
    "team_id",
    "model",
    "deployment",
    "kind",
    "source",
    "status",
    "error_class",
    "prompt_tokens",
    "completion_tokens",
    "cost",
    "latency_ms",
    "overhead_ms",
    "stream",
    "cached",
    "request_body",
    "response_body",
    "detail",
)


_INT64 = 2**63
_INT32 = 2**31
_MAX_EPOCH = 253_402_300_799.0  # 9999-12-31T23:59:59Z


def _opt_str(value: Any) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    if text.isascii():
        # PostgreSQL text cannot hold NUL; dropping it keeps the row writable everywhere.
        return text.replace("\x00", "") if "\x00" in text else text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: not storable, not JSON-encodable
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text.replace("\x00", "") if "\x00" in text else text


def _req_str(value: Any, name: str) -> str:
    text = _opt_str(value)
    if not text:
        raise ValueError(f"usage record field {name} is empty")
    return text


def _int(value: Any, name: str, bound: int = _INT64) -> int:
    number = int(value or 0)
    if not -bound <= number < bound:
        raise ValueError(f"usage record field {name} is out of range: {number}")
    return number


def _finite(value: Any) -> float:
    number = float(value or 0.0)
    return number if math.isfinite(number) else 0.0


def _epoch(value: Any) -> float:
    number = float(value)
    if not 0.0 <= number <= _MAX_EPOCH:
        raise ValueError(f"usage record created_at is out of range: {number}")
    return number


_get_fields = operator.attrgetter(*USAGE_FIELDS[:-1])


def usage_row(record: UsageRecordLike | Mapping[str, Any]) -> dict[str, Any]:
    """A record (object or JSON-decoded dict) as a plain, JSON-safe row dict.

    ``created_at`` stays epoch seconds (float) so the row can be spilled to JSONL
    as is. Raises TypeError/ValueError/AttributeError for a malformed record.
    """
    if isinstance(record, Mapping):
        values = tuple(record.get(name) for name in USAGE_FIELDS)
    else:
        values = (*_get_fields(record), getattr(record, "detail", None))
    (
        request_id,
        created_at,
        key_id,
        team_id,
        model,
        deployment,
        kind,
        source,
        status,
        error_class,
        prompt_tokens,
        completion_tokens,
        cost,
        latency_ms,
        overhead_ms,
        stream,
        cached,
        request_body,
        response_body,
        detail,
    ) = values
    return {
        "request_id": _req_str(request_id, "request_id"),
        "created_at": _epoch(created_at),
        "key_id": _opt_str(key_id),
        "team_id": _opt_str(team_id),
        "model": _req_str(model, "model"),
        "deployment": _opt_str(deployment),
        "kind": _req_str(kind, "kind"),
        "source": _req_str(source, "source"),
        "status": _int(status, "status", _INT32),
        "error_class": _opt_str(error_class),
        "prompt_tokens": _int(prompt_tokens, "prompt_tokens"),
        "completion_tokens": _int(completion_tokens, "completion_tokens"),
        "cost": _finite(cost),
        "latency_ms": _finite(latency_ms),
        "overhead_ms": _finite(overhead_ms),
        "stream": bool(stream),
        "cached": bool(cached),
        "request_body": _opt_str(request_body),
        "response_body": _opt_str(response_body),
        "detail": _opt_str(detail),
    }


def admin_row(
    action: str,
    *,
    actor: str | None,
    target: str | None = None,
    team_id: str | None = None,
    changes: Mapping[str, Any] | None = None,
    request_id: str | None = None,
    at: float | None = None,
) -> dict[str, Any]:
    """An administrator's action as a usage-table row (kind/source :data:`ADMIN_KIND`).

    ``actor`` is who did it (the admin key id, ``cli:<user>``), ``action`` what
    (``key.create``, ``kill_switch.set``, ...), ``target`` the thing acted on and
    ``changes`` what changed (never a secret: no key plaintext). All of it is hashed
    into the audit chain like any call.
    """
    detail = {"action": action, "actor": actor, "target": target,
              "changes": dict(changes or {})}
    return usage_row({
        "request_id": request_id or "adm_" + uuid.uuid4().hex,
        "created_at": time.time() if at is None else at,
        "key_id": actor,
        "team_id": team_id,
        "model": action,
        "deployment": target,
        "kind": ADMIN_KIND,
        "source": ADMIN_KIND,
        "status": 200,
        "error_class": None,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "cost": 0.0,
        "latency_ms": 0.0,
        "overhead_ms": 0.0,
        "stream": False,
        "cached": False,
        "request_body": None,
        "response_body": None,
        "detail": orjson.dumps(detail, default=str).decode(),
    })


SHADOW_FIELDS: tuple[str, ...] = (
    "created_at",
    "request_id",
    "model",
    "primary_deployment",
    "candidate_deployment",
    "primary_text",
    "candidate_text",
    "primary_latency_ms",
    "candidate_latency_ms",
    "primary_cost",
    "candidate_cost",
    "candidate_prompt_tokens",
    "candidate_completion_tokens",
    "candidate_error",
    "text_match",
    "json_match",
)
"""The columns of ``shadow_results`` (besides ``id``)."""


def _when(value: Any) -> float:
    """A datetime (naive = UTC) or epoch seconds as epoch seconds."""
    if isinstance(value, datetime):
        value = (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    return _epoch(value)


def _opt_bool(value: Any) -> bool | None:
    return None if value is None else bool(value)


def shadow_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A ``shadow_results`` row as a plain, JSON-safe dict (``created_at`` epoch seconds).

    Accepts ``created_at`` as a datetime or epoch seconds (a spilled row comes back
    as the latter). Raises TypeError/ValueError/AttributeError for a malformed row.
    """
    get = row.get
    return {
        "created_at": _when(get("created_at")),
        "request_id": _req_str(get("request_id"), "request_id"),
        "model": _req_str(get("model"), "model"),
        "primary_deployment": _opt_str(get("primary_deployment")),
        "candidate_deployment": _req_str(get("candidate_deployment"), "candidate_deployment"),
        "primary_text": _opt_str(get("primary_text")),
        "candidate_text": _opt_str(get("candidate_text")),
        "primary_latency_ms": _finite(get("primary_latency_ms")),
        "candidate_latency_ms": _finite(get("candidate_latency_ms")),
        "primary_cost": _finite(get("primary_cost")),
        "candidate_cost": _finite(get("candidate_cost")),
        "candidate_prompt_tokens": _int(get("candidate_prompt_tokens"),
                                        "candidate_prompt_tokens"),
        "candidate_completion_tokens": _int(get("candidate_completion_tokens"),
                                            "candidate_completion_tokens"),
        "candidate_error": _opt_str(get("candidate_error")),
        "text_match": _opt_bool(get("text_match")),
        "json_match": _opt_bool(get("json_match")),
    }


FACADE_CALL_FIELDS: Final = ("started_at", "finished_at", "method", "path", "status",
                               "case_id", "client", "rules", "upgraded")
"""The order of each call's values in ``facade_calls.calls`` (a JSON array of arrays)."""


def facade_call_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A ``facade_calls`` row (one batch of one facade's calls) as a plain, JSON-safe dict.

    ``calls`` is the JSON text of the batch's calls (arrays in ``FACADE_CALL_FIELDS`` order),
    written once per batch by the facade, not once per call. Raises
    TypeError/ValueError/AttributeError for a malformed row.
    """
    calls = row["calls"]
    if not isinstance(calls, str) or not calls.startswith("["):
        raise ValueError("facade call batch: calls is not a JSON array")
    first, last = _when(row["first_at"]), _when(row["last_at"])
    if last < first:
        raise ValueError("facade call batch: last_at before first_at")
    return {
        "facade": _req_str(row["facade"], "facade"),
        "upstream": _req_str(row["upstream"], "upstream"),
        "first_at": first,
        "last_at": last,
        "n_calls": _int(row["n_calls"], "n_calls", _INT32),
        "calls": calls,
    }


@dataclass(frozen=True, slots=True)
class UsageRow:
    """One stored usage row as read back (``created_at`` as aware UTC datetime)."""

    request_id: str
    created_at: datetime
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
    cached: bool
    request_body: str | None
    response_body: str | None
    detail: str | None = None
    """JSON: guard findings of a call, or what an admin action changed."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: ``created_at`` as ISO 8601 text."""
        out = {name: getattr(self, name) for name in USAGE_FIELDS}
        out["created_at"] = self.created_at.astimezone(UTC).isoformat()
        return out
