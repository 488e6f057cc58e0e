"""Trigger-free CDC on PostgreSQL: logical decoding with wal2json (``--source wal2json``).

Needs the server's ``wal_level = logical`` (a restart), a free replication slot and the
Debian package ``postgresql-15-wal2json`` (on builds that restrict output plugins, also
``output_plugin_libraries = wal2json``). ``install`` creates the logical slot
``lockgate_<name>``, sets ``REPLICA IDENTITY FULL`` on the table (old values in every
UPDATE and DELETE: an update that changes no watched column is skipped -- which is also why
a write-back never re-triggers: it changes only its own, unwatched column -- and a delete
carries the deleted row's watched columns) and adds ``lockgate_cdc.wal_applied``.
``uninstall`` drops the slot, resets the replica identity and removes the capture's rows.

``--where`` has the trigger path's semantics (the new row for INSERT/UPDATE, the old row
for DELETE) and is evaluated in the source database, never by splicing row data into SQL:
a batch of decoded rows goes in as ONE jsonb parameter, typed by the table's own row type
(``jsonb_populate_record(NULL::<table>, ...)``), and the condition -- checked and rewritten
at install like the trigger's -- runs on those typed values.

:class:`Wal2JsonCdc` is a :class:`~lockgate.cdc.database.CdcDatabase`, so the same
:class:`~lockgate.cdc.consumer.CdcConsumer` runs it: ``claim`` peeks the slot
(``pg_logical_slot_peek_changes``, format 2) and hands out the oldest unfinished change of
each row; a transaction's changes all done, the slot is advanced past its commit
(``pg_replication_slot_advance``). Change ids are ``<capture>:<epoch>:<commit LSN * 10^4 +
index>``: stable across re-reads.

Several consumers (lockgate instances) may run one wal2json capture: a slot has one reader,
so they elect a leader with a session advisory lock (``pg_try_advisory_lock``) held on a
dedicated connection. Only the leader reads the slot; the others retry the lock on every
poll and take over when the leader's connection ends (killed process: the server frees the
lock at once). A write-back commits together with its change id in
``lockgate_cdc.wal_applied`` (primary key): the new leader re-reads the slot from the last
advanced transaction and skips every change that row says is applied, and even two
processes that both believed they lead could not apply one change twice. Attempts and
backoff live in the leader's memory (a new leader counts attempts from zero).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import asyncpg
import orjson

from lockgate.cdc.model import CaptureSpec, Change, WriteBack
from lockgate.cdc.postgres import SCHEMA, PostgresCdc, pg_quote
from lockgate.cdc.sqltext import CdcSqlError, check_table, rewrite_where

__all__ = ["Wal2JsonCdc", "lsn_int"]

log = logging.getLogger("lockgate.cdc")

PEEK_LIMIT = 20_000
"""Changes decoded per peek (the slot is advanced as transactions finish)."""
APPLIED = f"{SCHEMA}.wal_applied"
LOCK_SQL = "SELECT pg_try_advisory_lock(hashtext('lockgate_cdc_wal'), hashtext($1))"


def lsn_int(lsn: str) -> int:
    hi, lo = lsn.split("/")
    return (int(hi, 16) << 32) + int(lo, 16)


def slot_name(capture: str) -> str:
    return f"lockgate_{capture}"


def predicate_sql(spec: CaptureSpec, present: list[str]) -> str:
    """The ordinals (1-based) of the rows in ``$1`` (a jsonb array of row objects) for which
    ``spec.where`` holds; NULL counts as false, as in a trigger's ``WHEN``."""
    assert spec.where
    cond = rewrite_where(spec.where, present, lambda c: f"t.{pg_quote(c)}")
    return ("SELECT e.i FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS e(v, i) "
            f"CROSS JOIN LATERAL jsonb_populate_record(NULL::{pg_quote(spec.table)}, e.v) "
            f"AS t WHERE ({cond})")


@dataclass
class _Xact:
    commit_lsn: str
    changes: list[Change] = field(default_factory=list)


class Wal2JsonCdc(PostgresCdc):
    kind = "postgresql-wal2json"

    def __init__(self, dsn: str, *, pool_size: int = 4) -> None:
        super().__init__(dsn, pool_size=pool_size)
        self._lock = asyncio.Lock()
        self._lockconn: asyncpg.Connection | None = None
        """The advisory-lock session (held while this instance leads)."""
        self.leading = False
        self._predicates: dict[str, str] = {}
        self._reset()

    def _reset(self) -> None:
        """Forget everything read from the slot (a new leader starts from the slot)."""
        self._xacts: list[_Xact] = []
        self._seen_upto = -1
        """Highest commit LSN (int) buffered."""
        self._done: set[int] = set()
        self._inflight: set[int] = set()
        self._not_before: dict[int, float] = {}
        self._attempts: dict[int, int] = {}

    async def aclose(self) -> None:
        if self._lockconn is not None:
            with contextlib.suppress(Exception):
                await self._lockconn.close()
            self._lockconn = None
        self.leading = False
        await super().aclose()

    # ------------------------------------------------------------------ install

    async def install(self, spec: CaptureSpec) -> None:
        check_table(spec.table)
        level = await self.pool.fetchval("SHOW wal_level")
        if level != "logical":
            raise CdcSqlError(f"wal2json needs wal_level=logical on the server (it is '{level}';"
                              " ALTER SYSTEM SET wal_level = logical, then restart PostgreSQL)")
        if spec.where:  # compile it now: a bad condition is an install error, not a stall
            try:
                await self.pool.fetch(predicate_sql(spec, await self.table_columns(spec.table)),
                                      "[]")
            except asyncpg.PostgresError as exc:
                raise CdcSqlError(f"--where: {exc}".splitlines()[0]) from None
        slot = slot_name(spec.name)
        async with self.pool.acquire() as conn:
            if await conn.fetchval("SELECT 1 FROM pg_replication_slots WHERE slot_name = $1",
                                   slot):
                raise CdcSqlError(f"replication slot '{slot}' exists already")
            await conn.execute("SELECT pg_create_logical_replication_slot($1, 'wal2json')", slot)
        try:
            await super().install(CaptureSpec(spec.name, spec.table, spec.columns, spec.key,
                                              spec.where, spec.epoch, "wal2json", spec.ops))
        except BaseException:
            await self.pool.execute("SELECT pg_drop_replication_slot(slot_name) FROM "
                                    "pg_replication_slots WHERE slot_name = $1", slot)
            raise

    async def _install_source(self, conn: asyncpg.Connection, spec: CaptureSpec) -> None:
        await conn.execute(f"ALTER TABLE {pg_quote(spec.table)} REPLICA IDENTITY FULL")
        await self._applied_table(conn)

    @staticmethod
    async def _applied_table(conn: Any) -> None:
        await conn.execute(f"CREATE TABLE IF NOT EXISTS {APPLIED} (capture text NOT NULL, "
                           "change_id numeric NOT NULL, applied_at timestamptz NOT NULL "
                           "DEFAULT now(), PRIMARY KEY (capture, change_id))")

    # ------------------------------------------------------------------ leadership

    async def lead(self, spec: CaptureSpec) -> bool:
        """True while this instance holds the capture's advisory lock (tries to take it)."""
        conn = self._lockconn
        if conn is not None and self.leading:
            try:
                await conn.fetchval("SELECT 1")
                return True
            except Exception as exc:  # the session (and with it the lock) is gone
                log.warning("cdc %s: lost the wal2json leadership (%s)", spec.name, exc)
                await self._drop_lockconn()
                return False
        try:
            if conn is None or conn.is_closed():
                conn = self._lockconn = await asyncpg.connect(
                    self.dsn, server_settings={"application_name": f"lockgate-cdc:{os.getpid()}"})
            if not await conn.fetchval(LOCK_SQL, spec.name):
                return False
        except Exception as exc:
            log.warning("cdc %s: could not try the wal2json leadership (%s)", spec.name, exc)
            await self._drop_lockconn()
            return False
        async with self.pool.acquire() as c:  # captures installed before it existed
            await c.execute("SELECT pg_advisory_xact_lock(hashtext('lockgate_cdc_install'))")
            await self._applied_table(c)
            ident = await c.fetchval("SELECT relreplident::text FROM pg_class WHERE oid = "
                                     "to_regclass($1)", pg_quote(spec.table))
        if ident != "f":
            log.warning("cdc %s: %s no longer has REPLICA IDENTITY FULL (it is '%s'): deletes "
                        "carry only the key, updates of unwatched columns are not skipped",
                        spec.name, spec.table, ident)
        self._reset()
        self.leading = True
        log.info("cdc %s: leading the wal2json capture (pid %d)", spec.name, os.getpid())
        return True

    async def _drop_lockconn(self) -> None:
        self.leading = False
        self._reset()
        if self._lockconn is not None:
            with contextlib.suppress(Exception):
                await self._lockconn.close()
        self._lockconn = None

    # ------------------------------------------------------------------ reading the slot

    def _qualified(self, spec: CaptureSpec) -> str:
        return spec.table if "." in spec.table else f"public.{spec.table}"

    async def _refill(self, spec: CaptureSpec) -> None:
        actions = ",".join(o.lower() for o in spec.ops)
        rows = await self.pool.fetch(
            "SELECT lsn::text AS lsn, data FROM pg_logical_slot_peek_changes($1, NULL, $2, "
            "'format-version', '2', 'add-tables', $3, 'actions', $4)",
            slot_name(spec.name), PEEK_LIMIT, self._qualified(spec), actions)
        watched = set(spec.columns)
        current: list[tuple[Change, dict[str, Any]]] = []
        fresh: list[tuple[_Xact, list[tuple[Change, dict[str, Any]]]]] = []
        index = 0
        for r in rows:
            msg = orjson.loads(r["data"])
            action = msg.get("action")
            if action == "B":
                current, index = [], 0
            elif action in ("I", "U", "D"):
                old = {c["name"]: c.get("value") for c in msg.get("identity", [])}
                if action == "D":
                    values = old
                else:
                    # an unchanged TOASTed value is left out of an UPDATE: it is the old one
                    values = {**old, **{c["name"]: c.get("value")
                                        for c in msg.get("columns", [])}}
                    if action == "U" and all(old.get(c) == values.get(c) for c in watched):
                        continue  # no watched column changed (e.g. a write-back)
                key = {k: values.get(k) for k in spec.key}
                data = {c: values.get(c) for c in [*spec.key, *spec.columns]}
                op = {"I": "INSERT", "U": "UPDATE", "D": "DELETE"}[action]
                current.append((Change(spec.name, index, orjson.dumps(
                    [key[k] for k in spec.key]).decode(), op, key, data, 0, spec.epoch),
                    values))
                index += 1
            elif action == "C":
                commit = lsn_int(r["lsn"])
                if commit > self._seen_upto:
                    for c, _ in current:
                        c.outbox_id = commit * 10_000 + c.outbox_id
                    fresh.append((_Xact(r["lsn"], [c for c, _ in current]), current))
                    self._seen_upto = commit
                current = []
        if not fresh:
            return
        if spec.where:
            keep = await self._matching(spec, [pair for _, pairs in fresh for pair in pairs])
            for x, _ in fresh:
                x.changes = [c for c in x.changes if c.outbox_id in keep]
        ids = [c.outbox_id for x, _ in fresh for c in x.changes]
        if ids:
            applied = await self.pool.fetch(
                f"SELECT change_id FROM {APPLIED} WHERE capture = $1 AND change_id = ANY($2)",
                spec.name, [Decimal(i) for i in ids])
            self._done.update(int(r["change_id"]) for r in applied)
        self._xacts.extend(x for x, _ in fresh)

    async def _matching(self, spec: CaptureSpec, pairs: list[tuple[Change, dict[str, Any]]]
                        ) -> set[int]:
        """The ids of the changes whose row satisfies ``--where`` (evaluated in the source
        database on the typed row; a row the condition fails on is logged and skipped)."""
        sql = self._predicates.get(spec.name)
        if sql is None:
            sql = self._predicates[spec.name] = predicate_sql(
                spec, await self.table_columns(spec.table))
        try:
            return await self._hits(sql, pairs)
        except asyncpg.PostgresError:
            pass
        keep: set[int] = set()
        for pair in pairs:  # find the row(s) the condition fails on
            try:
                keep |= await self._hits(sql, [pair])
            except asyncpg.PostgresError as exc:
                log.warning("cdc %s: --where failed on change %s (skipped): %s", spec.name,
                            pair[0].change_id, str(exc).splitlines()[0])
        return keep

    async def _hits(self, sql: str, pairs: list[tuple[Change, dict[str, Any]]]) -> set[int]:
        rows = await self.pool.fetch(sql, orjson.dumps([v for _, v in pairs]).decode())
        return {pairs[int(r["i"]) - 1][0].outbox_id for r in rows}

    async def claim(self, spec: CaptureSpec, n: int, lease: float) -> list[Change]:
        async with self._lock:
            if not await self.lead(spec):
                return []
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
            # the slot will not show these again: their applied marks have done their job
            await self.pool.execute(
                f"DELETE FROM {APPLIED} WHERE capture = $1 AND change_id < $2", spec.name,
                Decimal((lsn_int(upto) + 1) * 10_000))

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
        return None  # claims live in the leader's memory: nobody else can take them

    async def delete(self, change: Change) -> bool:
        """Done without a write-back (deduplicated, published, dead-lettered): marked applied
        so that a new leader does not deliver it again."""
        await self.pool.execute(f"INSERT INTO {APPLIED} (capture, change_id) VALUES ($1, $2) "
                                "ON CONFLICT DO NOTHING", change.capture,
                                Decimal(change.outbox_id))
        self._finish(change)
        return True

    async def complete(self, spec: CaptureSpec, change: Change, wb: WriteBack) -> bool:
        """The write-back and the change's applied mark in one transaction; False (nothing
        written) when the mark exists already (another leader applied it)."""
        async with self.pool.acquire() as conn, conn.transaction():
            first = await conn.fetchval(
                f"INSERT INTO {APPLIED} (capture, change_id) VALUES ($1, $2) ON CONFLICT DO "
                "NOTHING RETURNING 1", spec.name, Decimal(change.outbox_id))
            if first is not None:
                await self._write(conn, spec, change, wb)
        self._finish(change)
        return first is not None

    async def wait(self, spec: CaptureSpec, timeout: float) -> None:
        await asyncio.sleep(timeout)

    async def slot_lag(self, spec: CaptureSpec) -> Any:
        return await self.pool.fetchval(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
            slot_name(spec.name))
