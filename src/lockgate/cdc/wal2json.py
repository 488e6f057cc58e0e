"""Trigger-free CDC on PostgreSQL: logical decoding with wal2json (``--source wal2json``).

Needs the server's ``wal_level = logical`` (a restart), a free replication slot and the
Debian package ``postgresql-15-wal2json`` (on builds that restrict output plugins, also
``output_plugin_libraries = wal2json``). ``install`` creates the logical slot
``lockgate_<name>`` and sets ``REPLICA IDENTITY FULL`` on the table (old values in every
UPDATE, so an update that changes no watched column is skipped -- which is also why a
write-back never re-triggers: it changes only its own, unwatched column). ``uninstall``
drops the slot and resets the replica identity. ``--where`` is not supported here.

:class:`Wal2JsonCdc` is a :class:`~lockgate.cdc.database.CdcDatabase`, so the same
:class:`~lockgate.cdc.consumer.CdcConsumer` runs it: ``claim`` peeks the slot
(``pg_logical_slot_peek_changes``, format 2) and hands out the oldest unfinished change of
each row; a transaction's changes all done, the slot is advanced past its commit
(``pg_replication_slot_advance``). Change ids are ``<capture>:<epoch>:<commit LSN * 10^4 +
index>``: stable across re-reads, so the dedup record (``cdc_applied``) drops changes
already applied before a crash, and a side-table write is keyed by them. Attempts and
backoff live in the consumer's memory (a restart counts attempts from zero).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson

from lockgate.cdc.model import CaptureSpec, Change, WriteBack
from lockgate.cdc.postgres import PostgresCdc, pg_quote
from lockgate.cdc.sqltext import CdcSqlError, check_table

__all__ = ["Wal2JsonCdc", "lsn_int"]

PEEK_LIMIT = 20_000
"""Changes decoded per peek (the slot is advanced as transactions finish)."""


def lsn_int(lsn: str) -> int:
    hi, lo = lsn.split("/")
    return (int(hi, 16) << 32) + int(lo, 16)


def slot_name(capture: str) -> str:
    return f"lockgate_{capture}"


@dataclass
class _Xact:
    commit_lsn: str
    changes: list[Change] = field(default_factory=list)


class Wal2JsonCdc(PostgresCdc):
    kind = "postgresql-wal2json"

    def __init__(self, dsn: str, *, pool_size: int = 4) -> None:
        super().__init__(dsn, pool_size=pool_size)
        self._xacts: list[_Xact] = []
        self._seen_upto = -1
        """Highest commit LSN (int) buffered."""
        self._done: set[int] = set()
        self._inflight: set[int] = set()
        self._not_before: dict[int, float] = {}
        self._attempts: dict[int, int] = {}
        self._lock = asyncio.Lock()

    # ------------------------------------------------------------------ install

    async def install(self, spec: CaptureSpec) -> None:
        check_table(spec.table)
        if spec.where:
            raise CdcSqlError("--where is not supported with --source wal2json (use triggers)")
        level = await self.pool.fetchval("SHOW wal_level")
        if level != "logical":
            raise CdcSqlError(f"wal2json needs wal_level=logical on the server (it is '{level}';"
                              " ALTER SYSTEM SET wal_level = logical, then restart PostgreSQL)")
        slot = slot_name(spec.name)
        async with self.pool.acquire() as conn:
            if await conn.fetchval("SELECT 1 FROM pg_replication_slots WHERE slot_name = $1",
                                   slot):
                raise CdcSqlError(f"replication slot '{slot}' exists already")
            await conn.execute("SELECT pg_create_logical_replication_slot($1, 'wal2json')", slot)
        try:
            await super().install(CaptureSpec(spec.name, spec.table, spec.columns, spec.key,
                                              None, spec.epoch, "wal2json"))
        except BaseException:
            await self.pool.execute("SELECT pg_drop_replication_slot(slot_name) FROM "
                                    "pg_replication_slots WHERE slot_name = $1", slot)
            raise

    async def _install_source(self, conn: asyncpg.Connection, spec: CaptureSpec) -> None:
        await conn.execute(f"ALTER TABLE {pg_quote(spec.table)} REPLICA IDENTITY FULL")

    # ------------------------------------------------------------------ reading the slot

    def _qualified(self, spec: CaptureSpec) -> str:
        return spec.table if "." in spec.table else f"public.{spec.table}"

    async def _refill(self, spec: CaptureSpec) -> None:
        rows = await self.pool.fetch(
            "SELECT lsn::text AS lsn, data FROM pg_logical_slot_peek_changes($1, NULL, $2, "
            "'format-version', '2', 'add-tables', $3, 'actions', 'insert,update')",
            slot_name(spec.name), PEEK_LIMIT, self._qualified(spec))
        watched = set(spec.columns)
        current: list[Change] = []
        index = 0
        for r in rows:
            msg = orjson.loads(r["data"])
            action = msg.get("action")
            if action == "B":
                current, index = [], 0
            elif action in ("I", "U"):
                new = {c["name"]: c.get("value") for c in msg.get("columns", [])}
                if action == "U":
                    old = {c["name"]: c.get("value") for c in msg.get("identity", [])}
                    if all(old.get(c) == new.get(c) for c in watched):
                        continue  # no watched column changed (e.g. a write-back)
                key = {k: new.get(k) for k in spec.key}
                data = {c: new.get(c) for c in [*spec.key, *spec.columns]}
                current.append(Change(spec.name, index, orjson.dumps(
                    [key[k] for k in spec.key]).decode(), "INSERT" if action == "I" else "UPDATE",
                    key, data, 0, spec.epoch))
                index += 1
            elif action == "C":
                commit = lsn_int(r["lsn"])
                if commit > self._seen_upto:
                    for c in current:
                        c.outbox_id = commit * 10_000 + c.outbox_id
                    self._xacts.append(_Xact(r["lsn"], current))
                    self._seen_upto = commit
                current = []

    async def claim(self, spec: CaptureSpec, n: int, lease: float) -> list[Change]:
        async with self._lock:
            await self._advance(spec)
            if not any(c.outbox_id not in self._done for x in self._xacts for c in x.changes):
                await self._refill(spec)
                await self._advance(spec)  # transactions with no change of interest
            now = time.monotonic()
            busy_rows: set[str] = set()
            out: list[Change] = []
            for x in self._xacts:
                for c in x.changes:
                    cid = c.outbox_id
                    if cid in self._done:
                        continue
                    if c.row_key in busy_rows:
                        continue
                    busy_rows.add(c.row_key)  # later changes of this row wait
                    if cid in self._inflight or self._not_before.get(cid, 0) > now:
                        continue
                    if len(out) < n:
                        self._inflight.add(cid)
                        self._attempts[cid] = self._attempts.get(cid, 0) + 1
                        c.attempts = self._attempts[cid]
                        out.append(c)
            return out

    async def _advance(self, spec: CaptureSpec) -> None:
        """Move the slot past every leading transaction whose changes are all done."""
        upto: str | None = None
        while self._xacts and all(c.outbox_id in self._done for c in self._xacts[0].changes):
            x = self._xacts.pop(0)
            upto = x.commit_lsn
            for c in x.changes:
                self._done.discard(c.outbox_id)
                self._attempts.pop(c.outbox_id, None)
                self._not_before.pop(c.outbox_id, None)
        if upto is not None:
            await self.pool.execute("SELECT pg_replication_slot_advance($1, $2::text::pg_lsn)",
                                    slot_name(spec.name), upto)

    def _finish(self, change: Change) -> None:
        self._inflight.discard(change.outbox_id)
        self._done.add(change.outbox_id)

    # ------------------------------------------------------------------ consumer protocol

    async def depth(self, spec: CaptureSpec) -> int:
        return sum(c.outbox_id not in self._done for x in self._xacts for c in x.changes)

    async def retry_later(self, change: Change, delay: float, error: str) -> None:
        self._inflight.discard(change.outbox_id)
        self._not_before[change.outbox_id] = time.monotonic() + delay

    async def extend(self, change: Change, lease: float) -> None:
        return None  # claims live in this process: nobody else can take them

    async def delete(self, change: Change) -> bool:
        self._finish(change)
        return True

    async def complete(self, spec: CaptureSpec, change: Change, wb: WriteBack) -> bool:
        async with self.pool.acquire() as conn, conn.transaction():
            if wb.kind == "column":
                await self._write_column(conn, spec, change, wb)
            else:
                await self._write_side(conn, spec, change, wb)
        self._finish(change)
        return True

    async def wait(self, spec: CaptureSpec, timeout: float) -> None:
        await asyncio.sleep(timeout)

    async def slot_lag(self, spec: CaptureSpec) -> Any:
        return await self.pool.fetchval(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
            slot_name(spec.name))
