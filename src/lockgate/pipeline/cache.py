"""Cache stage: exact-match answers for identical requests, never across teams.

The key is a SHA-256 of the tenant (team id, else key id), the call kind, the
public model and the request body as sent upstream (after input guards, so a
``redact_restore`` body is cached with its placeholders and restored per
request), serialised with sorted keys, without the fields that do not change
the answer (``user``, ``stream``, ``stream_options``, ``metadata``).

Streams use it too: a cached answer is replayed to a stream request as chunks
(the pipeline's ``_replay``), and a stream that completes stores the answer assembled
from its chunks (an interrupted, failed or abandoned stream stores nothing), so a
stream and a non-stream call of the same request share one entry. Every hit is
checked against the request's output contract first; an invalid one is a miss (the key
ignores ``metadata``, so another contract may have filled it). A request header
``cache-control: no-cache`` (or ``no-store``) bypasses it too. The cache lives in the
state backend (Redis, or process memory) and fails open: an unreachable backend is a
miss and a skipped write, never an error.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from lockgate.pipeline.call import Call
from lockgate.state.base import StateBackend, StateUnavailable

__all__ = ["ResponseCache", "cache_key", "wants_no_cache"]

_IGNORED = frozenset({"user", "stream", "stream_options", "metadata"})


def wants_no_cache(header: str | None) -> bool:
    """True for a ``cache-control`` request header asking to skip the cache."""
    if not header:
        return False
    h = header.lower()
    return "no-cache" in h or "no-store" in h


def cache_key(call: Call, body: dict[str, Any]) -> str:
    p = call.principal
    tenant = (p.team_id or "key:" + p.key_id) if p is not None else "anon"
    clean = {k: v for k, v in body.items() if k not in _IGNORED}
    digest = hashlib.sha256(
        orjson.dumps([tenant, call.kind, call.model, clean], option=orjson.OPT_SORT_KEYS)
    ).hexdigest()
    return "rc:" + digest


class ResponseCache:
    def __init__(self, state: StateBackend, ttl_seconds: float) -> None:
        self.state = state
        self.ttl = ttl_seconds
        self.hits = 0
        self.misses = 0
        self.errors = 0

    async def get(self, key: str) -> dict[str, Any] | None:
        try:
            raw = await self.state.cache_get(key)
        except StateUnavailable:
            self.errors += 1
            raw = None
        if raw is None:
            self.misses += 1
            return None
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self.misses += 1
            return None
        if not isinstance(value, dict):
            self.misses += 1
            return None
        self.hits += 1
        return value

    async def put(self, key: str, body: dict[str, Any]) -> None:
        try:
            await self.state.cache_set(key, orjson.dumps(body), self.ttl)
        except StateUnavailable:
            self.errors += 1

    def stats(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "errors": self.errors}
