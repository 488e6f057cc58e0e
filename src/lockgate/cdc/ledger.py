"""lockgate's own CDC bookkeeping, in its store: applied change ids and the dead-letter list.

``applied`` is the dedup record: a change whose id is there is dropped on redelivery (its
effect already happened). ``dead`` is the DLQ: the change, its error and attempts, once per
change id.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from lockgate.cdc.model import Change
from lockgate.store.tables import cdc_applied, cdc_dead

__all__ = ["CdcLedger"]


class CdcLedger:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def applied(self, change: Change) -> bool:
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(cdc_applied.c.change_id).where(
                cdc_applied.c.capture == change.capture,
                cdc_applied.c.change_id == change.change_id))).first()
        return row is not None

    async def mark(self, change: Change) -> None:
        try:
            async with self.engine.begin() as conn:
                await conn.execute(cdc_applied.insert().values(
                    capture=change.capture, change_id=change.change_id,
                    applied_at=datetime.now(UTC)))
        except IntegrityError:
            pass  # marked before (a redelivery that raced us): same fact

    async def dead(self, change: Change, error: str) -> None:
        try:
            async with self.engine.begin() as conn:
                await conn.execute(cdc_dead.insert().values(
                    capture=change.capture, change_id=change.change_id, row_key=change.row_key,
                    op=change.op, payload={"key": change.key, "data": change.data},
                    error=error[:4000], attempts=change.attempts, created_at=datetime.now(UTC)))
        except IntegrityError:
            pass

    async def dead_list(self, capture: str | None = None, limit: int = 100
                        ) -> list[dict[str, Any]]:
        q = sa.select(cdc_dead).order_by(cdc_dead.c.id).limit(limit)
        if capture:
            q = q.where(cdc_dead.c.capture == capture)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(q)).mappings().all()
        return [{**dict(r), "created_at": r["created_at"].isoformat()} for r in rows]

    async def forget_dead(self, ids: list[int]) -> int:
        async with self.engine.begin() as conn:
            res = await conn.execute(cdc_dead.delete().where(cdc_dead.c.id.in_(ids)))
        return int(res.rowcount or 0)
