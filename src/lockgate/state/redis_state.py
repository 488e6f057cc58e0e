"""Redis state backend: counters, cache and signals shared by many gateways.

Every multi-step operation is one Lua script (:mod:`lockgate.state.lua`) sent
with EVALSHA; a script the server does not know (``NOSCRIPT`` after a restart
or ``SCRIPT FLUSH``) is loaded with SCRIPT LOAD and the call repeated once.
Nothing touches the network at construction: the first operation connects.

The request path's commands (scripts, cache, versions, publish) share one multiplexed,
auto-pipelined connection (:class:`lockgate.state.resp.RespConnection`: the commands made in
one event-loop turn go out in one write); subscriptions and :attr:`RedisState.client` use
redis-py.

Calls have a short operation timeout (``timeout``; plus ``connect_timeout`` while connecting)
and no client-side retries, so a dead or blackholed Redis fails a request in about
``timeout`` seconds with :class:`~lockgate.state.base.StateUnavailable` instead of hanging it
(a timeout also drops the connection, so the calls behind it do not wait on a dead socket).
Cache operations swallow that error (a dead cache is a miss) and count it in
:attr:`RedisState.cache_errors`.

Redis Cluster: multi-key scripts need all keys in one slot. Give a prefix with
a hash tag (``prefix="lg:{gov}:"``) to keep every governance key on one shard.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import Any, TypeVar

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from lockgate.state import lua
from lockgate.state.base import (
    HALF_OPEN_RETRY,
    AdmitResult,
    BreakerParams,
    BreakerStateName,
    BreakerView,
    BudgetLine,
    BudgetSettle,
    BudgetUsage,
    RateAdjust,
    RateCounter,
    RateState,
    StateUnavailable,
)
from lockgate.state.resp import NoScript, RespConnection

__all__ = ["RedisState"]

T = TypeVar("T")

_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError)


class _Script:
    """One Lua script: EVALSHA, and SCRIPT LOAD + retry on NOSCRIPT.

    Arguments are joined into the single ``ARGV[1]`` string the scripts split
    (:mod:`lockgate.state.lua`)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()
        self.loads = 0

    async def __call__(self, conn: RespConnection, keys: Sequence[str],
                       args: Sequence[Any]) -> Any:
        joined = ",".join(map(str, args))
        try:
            return await conn.call("EVALSHA", self.sha, len(keys), *keys, joined)
        except NoScript:
            self.loads += 1
            await conn.call("SCRIPT", "LOAD", self.source)
            return await conn.call("EVALSHA", self.sha, len(keys), *keys, joined)


def _f(x: float) -> str:
    return repr(float(x))


class _RedisSubscription:
    def __init__(self, owner: RedisState, pubsub: PubSub, channel: str) -> None:
        self._owner = owner
        self._pubsub = pubsub
        self._channel = channel
        self._closed = False

    def __aiter__(self) -> AsyncIterator[str]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[str]:
        while not self._closed:
            try:
                msg = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
            except _UNREACHABLE as exc:
                if self._closed:
                    return
                raise StateUnavailable(f"subscription to {self._channel} lost: {exc}") from exc
            if msg is None or msg.get("type") != "message":
                continue
            data = msg["data"]
            yield data.decode() if isinstance(data, bytes) else str(data)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(*_UNREACHABLE):
            await self._pubsub.aclose()  # type: ignore[no-untyped-call]


class RedisState:
    """State shared through one Redis server (atomic Lua scripts, short timeouts)."""

    name = "redis"
    in_process = False

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        prefix: str = "lg:",
        *,
        timeout: float = 0.25,
        connect_timeout: float | None = None,
        max_connections: int = 64,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.timeout = timeout
        # A blocking pool: past max_connections a call waits (bounded by the op timeout)
        # for a free connection instead of failing at once.
        pool = BlockingConnectionPool.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=connect_timeout if connect_timeout is not None else timeout,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
            max_connections=max_connections,
            timeout=timeout * 2,
        )
        self._redis = Redis.from_pool(pool)
        """redis-py: pub/sub and the callers of :attr:`client`; the request path's commands
        go through ``_conn``."""
        self._connect_timeout = connect_timeout if connect_timeout is not None else timeout
        self._conn = RespConnection(url, connect_timeout=self._connect_timeout)
        self._admit = _Script(lua.ADMIT)
        self._settle = _Script(lua.SETTLE)
        self._usage = _Script(lua.USAGE)
        self._breaker = _Script(lua.BREAKER)
        self.cache_errors = 0
        """Cache operations that failed open (Redis unreachable)."""

    @property
    def client(self) -> Redis:
        return self._redis

    async def _guard(self, what: str, op: Awaitable[T]) -> T:
        """``op`` (a command: over ``_conn``, or a redis-py subscription) within twice the op
        timeout (counted from the call, so a busy event loop's own delay is in it; plus the
        connect timeout while not connected); unreachable, timed out or refused ->
        StateUnavailable. A timeout drops ``_conn``: a stalled server must not hold the next
        calls."""
        conn = self._conn
        limit = self.timeout * 2 + 0.05
        if not conn.connected:
            limit += self._connect_timeout
        try:
            async with asyncio.timeout(limit):
                return await op
        except TimeoutError as exc:
            conn.reset()
            raise StateUnavailable(
                f"shared state (Redis) unreachable during {what}: no answer in {limit:g} s"
            ) from exc
        except _UNREACHABLE as exc:
            raise StateUnavailable(
                f"shared state (Redis) unreachable during {what}: {type(exc).__name__}: {exc}"
            ) from exc

    def _k(self, key: str) -> str:
        return self.prefix + key

    # -- limits and budgets ------------------------------------------------

    async def admit(
        self,
        rates: Sequence[RateCounter],
        budgets: Sequence[BudgetLine],
        *,
        now: float,
        reservation_id: str,
        reservation_expires: float,
        version_key: str | None = None,
    ) -> AdmitResult:
        keys = [self._k(c.key) for c in rates]
        for line in budgets:
            keys += [self._k(line.key), self._k(line.key) + ":x"]
        if version_key is not None:
            keys.append(self._k("v:" + version_key))
        args: list[Any] = [
            _f(now), len(rates), len(budgets), reservation_id, _f(reservation_expires),
            "1" if version_key is not None else "0",
        ]
        for c in rates:
            args += [c.limit, _f(c.period), c.cost]
        for line in budgets:
            args += [line.limit, line.amount, math.ceil(line.expire_at)]
        reply = await self._guard("admit", self._admit(self._conn, keys, args))
        raw = reply.split(b",")
        allowed, denied, index, ver = (int(x) for x in raw[:4])
        pos = 4
        states: list[RateState] = []
        for _ in rates:
            states.append(RateState(int(raw[pos]), float(raw[pos + 1]), float(raw[pos + 2])))
            pos += 3
        usage: list[BudgetUsage] = []
        for _ in budgets:
            usage.append(BudgetUsage(int(raw[pos]), int(raw[pos + 1])))
            pos += 2
        return AdmitResult(
            allowed=bool(allowed),
            denied=None if denied == 0 else ("rate" if denied == 1 else "budget"),
            index=index,
            rates=tuple(states),
            budgets=tuple(usage),
            version=ver if version_key is not None else None,
        )

    async def settle(
        self,
        reservation_id: str,
        budgets: Sequence[BudgetSettle],
        rates: Sequence[RateAdjust] = (),
        *,
        now: float,
    ) -> None:
        if not budgets and not rates:
            return
        keys: list[str] = []
        for s in budgets:
            keys += [self._k(s.key), self._k(s.key) + ":x"]
        keys += [self._k(a.key) for a in rates]
        args: list[Any] = [_f(now), reservation_id, len(budgets), len(rates)]
        for s in budgets:
            args += ["" if s.actual is None else s.actual, math.ceil(s.expire_at)]
        for a in rates:
            args += [a.limit, _f(a.period), a.delta]
        await self._guard("settle", self._settle(self._conn, keys, args))

    async def budget_usage(self, key: str, *, now: float) -> BudgetUsage:
        keys = [self._k(key), self._k(key) + ":x"]
        reply = await self._guard(
            "budget_usage", self._usage(self._conn, keys, [_f(now)])
        )
        spent, reserved = reply.split(b",")
        return BudgetUsage(int(spent), int(reserved))

    # -- circuit breaker ---------------------------------------------------

    async def _breaker_op(
        self, op: str, deployment: str, p: BreakerParams, now: float, extra: Sequence[Any]
    ) -> BreakerView:
        keys = [self._k("br:" + deployment), self._k("br:" + deployment) + ":p"]
        args: list[Any] = [
            op, _f(now), _f(p.window), p.buckets, p.min_requests, _f(p.failure_rate),
            _f(p.open_seconds), p.half_open_probes, p.half_open_successes, _f(p.probe_ttl),
            _f(HALF_OPEN_RETRY), *extra,
        ]
        reply = await self._guard(
            "breaker " + op, self._breaker(self._conn, keys, args)
        )
        raw = reply.split(b",")
        name = raw[0].decode()
        state: BreakerStateName = (
            "open" if name == "open" else "half_open" if name == "half_open" else "closed"
        )
        return BreakerView(
            state=state,
            allowed=bool(int(raw[1])),
            probe=bool(int(raw[2])),
            open_until=float(raw[3]),
            retry_after=float(raw[4]),
            successes=int(raw[5]),
            failures=int(raw[6]),
            probes=int(raw[7]),
        )

    async def breaker_acquire(
        self, deployment: str, params: BreakerParams, *, now: float, probe_id: str
    ) -> BreakerView:
        return await self._breaker_op("acquire", deployment, params, now, [probe_id])

    async def breaker_record(
        self,
        deployment: str,
        params: BreakerParams,
        *,
        ok: bool,
        now: float,
        probe_id: str | None = None,
    ) -> BreakerView:
        extra = ["1" if ok else "0", probe_id or ""]
        return await self._breaker_op("record", deployment, params, now, extra)

    async def breaker_cooldown(
        self, deployment: str, params: BreakerParams, *, seconds: float, now: float
    ) -> BreakerView:
        return await self._breaker_op("cooldown", deployment, params, now, [_f(seconds)])

    async def breaker_view(
        self, deployment: str, params: BreakerParams, *, now: float
    ) -> BreakerView:
        return await self._breaker_op("view", deployment, params, now, [])

    # -- cache (always fails open) -----------------------------------------

    async def cache_get(self, key: str) -> bytes | None:
        try:
            value = await self._guard("cache_get", self._conn.call("GET", self._k("c:" + key)))
        except StateUnavailable:
            self.cache_errors += 1
            return None
        if value is None or isinstance(value, bytes):
            return value
        return str(value).encode()

    async def cache_set(self, key: str, value: bytes, ttl: float) -> None:
        ms = math.ceil(ttl * 1000)
        if ms <= 0:
            return
        try:
            await self._guard(
                "cache_set", self._conn.call("SET", self._k("c:" + key), value, "PX", ms)
            )
        except StateUnavailable:
            self.cache_errors += 1

    async def cache_delete(self, key: str) -> None:
        try:
            await self._guard("cache_delete", self._conn.call("DEL", self._k("c:" + key)))
        except StateUnavailable:
            self.cache_errors += 1

    # -- versions and pub/sub ----------------------------------------------

    async def get_version(self, name: str) -> int:
        raw = await self._guard("get_version", self._conn.call("GET", self._k("v:" + name)))
        return int(raw) if raw is not None else 0

    async def bump_version(self, name: str) -> int:
        return int(
            await self._guard("bump_version", self._conn.call("INCR", self._k("v:" + name)))
        )

    async def publish(self, channel: str, message: str) -> None:
        await self._guard(
            "publish", self._conn.call("PUBLISH", self._k("ch:" + channel), message)
        )

    async def subscribe(self, channel: str) -> _RedisSubscription:
        pubsub = self._redis.pubsub()
        name = self._k("ch:" + channel)
        await self._guard("subscribe", pubsub.subscribe(name))
        return _RedisSubscription(self, pubsub, channel)

    async def close(self) -> None:
        await self._conn.close()
        await self._redis.aclose()
