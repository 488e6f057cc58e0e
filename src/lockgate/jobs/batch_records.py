"""Batch API storage in the store: files (chunked), batch records (row-locked) and results.

Tables ``batch_files``, ``batch_file_chunks``, ``batches`` and ``batch_results`` (see
:mod:`lockgate.store.tables`, revision 0006) in the configured database, so any gateway or
worker sharing the store serves any file or batch. A batch's status changes only inside
:meth:`BatchRecords.change`: one transaction that locks the row (``SELECT ... FOR UPDATE``
on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite), so a cancel racing a worker's update is
applied before or after it, never lost. Result lines are keyed by ``(batch_id, custom_id)``
and inserted once: they are the checkpoint a re-delivered batch job resumes from.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from lockgate.errors import BadRequest, NotFound
from lockgate.pipeline import Principal
from lockgate.store.engine import writer_engine
from lockgate.store.tables import batch_file_chunks, batch_files, batch_results, batches

__all__ = ["CHUNK", "MAX_FILE_BYTES", "BatchRecords", "ObjectNotFound", "owner_of", "public"]

MAX_FILE_BYTES = 200 * 1024 * 1024
CHUNK = 1024 * 1024
MAX_ID_LEN = 64


class ObjectNotFound(NotFound):
    code = "not_found"


def public(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if not k.startswith("_")}


def owner_of(principal: Principal | None) -> dict[str, Any] | None:
    if principal is None:
        return None
    return {
        "key_id": principal.key_id,
        "team_id": principal.team_id,
        "team_name": principal.team_name,
        "allowed_models": None
        if principal.allowed_models is None
        else sorted(principal.allowed_models),
        "is_master": principal.is_master,
    }


def _visible(table: sa.Table, principal: Principal | None) -> sa.ColumnElement[bool]:
    if principal is None or principal.is_master:
        return sa.true()
    mine = table.c.owner_key_id == principal.key_id
    if principal.team_id is None:
        return mine
    return sa.or_(mine, table.c.owner_team_id == principal.team_id)


def _file_public(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "file",
        "bytes": int(row.bytes),
        "created_at": int(row.created_at),
        "filename": row.filename,
        "purpose": row.purpose,
    }


class BatchRecords:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.writer = writer_engine(engine)

    # ------------------------------------------------------------ files

    async def create_file(
        self, data: bytes, *, filename: str, purpose: str, principal: Principal | None = None
    ) -> dict[str, Any]:
        if len(data) > MAX_FILE_BYTES:
            raise BadRequest(f"file is larger than {MAX_FILE_BYTES} bytes", param="file")
        file_id = "file-" + uuid.uuid4().hex
        owner = owner_of(principal)
        async with self.writer.begin() as conn:
            await conn.execute(
                batch_files.insert().values(
                    id=file_id,
                    filename=filename,
                    purpose=purpose,
                    bytes=len(data),
                    created_at=int(time.time()),
                    owner_key_id=owner["key_id"] if owner else None,
                    owner_team_id=owner["team_id"] if owner else None,
                    owner=orjson.dumps(owner).decode() if owner else None,
                    batch_id=None,
                    kind="upload",
                )
            )
            chunks = [
                {"file_id": file_id, "seq": i, "data": data[off : off + CHUNK]}
                for i, off in enumerate(range(0, len(data), CHUNK))
            ]
            if chunks:
                await conn.execute(batch_file_chunks.insert(), chunks)
        return await self.get_file(file_id)

    async def register_output(
        self,
        conn: AsyncConnection,
        *,
        batch_id: str,
        kind: str,
        size: int,
        owner: dict[str, Any] | None,
    ) -> str:
        """A ``batch_output`` file whose content is the batch's result lines of ``kind``."""
        file_id = "file-" + uuid.uuid4().hex
        await conn.execute(
            batch_files.insert().values(
                id=file_id,
                filename=f"{batch_id}_{kind}.jsonl",
                purpose="batch_output",
                bytes=size,
                created_at=int(time.time()),
                owner_key_id=owner.get("key_id") if owner else None,
                owner_team_id=owner.get("team_id") if owner else None,
                owner=orjson.dumps(owner).decode() if owner else None,
                batch_id=batch_id,
                kind=kind,
            )
        )
        return file_id

    async def _file_row(self, file_id: str, principal: Principal | None) -> Any:
        if not isinstance(file_id, str) or len(file_id) > MAX_ID_LEN:
            raise ObjectNotFound(f"No such File object: {str(file_id)[:80]}", param="file_id")
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(batch_files).where(
                        batch_files.c.id == file_id, _visible(batch_files, principal)
                    )
                )
            ).first()
        if row is None:
            raise ObjectNotFound(f"No such File object: {file_id}", param="file_id")
        return row

    async def get_file(self, file_id: str, principal: Principal | None = None) -> dict[str, Any]:
        return _file_public(await self._file_row(file_id, principal))

    async def content(self, file_id: str, principal: Principal | None = None) -> bytes:
        row = await self._file_row(file_id, principal)
        async with self.engine.connect() as conn:
            if row.kind == "upload":
                parts = (
                    await conn.execute(
                        sa.select(batch_file_chunks.c.data)
                        .where(batch_file_chunks.c.file_id == file_id)
                        .order_by(batch_file_chunks.c.seq)
                    )
                ).scalars()
                return b"".join(bytes(p) for p in parts)
            lines = (
                await conn.execute(
                    sa.select(batch_results.c.line)
                    .where(
                        batch_results.c.batch_id == row.batch_id,
                        batch_results.c.ok == (row.kind == "output"),
                    )
                    .order_by(batch_results.c.line_no)
                )
            ).scalars()
            return b"".join(line.encode() + b"\n" for line in lines)

    async def list_files(
        self, principal: Principal | None = None, purpose: str | None = None
    ) -> list[dict[str, Any]]:
        stmt = sa.select(batch_files).where(_visible(batch_files, principal))
        if purpose is not None:
            stmt = stmt.where(batch_files.c.purpose == purpose)
        stmt = stmt.order_by(batch_files.c.created_at.desc(), batch_files.c.id.desc())
        async with self.engine.connect() as conn:
            return [_file_public(r) for r in (await conn.execute(stmt)).all()]

    async def delete_file(self, file_id: str, principal: Principal | None = None) -> dict[str, Any]:
        await self._file_row(file_id, principal)
        async with self.writer.begin() as conn:
            chunks = batch_file_chunks.delete().where(batch_file_chunks.c.file_id == file_id)
            await conn.execute(chunks)
            await conn.execute(batch_files.delete().where(batch_files.c.id == file_id))
        return {"id": file_id, "object": "file", "deleted": True}

    # ------------------------------------------------------------ batches

    async def insert_batch(self, record: dict[str, Any]) -> None:
        owner = record.get("_owner") or {}
        async with self.writer.begin() as conn:
            await conn.execute(
                batches.insert().values(
                    id=record["id"],
                    status=record["status"],
                    record=orjson.dumps(record).decode(),
                    owner_key_id=owner.get("key_id"),
                    owner_team_id=owner.get("team_id"),
                    created_at=int(record["created_at"]),
                    expires_at=int(record["expires_at"]),
                )
            )

    async def load(self, batch_id: str, principal: Principal | None = None) -> dict[str, Any]:
        if not isinstance(batch_id, str) or len(batch_id) > MAX_ID_LEN:
            raise ObjectNotFound(f"No such Batch object: {str(batch_id)[:80]}", param="batch_id")
        async with self.engine.connect() as conn:
            raw = (
                await conn.execute(
                    sa.select(batches.c.record).where(
                        batches.c.id == batch_id, _visible(batches, principal)
                    )
                )
            ).scalar()
        if raw is None:
            raise ObjectNotFound(f"No such Batch object: {batch_id}", param="batch_id")
        record: dict[str, Any] = orjson.loads(raw)
        return record

    async def list_batches(self, principal: Principal | None = None) -> list[dict[str, Any]]:
        stmt = (
            sa.select(batches.c.record)
            .where(_visible(batches, principal))
            .order_by(batches.c.created_at.desc(), batches.c.id.desc())
        )
        async with self.engine.connect() as conn:
            return [public(orjson.loads(r)) for r in (await conn.execute(stmt)).scalars()]

    @asynccontextmanager
    async def locked(self, batch_id: str) -> AsyncIterator[tuple[AsyncConnection, dict[str, Any]]]:
        """The batch's record with its row locked until the block ends (one transaction)."""
        async with self.writer.begin() as conn:
            raw = (
                await conn.execute(
                    sa.select(batches.c.record).where(batches.c.id == batch_id).with_for_update()
                )
            ).scalar()
            if raw is None:
                raise ObjectNotFound(f"No such Batch object: {batch_id}", param="batch_id")
            yield conn, orjson.loads(raw)

    @staticmethod
    async def save(conn: AsyncConnection, record: dict[str, Any]) -> None:
        await conn.execute(
            batches.update()
            .where(batches.c.id == record["id"])
            .values(
                status=record["status"],
                record=orjson.dumps(record).decode(),
                expires_at=int(record["expires_at"]),
            )
        )

    async def change(
        self, batch_id: str, fn: Callable[[dict[str, Any]], bool | None]
    ) -> dict[str, Any]:
        """Lock the row, let ``fn`` edit the record (return False: nothing to save), save."""
        async with self.locked(batch_id) as (conn, record):
            if fn(record) is not False:
                await self.save(conn, record)
        return record

    # ------------------------------------------------------------ results

    async def done(
        self, batch_id: str, conn: AsyncConnection | None = None
    ) -> dict[str, bool]:
        """custom_id -> ok for every request line already finished."""
        stmt = sa.select(batch_results.c.custom_id, batch_results.c.ok).where(
            batch_results.c.batch_id == batch_id
        )
        if conn is not None:
            return {r.custom_id: bool(r.ok) for r in await conn.execute(stmt)}
        async with self.engine.connect() as own:
            return {r.custom_id: bool(r.ok) for r in await own.execute(stmt)}

    async def add_results(
        self, rows: list[dict[str, Any]], conn: AsyncConnection | None = None
    ) -> None:
        """Insert result lines (``batch_id, custom_id, line_no, ok, line``); a line already
        stored (a concurrent re-delivery) is kept as it is."""
        if not rows:
            return
        dialect = self.engine.dialect.name
        ins: Any = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(batch_results)
        stmt = ins.on_conflict_do_nothing(index_elements=["batch_id", "custom_id"])
        if conn is not None:
            await conn.execute(stmt, rows)
            return
        async with self.writer.begin() as own:
            await own.execute(stmt, rows)

    @staticmethod
    async def result_sizes(conn: AsyncConnection, batch_id: str) -> dict[bool, tuple[int, int]]:
        """ok -> (lines, bytes of the file they make)."""
        rows = await conn.execute(
            sa.select(batch_results.c.ok, batch_results.c.line).where(
                batch_results.c.batch_id == batch_id
            )
        )
        out: dict[bool, tuple[int, int]] = {}
        for r in rows:
            n, size = out.get(bool(r.ok), (0, 0))
            out[bool(r.ok)] = (n + 1, size + len(r.line.encode()) + 1)
        return out
