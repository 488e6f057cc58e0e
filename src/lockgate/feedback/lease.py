"""A lease in the store (table ``monitor_leases``): one holder at a time across
processes, plus the holder's progress, so a successor resumes where it stopped."""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from lockgate.store.engine import writer_engine
from lockgate.store.tables import monitor_leases

__all__ = ["Lease"]


class Lease:
    def __init__(self, engine: AsyncEngine, name: str, owner: str, seconds: float) -> None:
        self._engine = engine
        self._writer = writer_engine(engine)
        self.name, self.owner, self.seconds = name, owner, seconds

    def _insert(self) -> Any:
        dialect = postgresql if self._engine.dialect.name == "postgresql" else sqlite
        return dialect.insert(monitor_leases)

    async def acquire(self) -> dict[str, Any] | None:
        """Take or renew the lease; its cursor when held, None when another holds it."""
        now = time.time()
        lease = monitor_leases.c
        async with self._writer.begin() as conn:
            await conn.execute(self._insert().values(
                name=self.name, owner=self.owner, expires_at=now + self.seconds, cursor={},
            ).on_conflict_do_nothing(index_elements=["name"]))
            row = (await conn.execute(
                monitor_leases.update()
                .where(lease.name == self.name,
                       sa.or_(lease.owner == self.owner, lease.expires_at < now))
                .values(owner=self.owner, expires_at=now + self.seconds)
                .returning(lease.cursor)
            )).first()
        return dict(row[0] or {}) if row is not None else None

    async def save(self, cursor: dict[str, Any]) -> bool:
        """Store progress and renew; False when the lease was lost meanwhile."""
        lease = monitor_leases.c
        async with self._writer.begin() as conn:
            result = await conn.execute(
                monitor_leases.update()
                .where(lease.name == self.name, lease.owner == self.owner)
                .values(cursor=cursor, expires_at=time.time() + self.seconds)
            )
        return bool(result.rowcount == 1)

    async def release(self) -> None:
        lease = monitor_leases.c
        async with self._writer.begin() as conn:
            await conn.execute(
                monitor_leases.update()
                .where(lease.name == self.name, lease.owner == self.owner)
                .values(expires_at=0.0)
            )
