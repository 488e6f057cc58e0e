"""Authenticate: turn a bearer key into a Principal.

Virtual keys are looked up by hash in the store and cached in memory for
``key_cache_ttl`` seconds. Concurrent misses for one key share a single lookup:
when the cache entry of a busy key expires, its next N requests would otherwise
run N identical queries at once (each on its own pooled connection).

Unknown keys are remembered too (``_unknown``, the same TTL, at most
:data:`UNKNOWN_CACHE_SIZE` digests): a client stuck on a deleted or mistyped key would
otherwise cost one database query per request. Virtual keys are 256 random bits made by the
store, so a key that was unknown cannot become valid later; revocations and ``drop`` clear
this cache with the other. (A spray of distinct random keys still costs a query each: that
needs a per-client limit in front, not a cache.)

Revoking through this process (admin API, or the CLI notifying the running
gateway) invalidates the cache immediately; other
processes see a revocation within ``key_cache_ttl`` (or at once when a shared
state backend broadcasts invalidations: the runtime sets ``on_invalidate`` to
announce every local :meth:`Authenticator.invalidate` to all gateways, whose
listeners call :meth:`Authenticator.drop`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from lockgate.errors import Unauthorized, Unavailable
from lockgate.pipeline.call import Principal

MASTER_KEY_ID = "master"
UNKNOWN_CACHE_SIZE = 10_000
"""Unknown-key digests remembered at most (then forgotten all at once)."""


class KeyRecord(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def team_id(self) -> str: ...
    @property
    def team_name(self) -> str | None: ...
    @property
    def allowed_models(self) -> Sequence[str] | None: ...
    @property
    def revoked_at(self) -> object | None: ...


class KeyLookup(Protocol):
    async def find_key(self, plaintext: str) -> KeyRecord | None: ...


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class Authenticator:
    def __init__(
        self,
        keys: KeyLookup,
        *,
        master_key_hash: str | None,
        cache_ttl: float = 5.0,
    ) -> None:
        self._keys = keys
        self._master_hash = master_key_hash
        self._ttl = cache_ttl
        self._cache: dict[str, tuple[Principal, float]] = {}
        self._unknown: dict[str, float] = {}  # digest -> until (monotonic)
        self._inflight: dict[str, asyncio.Task[Principal]] = {}
        self._generation = 0  # bumped by drop(): a lookup begun before it caches nothing
        self.on_invalidate: Callable[[str | None], None] | None = None
        """Called by :meth:`invalidate` (not :meth:`drop`): tell the other gateways."""

    def known(self, api_key: str | None) -> Principal | None:
        """The principal of a key known without a look-up (the master key, or a key cached
        and fresh), else None: then :meth:`authenticate`, which also gives the errors."""
        if not api_key:
            return None
        digest = sha256_hex(api_key)
        if self._master_hash is not None and hmac.compare_digest(digest, self._master_hash):
            return Principal(key_id=MASTER_KEY_ID, team_id=None, is_master=True)
        hit = self._cache.get(digest)
        if hit is not None and hit[1] > time.monotonic():
            return hit[0]
        return None

    async def authenticate(self, api_key: str | None) -> Principal:
        if not api_key:
            raise Unauthorized(
                "Missing API key. Send 'Authorization: Bearer <key>'.", code="missing_api_key"
            )
        known = self.known(api_key)
        if known is not None:
            return known
        digest = sha256_hex(api_key)
        unknown_until = self._unknown.get(digest)
        if unknown_until is not None:
            if unknown_until > time.monotonic():
                raise Unauthorized("Invalid API key.")
            del self._unknown[digest]
        task = self._inflight.get(digest)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._lookup(api_key, digest))
            self._inflight[digest] = task
            task.add_done_callback(lambda t: self._lookup_done(digest, t))
        # shield: a caller that goes away does not cancel the lookup the others wait for
        return await asyncio.shield(task)

    def _lookup_done(self, digest: str, task: asyncio.Task[Principal]) -> None:
        if self._inflight.get(digest) is task:
            del self._inflight[digest]
        if not task.cancelled():
            task.exception()  # retrieved here too, in case every caller went away

    async def _lookup(self, api_key: str, digest: str) -> Principal:
        generation = self._generation
        try:
            record = await self._keys.find_key(api_key)
        except Exception as exc:  # the store is down: fail closed, loudly
            if getattr(exc, "http_status", None) == 503 or isinstance(exc, OSError):
                raise Unavailable(
                    "Key lookup failed: the database is unreachable.", code="database_unavailable"
                ) from None
            raise
        if record is None:
            if generation == self._generation and self._ttl > 0:
                if len(self._unknown) >= UNKNOWN_CACHE_SIZE:
                    self._unknown.clear()
                self._unknown[digest] = time.monotonic() + self._ttl
            raise Unauthorized("Invalid API key.")
        if record.revoked_at is not None:
            self._cache.pop(digest, None)
            raise Unauthorized("This API key has been revoked.", code="revoked_api_key")
        principal = Principal(
            key_id=record.id,
            team_id=record.team_id,
            team_name=record.team_name,
            allowed_models=frozenset(record.allowed_models)
            if record.allowed_models is not None
            else None,
            key_name=getattr(record, "name", None) or None,
        )
        if generation == self._generation:
            if len(self._cache) > 100_000:
                self._cache.clear()
            self._cache[digest] = (principal, time.monotonic() + self._ttl)
        return principal

    def invalidate(self, key_id: str | None = None) -> None:
        """Forget cached keys (one key id, or all) here and, through ``on_invalidate``,
        on every other gateway."""
        self.drop(key_id)
        if self.on_invalidate is not None:
            self.on_invalidate(key_id)

    def drop(self, key_id: str | None = None) -> None:
        """Forget cached keys in this process only (one key id, or all)."""
        self._generation += 1
        self._inflight.clear()  # later callers look up afresh
        self._unknown.clear()
        if key_id is None:
            self._cache.clear()
            return
        for digest, (principal, _) in list(self._cache.items()):
            if principal.key_id == key_id:
                del self._cache[digest]
