"""Redis state backend: counters, cache and signals shared by many gateways.

Every multi-step operation is one Lua script (:mod:`lockgate.state.lua`) sent
with EVALSHA; a script the server does not know (``NOSCRIPT`` after a restart
or ``SCRIPT FLUSH``) is loaded with SCRIPT LOAD and the call repeated once.
Nothing touches the network at construction: the first operation connects.

Calls have short socket and operation timeouts and no client-side retries, so
a dead or blackholed Redis fails a request in about ``timeout`` seconds with
:class:`~lockgate.state.base.StateUnavailable` instead of hanging it. Cache
operations swallow that error (a dead cache is a miss) and count it in
:attr:`RedisState.cache_errors`.

Redis Cluster: multi-key scripts need all keys in one slot. Give a prefix with
a hash tag (``prefix="lg:{gov}:"``) to keep every governance key on one shard.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
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

__all__ = ["RedisState"]

T = TypeVar("T")

_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError)


class _Script:
    """One Lua script: EVALSHA, and SCRIPT LOAD + retry on NOSCRIPT."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()
        self.loads = 0

    async def __call__(self, client: Redis, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            self.loads += 1
            await client.script_load(self.source)
            return await client.evalsha(self.sha, len(keys), *keys, *args)


class _Batcher:
    """Auto-pipelining: script calls made in the same event-loop turn go out as one pipeline.

    Under concurrency this turns N request/response round-trips (N socket
    writes and wake-ups on both sides) into one; a lone call goes out alone.
    """

    def __init__(self, client: Redis, max_batch: int = 256) -> None:
        self._client = client
        self._max = max_batch
        self._pending: list[tuple[_Script, Sequence[str], Sequence[Any], asyncio.Future[Any]]] = []
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.batches = 0
        self.batched_calls = 0

    def submit(self, script: _Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Queue one script call; ``args`` are joined into the single ``ARGV[1]`` string."""
        args = [",".join(map(str, args))]
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._pending.append((script, keys, args, fut))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return fut

    def _flush(self) -> None:
        self._scheduled = False
        while self._pending:
            batch, self._pending = self._pending[: self._max], self._pending[self._max :]
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(
        self, batch: list[tuple[_Script, Sequence[str], Sequence[Any], asyncio.Future[Any]]]
    ) -> None:
        if len(batch) == 1:
            script, keys, args, fut = batch[0]
            try:
                result = await script(self._client, keys, args)
            except Exception as exc:
                _settle_future(fut, exc=exc)
            else:
                _settle_future(fut, result=result)
            return
        self.batches += 1
        self.batched_calls += len(batch)
        pipe = self._client.pipeline(transaction=False)
        for script, keys, args, _ in batch:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        try:
            results = await pipe.execute(raise_on_error=False)
        except Exception as exc:
            for *_, fut in batch:
                _settle_future(fut, exc=exc)
            return
        for (script, keys, args, fut), result in zip(batch, results, strict=True):
            if isinstance(result, NoScriptError):
                try:
                    result = await script(self._client, keys, args)
                except Exception as exc:
                    _settle_future(fut, exc=exc)
                    continue
            if isinstance(result, Exception):
                _settle_future(fut, exc=result)
            else:
                _settle_future(fut, result=result)


def _settle_future(
    fut: asyncio.Future[Any], *, result: Any = None, exc: BaseException | None = None
) -> None:
    if fut.done():  # the caller timed out and went away
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)


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
        self._admit = _Script(lua.ADMIT)
        self._settle = _Script(lua.SETTLE)
        self._usage = _Script(lua.USAGE)
        self._breaker = _Script(lua.BREAKER)
        self._batcher = _Batcher(self._redis)
        self.cache_errors = 0
        """Cache operations that failed open (Redis unreachable)."""

    @property
    def client(self) -> Redis:
        return self._redis

    async def _guard(self, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        try:
            async with asyncio.timeout(self.timeout * 2 + 0.05):
                return await fn()
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
        reply = await self._guard("admit", lambda: self._batcher.submit(self._admit, keys, args))
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
        await self._guard("settle", lambda: self._batcher.submit(self._settle, keys, args))

    async def budget_usage(self, key: str, *, now: float) -> BudgetUsage:
        keys = [self._k(key), self._k(key) + ":x"]
        reply = await self._guard(
            "budget_usage", lambda: self._batcher.submit(self._usage, keys, [_f(now)])
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
            "breaker " + op, lambda: self._batcher.submit(self._breaker, keys, args)
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
            value = await self._guard("cache_get", lambda: self._redis.get(self._k("c:" + key)))
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
                "cache_set", lambda: self._redis.set(self._k("c:" + key), value, px=ms)
            )
        except StateUnavailable:
            self.cache_errors += 1

    async def cache_delete(self, key: str) -> None:
        try:
            await self._guard("cache_delete", lambda: self._redis.delete(self._k("c:" + key)))
        except StateUnavailable:
            self.cache_errors += 1

    # -- versions and pub/sub ----------------------------------------------

    async def get_version(self, name: str) -> int:
        raw = await self._guard("get_version", lambda: self._redis.get(self._k("v:" + name)))
        return int(raw) if raw is not None else 0

    async def bump_version(self, name: str) -> int:
        return int(
            await self._guard("bump_version", lambda: self._redis.incr(self._k("v:" + name)))
        )

    async def publish(self, channel: str, message: str) -> None:
        await self._guard(
            "publish", lambda: self._redis.publish(self._k("ch:" + channel), message)
        )

    async def subscribe(self, channel: str) -> _RedisSubscription:
        pubsub = self._redis.pubsub()
        name = self._k("ch:" + channel)
        await self._guard("subscribe", lambda: pubsub.subscribe(name))
        return _RedisSubscription(self, pubsub, channel)

    async def close(self) -> None:
        await self._redis.aclose()
