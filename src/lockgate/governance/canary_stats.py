"""Windowed call statistics of canary and stable deployments, shared by every gateway.

Each gateway counts its own calls per deployment and time bucket (calls, errors and
a latency histogram of the successful ones) and adds them to the shared store every
check (:meth:`CanaryStats.add`); :meth:`CanaryStats.window` sums the buckets of the
last window, over every gateway. With Redis (``RedisCanaryStats``) a bucket is one
hash (``cy:s:<deployment>:<bucket>``: ``n``, ``e`` and ``h<i>`` fields, HINCRBY, an
expiry past the window); without it (``MemoryCanaryStats``) it is a dict in this
process.

Rollback marks live beside them (``cy:rb``: deployment -> JSON document). Setting a
mark is first-writer-wins (HSETNX), so when several gateways reach the same verdict
exactly one of them writes the audit row and raises the alert.

Latency histogram: bucket ``i`` holds latencies in ``(R**(i-1), R**i]`` ms with
``R = 1.1``, so a p95 read from it is exact to within 10%.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from lockgate.state.base import StateUnavailable

if TYPE_CHECKING:
    from lockgate.state.redis_state import RedisState

__all__ = [
    "CanaryStats",
    "MemoryCanaryStats",
    "RedisCanaryStats",
    "Tally",
    "latency_bucket",
    "open_canary_stats",
]

_RATIO = 1.1
_LOG_RATIO = math.log(_RATIO)
_MAX_BUCKET = 200  # 1.1**200 ms is about 5.8 hours: everything slower lands here


def latency_bucket(seconds: float) -> int:
    """Histogram bucket of a latency: the smallest ``i`` with ``seconds*1000 <= 1.1**i``."""
    ms = seconds * 1000.0
    if ms <= 1.0:
        return 0
    return min(_MAX_BUCKET, math.ceil(math.log(ms) / _LOG_RATIO - 1e-9))


def bucket_upper_ms(index: int) -> float:
    return float(_RATIO**index)


@dataclass(slots=True)
class Tally:
    """Calls, errors and the latency histogram (successful calls) of one deployment."""

    calls: int = 0
    errors: int = 0
    hist: dict[int, int] = field(default_factory=dict)

    def add_call(self, ok: bool, latency_s: float) -> None:
        self.calls += 1
        if ok:
            i = latency_bucket(latency_s)
            self.hist[i] = self.hist.get(i, 0) + 1
        else:
            self.errors += 1

    def merge(self, other: Tally) -> None:
        self.calls += other.calls
        self.errors += other.errors
        for i, n in other.hist.items():
            self.hist[i] = self.hist.get(i, 0) + n

    @property
    def error_rate(self) -> float:
        return self.errors / self.calls if self.calls else 0.0

    @property
    def latency_samples(self) -> int:
        return sum(self.hist.values())

    def p95_ms(self) -> float | None:
        """The 95th percentile of successful calls' latency (bucket upper bound), or None."""
        total = self.latency_samples
        if not total:
            return None
        rank = math.ceil(0.95 * total)
        seen = 0
        for i in sorted(self.hist):
            seen += self.hist[i]
            if seen >= rank:
                return bucket_upper_ms(i)
        return bucket_upper_ms(max(self.hist))  # pragma: no cover - unreachable

    def as_dict(self) -> dict[str, Any]:
        p95 = self.p95_ms()
        return {"calls": self.calls, "errors": self.errors,
                "error_rate": round(self.error_rate, 4),
                "p95_ms": round(p95, 1) if p95 is not None else None}


class CanaryStats(Protocol):
    """Where the window counts and the rollback marks are shared."""

    name: str

    async def add(self, tallies: Mapping[tuple[str, int], Tally], ttl: float) -> None:
        """Add per (deployment, bucket) tallies; buckets expire ``ttl`` seconds later."""
        ...

    async def window(self, deployments: Sequence[str], buckets: Sequence[int]) -> dict[str, Tally]:
        """The summed tallies of ``deployments`` over ``buckets`` (every gateway's)."""
        ...

    async def mark(self, deployment: str, doc: Mapping[str, Any]) -> bool:
        """Mark ``deployment`` rolled back; True only for the first mark (first writer wins)."""
        ...

    async def marks(self) -> dict[str, dict[str, Any]]:
        """Every rolled-back deployment with its mark document."""
        ...

    async def clear(self, deployment: str, buckets: Iterable[int]) -> bool:
        """Remove the mark and the window counts of ``deployment``; True if it was marked."""
        ...


class MemoryCanaryStats:
    """One process (no ``redis_url``)."""

    name = "memory"

    def __init__(self) -> None:
        self._buckets: dict[tuple[str, int], Tally] = {}
        self._marks: dict[str, dict[str, Any]] = {}

    async def add(self, tallies: Mapping[tuple[str, int], Tally], ttl: float) -> None:
        for key, tally in tallies.items():
            self._buckets.setdefault(key, Tally()).merge(tally)

    async def window(self, deployments: Sequence[str], buckets: Sequence[int]) -> dict[str, Tally]:
        if buckets:  # drop these deployments' buckets older than the window (bounded memory)
            low, deps = min(buckets), set(deployments)
            for key in [k for k in self._buckets if k[0] in deps and k[1] < low - 1]:
                del self._buckets[key]
        out: dict[str, Tally] = {}
        for dep in deployments:
            total = Tally()
            for b in buckets:
                t = self._buckets.get((dep, b))
                if t is not None:
                    total.merge(t)
            out[dep] = total
        return out

    async def mark(self, deployment: str, doc: Mapping[str, Any]) -> bool:
        if deployment in self._marks:
            return False
        self._marks[deployment] = dict(doc)
        return True

    async def marks(self) -> dict[str, dict[str, Any]]:
        return {k: dict(v) for k, v in self._marks.items()}

    async def clear(self, deployment: str, buckets: Iterable[int]) -> bool:
        for b in buckets:
            self._buckets.pop((deployment, b), None)
        return self._marks.pop(deployment, None) is not None


class RedisCanaryStats:
    """Shared by every gateway using the same Redis (and prefix)."""

    name = "redis"

    def __init__(self, state: RedisState) -> None:
        self._redis = state.client
        self._prefix = state.prefix + "cy:"
        self._timeout = max(state.timeout * 4, 0.5)

    def _stats_key(self, deployment: str, bucket: int) -> str:
        return f"{self._prefix}s:{deployment}:{bucket}"

    @property
    def _marks_key(self) -> str:
        return self._prefix + "rb"

    async def _run(self, what: str, fn: Any) -> Any:
        import asyncio

        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        try:
            async with asyncio.timeout(self._timeout):
                return await fn()
        except (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError) as exc:
            raise StateUnavailable(
                f"shared state (Redis) unreachable during canary {what}: {exc}") from exc

    async def add(self, tallies: Mapping[tuple[str, int], Tally], ttl: float) -> None:
        if not tallies:
            return
        ms = max(1, math.ceil(ttl * 1000))

        async def go() -> None:
            pipe = self._redis.pipeline(transaction=False)
            for (dep, bucket), t in tallies.items():
                key = self._stats_key(dep, bucket)
                pipe.hincrby(key, "n", t.calls)
                if t.errors:
                    pipe.hincrby(key, "e", t.errors)
                for i, n in t.hist.items():
                    pipe.hincrby(key, f"h{i}", n)
                pipe.pexpire(key, ms)
            await pipe.execute()

        await self._run("add", go)

    async def window(self, deployments: Sequence[str], buckets: Sequence[int]) -> dict[str, Tally]:
        async def go() -> list[Any]:
            pipe = self._redis.pipeline(transaction=False)
            for dep in deployments:
                for b in buckets:
                    pipe.hgetall(self._stats_key(dep, b))
            return list(await pipe.execute())

        rows = await self._run("window", go)
        out: dict[str, Tally] = {}
        it = iter(rows)
        for dep in deployments:
            total = Tally()
            for _ in buckets:
                total.merge(_tally_of(next(it)))
            out[dep] = total
        return out

    async def mark(self, deployment: str, doc: Mapping[str, Any]) -> bool:
        raw = orjson.dumps(dict(doc))
        return bool(await self._run(
            "mark", lambda: self._redis.hsetnx(self._marks_key, deployment, raw)))

    async def marks(self) -> dict[str, dict[str, Any]]:
        raw = await self._run("marks", lambda: self._redis.hgetall(self._marks_key))
        out: dict[str, dict[str, Any]] = {}
        for k, v in (raw or {}).items():
            name = k.decode() if isinstance(k, bytes) else str(k)
            try:
                doc = orjson.loads(v)
            except orjson.JSONDecodeError:
                doc = {}
            out[name] = doc if isinstance(doc, dict) else {}
        return out

    async def clear(self, deployment: str, buckets: Iterable[int]) -> bool:
        keys = [self._stats_key(deployment, b) for b in buckets]

        async def go() -> Any:
            pipe = self._redis.pipeline(transaction=False)
            pipe.hdel(self._marks_key, deployment)
            if keys:
                pipe.delete(*keys)
            return await pipe.execute()

        result = await self._run("clear", go)
        return bool(result[0])


def _tally_of(fields: Mapping[Any, Any]) -> Tally:
    t = Tally()
    for k, v in (fields or {}).items():
        name = k.decode() if isinstance(k, bytes) else str(k)
        n = int(v)
        if name == "n":
            t.calls = n
        elif name == "e":
            t.errors = n
        elif name.startswith("h"):
            t.hist[int(name[1:])] = n
    return t


def open_canary_stats(state: object) -> CanaryStats:
    """Redis-backed when ``state`` is a :class:`RedisState`, else in this process."""
    if getattr(state, "name", None) == "redis" and hasattr(state, "client"):
        return RedisCanaryStats(state)  # type: ignore[arg-type]
    return MemoryCanaryStats()
