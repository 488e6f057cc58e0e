"""Event-id de-duplication: "have we already handled this event?".

``RedisDedup`` shares the record between consumer processes and survives
restarts (keys expire after ``ttl``); ``MemoryDedup`` is a bounded in-process
LRU for one consumer. An id is marked only after the enriched event was
published and before the source message is acknowledged, so a redelivery of
a handled event is acknowledged and dropped instead of enriched again.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Protocol

__all__ = ["DedupStore", "MemoryDedup", "RedisDedup"]


class DedupStore(Protocol):
    async def seen(self, event_id: str) -> bool: ...

    async def mark(self, event_id: str) -> None: ...

    async def aclose(self) -> None: ...


class MemoryDedup:
    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    async def seen(self, event_id: str) -> bool:
        if event_id in self._ids:
            self._ids.move_to_end(event_id)
            return True
        return False

    async def mark(self, event_id: str) -> None:
        self._ids[event_id] = None
        self._ids.move_to_end(event_id)
        while len(self._ids) > self.capacity:
            self._ids.popitem(last=False)

    async def aclose(self) -> None:
        return None


class RedisDedup:
    def __init__(self, url: str, *, prefix: str, ttl: float = 7 * 24 * 3600.0) -> None:
        import redis.asyncio as aioredis

        self._r: Any = aioredis.Redis.from_url(url)
        self.prefix = prefix
        self.ttl = int(ttl)

    async def seen(self, event_id: str) -> bool:
        return bool(await self._r.exists(f"{self.prefix}:{event_id}"))

    async def mark(self, event_id: str) -> None:
        await self._r.set(f"{self.prefix}:{event_id}", b"1", ex=self.ttl)

    async def aclose(self) -> None:
        await self._r.aclose()
