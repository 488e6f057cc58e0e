"""CDC on PostgreSQL: trigger + outbox + ``NOTIFY`` (asyncpg).

``install`` adds, in the user's database: the schema ``lockgate_cdc`` with the tables
``outbox`` and ``captures``, one trigger function ``lockgate_cdc.capture_<name>()`` and one
trigger ``lockgate_cdc_<name>`` (AFTER INSERT OR UPDATE, ``WHEN (<where on NEW>)``) on the
table, and with ``DELETE`` among the captured operations ``lockgate_cdc_<name>_del`` (AFTER
DELETE, ``WHEN (<where on OLD>)``: a delete carries the deleted row's old values).
``uninstall`` removes the triggers and function (and, with the last capture, the schema).

The trigger skips (1) an UPDATE that changes none of the watched columns and (2) any write
made with ``lockgate.cdc_writeback = on`` (set locally by the consumer's write-back
transaction), so a write-back never re-triggers itself. It ends with
``pg_notify('lockgate_cdc', <name>)``, which wakes the consumer; the consumer also polls.

Claims are leases: ``not_before`` moves ``lease`` seconds ahead and ``attempts`` counts
deliveries. Only the oldest change of each row can be claimed (per-row order, also across
consumers), with ``FOR UPDATE SKIP LOCKED``. A write-back and the deletion of its outbox
row commit in one transaction; when the row is already gone (the lease ran out and another
consumer finished it) nothing is written.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import asyncpg
import orjson

from lockgate.cdc.model import CaptureSpec, Change, WriteBack
from lockgate.cdc.sqltext import CdcSqlError, check_table, rewrite_where

__all__ = ["PostgresCdc", "pg_quote"]

SCHEMA = "lockgate_cdc"
CHANNEL = "lockgate_cdc"
GUC = "lockgate.cdc_writeback"


def pg_quote(name: str) -> str:
    return ".".join(f'"{p}"' for p in name.split("."))


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class PostgresCdc:
    kind = "postgresql"

    def __init__(self, dsn: str, *, pool_size: int = 4) -> None:
        self.dsn = dsn.replace("postgresql+asyncpg://", "postgresql://")
        self.pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._listener: asyncpg.Connection | None = None
        self._wake: dict[str, asyncio.Event] = {}

    async def open(self) -> None:
        self._pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=self.pool_size)

    async def aclose(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()
        if self._pool is not None:
            await self._pool.close()

    @property
    def pool(self) -> asyncpg.Pool:
        assert self._pool is not None, "open() first"
        return self._pool

    # ------------------------------------------------------------------ catalogue

    async def table_columns(self, table: str) -> list[str]:
        rows = await self.pool.fetch(
            "SELECT a.attname FROM pg_attribute a WHERE a.attrelid = to_regclass($1) "
            "AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum", pg_quote(table))
        return [r[0] for r in rows]

    async def primary_key(self, table: str) -> list[str]:
        rows = await self.pool.fetch(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
            "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = to_regclass($1) AND i.indisprimary "
            "ORDER BY array_position(i.indkey, a.attnum)", pg_quote(table))
        return [r[0] for r in rows]

    async def table_exists(self, table: str) -> bool:
        return bool(await self.pool.fetchval("SELECT to_regclass($1) IS NOT NULL",
                                             pg_quote(table)))

    # ------------------------------------------------------------------ install

    async def install(self, spec: CaptureSpec) -> None:
        check_table(spec.table)
        t = pg_quote(spec.table)
        cols = [*spec.key, *(c for c in spec.columns if c not in spec.key)]

        def row(rec: str) -> tuple[str, str, str]:
            """(row key, key object, data object) of ``NEW`` or ``OLD``."""
            return (", ".join(f"{rec}.{pg_quote(c)}" for c in spec.key),
                    ", ".join(f"{_lit(c)}, {rec}.{pg_quote(c)}" for c in spec.key),
                    ", ".join(f"{_lit(c)}, {rec}.{pg_quote(c)}" for c in cols))

        def outbox_insert(rec: str, op: str) -> str:
            row_key, key, data = row(rec)
            return (f"INSERT INTO {SCHEMA}.outbox (capture, row_key, op, key, data) VALUES "
                    f"({_lit(spec.name)}, jsonb_build_array({row_key})::text, {op}, "
                    f"jsonb_build_object({key}), jsonb_build_object({data}));")

        unchanged = " AND ".join(f"NEW.{pg_quote(c)} IS NOT DISTINCT FROM OLD.{pg_quote(c)}"
                                 for c in spec.columns)
        present = await self.table_columns(spec.table)

        def when(rec: str) -> str:
            if not spec.where:
                return ""
            return "WHEN (" + rewrite_where(spec.where, present,
                                            lambda c: f"{rec}.{pg_quote(c)}") + ")"

        fn = f'{SCHEMA}."capture_{spec.name}"'
        upserts = [o for o in spec.ops if o in ("INSERT", "UPDATE")]
        triggers = []
        if upserts:  # WHEN of an INSERT trigger may not name OLD, of a DELETE trigger NEW
            triggers.append(f'CREATE TRIGGER "lockgate_cdc_{spec.name}" AFTER '
                            f'{" OR ".join(upserts)} ON {t} FOR EACH ROW {when("NEW")} '
                            f"EXECUTE FUNCTION {fn}();")
        if "DELETE" in spec.ops:
            triggers.append(f'CREATE TRIGGER "lockgate_cdc_{spec.name}_del" AFTER DELETE ON '
                            f'{t} FOR EACH ROW {when("OLD")} EXECUTE FUNCTION {fn}();')
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('lockgate_cdc_install'))")
            await conn.execute(f"""
                CREATE SCHEMA IF NOT EXISTS {SCHEMA};
                CREATE TABLE IF NOT EXISTS {SCHEMA}.outbox (
                    id bigserial PRIMARY KEY,
                    capture text NOT NULL,
                    row_key text NOT NULL,
                    op text NOT NULL,
                    key jsonb NOT NULL,
                    data jsonb NOT NULL,
                    created_at timestamptz NOT NULL DEFAULT now(),
                    not_before timestamptz NOT NULL DEFAULT now(),
                    attempts integer NOT NULL DEFAULT 0,
                    last_error text);
                CREATE INDEX IF NOT EXISTS outbox_row ON {SCHEMA}.outbox (capture, row_key, id);
                CREATE INDEX IF NOT EXISTS outbox_ready ON {SCHEMA}.outbox (capture, id);
                CREATE TABLE IF NOT EXISTS {SCHEMA}.captures (
                    name text PRIMARY KEY,
                    tbl text NOT NULL,
                    columns jsonb NOT NULL,
                    key jsonb NOT NULL,
                    where_sql text,
                    epoch text NOT NULL,
                    source text NOT NULL DEFAULT 'trigger',
                    installed_at timestamptz NOT NULL DEFAULT now());
                ALTER TABLE {SCHEMA}.captures
                    ADD COLUMN IF NOT EXISTS ops text NOT NULL DEFAULT 'INSERT,UPDATE';
            """)
            exists = await conn.fetchval(f"SELECT 1 FROM {SCHEMA}.captures WHERE name = $1",
                                         spec.name)
            if exists:
                raise CdcSqlError(f"capture '{spec.name}' is already installed (uninstall "
                                  "it first)")
            if spec.source == "wal2json":
                await self._install_source(conn, spec)
            else:
                delete = outbox_insert("OLD", "'DELETE'")
                upsert = outbox_insert("NEW", "TG_OP")
                await conn.execute(f"""
                CREATE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $lgcdc$
                BEGIN
                    IF current_setting({_lit(GUC)}, true) = 'on' THEN
                        RETURN NULL;
                    END IF;
                    IF TG_OP = 'DELETE' THEN
                        {delete}
                    ELSE
                        IF TG_OP = 'UPDATE' AND ({unchanged}) THEN
                            RETURN NULL;
                        END IF;
                        {upsert}
                    END IF;
                    PERFORM pg_notify({_lit(CHANNEL)}, {_lit(spec.name)});
                    RETURN NULL;
                END
                $lgcdc$;
                {" ".join(triggers)}
            """)
            await conn.execute(
                f"INSERT INTO {SCHEMA}.captures (name, tbl, columns, key, where_sql, epoch, "
                "source, ops) VALUES ($1, $2, $3::jsonb, $4::jsonb, $5, "
                "to_char(clock_timestamp(), 'YYYYMMDDHH24MISSUS'), $6, $7)",
                spec.name, spec.table, orjson.dumps(list(spec.columns)).decode(),
                orjson.dumps(list(spec.key)).decode(), spec.where, spec.source,
                ",".join(spec.ops))

    async def _install_source(self, conn: asyncpg.Connection, spec: CaptureSpec) -> None:
        """A capture without triggers (:mod:`lockgate.cdc.wal2json` overrides this)."""
        raise CdcSqlError("this database object installs trigger captures only")

    async def uninstall(self, name: str | None) -> list[str]:
        """Remove capture ``name`` (None: every capture); returns what was removed. The
        schema goes with the last capture (its outbox rows with it)."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('lockgate_cdc_install'))")
            if await conn.fetchval("SELECT to_regclass($1)", f"{SCHEMA}.captures") is None:
                return []
            rows = await conn.fetch(f"SELECT name, tbl, source FROM {SCHEMA}.captures"
                                    + (" WHERE name = $1" if name else ""),
                                    *([name] if name else []))
            for r in rows:
                for suffix in ("", "_del"):
                    await conn.execute(f'DROP TRIGGER IF EXISTS "lockgate_cdc_{r["name"]}'
                                       f'{suffix}" ON {pg_quote(r["tbl"])}')
                await conn.execute(f'DROP FUNCTION IF EXISTS {SCHEMA}."capture_{r["name"]}"()')
                await conn.execute(f"DELETE FROM {SCHEMA}.outbox WHERE capture = $1", r["name"])
                if await conn.fetchval("SELECT to_regclass($1)", f"{SCHEMA}.wal_applied"):
                    await conn.execute(f"DELETE FROM {SCHEMA}.wal_applied WHERE capture = $1",
                                       r["name"])
                if r["source"] == "wal2json":
                    await conn.execute(f"ALTER TABLE {pg_quote(r['tbl'])} REPLICA IDENTITY "
                                       "DEFAULT")
                await conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM "
                                   "pg_replication_slots WHERE slot_name = $1",
                                   f"lockgate_{r['name']}")
                await conn.execute(f"DELETE FROM {SCHEMA}.captures WHERE name = $1", r["name"])
            left = await conn.fetchval(f"SELECT count(*) FROM {SCHEMA}.captures")
            if not left:
                await conn.execute(f"DROP SCHEMA {SCHEMA} CASCADE")
            return [r["name"] for r in rows]

    async def capture(self, name: str) -> CaptureSpec | None:
        if await self.pool.fetchval("SELECT to_regclass($1)", f"{SCHEMA}.captures") is None:
            return None
        r = await self.pool.fetchrow(f"SELECT * FROM {SCHEMA}.captures WHERE name = $1", name)
        if r is None:
            return None
        ops = tuple(str(r.get("ops") or "INSERT,UPDATE").split(","))
        return CaptureSpec(r["name"], r["tbl"], tuple(orjson.loads(r["columns"])),
                           tuple(orjson.loads(r["key"])), r["where_sql"], r["epoch"],
                           r["source"], ops)

    async def captures(self) -> list[CaptureSpec]:
        if await self.pool.fetchval("SELECT to_regclass($1)", f"{SCHEMA}.captures") is None:
            return []
        names = [r[0] for r in await self.pool.fetch(f"SELECT name FROM {SCHEMA}.captures "
                                                     "ORDER BY name")]
        return [c for c in [await self.capture(n) for n in names] if c is not None]

    async def wal_status(self, name: str) -> dict[str, Any]:
        """A wal2json capture's leader (``lockgate-cdc:<pid>`` or None) and how many bytes
        of WAL its slot still holds back."""
        leader = await self.pool.fetchval(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2"
            " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " AND l.classid::bigint = (hashtext('lockgate_cdc_wal')::bigint & 4294967295)"
            " AND l.objid::bigint = (hashtext($1)::bigint & 4294967295) LIMIT 1", name)
        lag = await self.pool.fetchval(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint FROM "
            "pg_replication_slots WHERE slot_name = $1", f"lockgate_{name}")
        return {"leader": leader, "lag_bytes": lag}

    # ------------------------------------------------------------------ consuming

    async def claim(self, spec: CaptureSpec, n: int, lease: float) -> list[Change]:
        rows = await self.pool.fetch(f"""
            WITH heads AS (
                SELECT o.id FROM {SCHEMA}.outbox o
                WHERE o.capture = $1 AND o.not_before <= now()
                  AND NOT EXISTS (SELECT 1 FROM {SCHEMA}.outbox p WHERE p.capture = o.capture
                                  AND p.row_key = o.row_key AND p.id < o.id)
                ORDER BY o.id LIMIT $2 FOR UPDATE SKIP LOCKED)
            UPDATE {SCHEMA}.outbox o
               SET not_before = now() + make_interval(secs => $3), attempts = o.attempts + 1
              FROM heads WHERE o.id = heads.id
            RETURNING o.id, o.row_key, o.op, o.key, o.data, o.attempts""",
            spec.name, n, lease)
        return sorted((Change(spec.name, r["id"], r["row_key"], r["op"], orjson.loads(r["key"]),
                              orjson.loads(r["data"]), r["attempts"], spec.epoch)
                       for r in rows), key=lambda c: c.outbox_id)

    async def depth(self, spec: CaptureSpec) -> int:
        return int(await self.pool.fetchval(
            f"SELECT count(*) FROM {SCHEMA}.outbox WHERE capture = $1", spec.name))

    async def retry_later(self, change: Change, delay: float, error: str) -> None:
        await self.pool.execute(
            f"UPDATE {SCHEMA}.outbox SET not_before = now() + make_interval(secs => $2), "
            "last_error = $3 WHERE id = $1", change.outbox_id, delay, error[:2000])

    async def extend(self, change: Change, lease: float) -> None:
        await self.pool.execute(
            f"UPDATE {SCHEMA}.outbox SET not_before = now() + make_interval(secs => $2) "
            "WHERE id = $1", change.outbox_id, lease)

    async def delete(self, change: Change) -> bool:
        return await self.pool.fetchval(
            f"DELETE FROM {SCHEMA}.outbox WHERE id = $1 RETURNING id", change.outbox_id
        ) is not None

    async def complete(self, spec: CaptureSpec, change: Change, wb: WriteBack) -> bool:
        """Apply ``wb`` and delete the change, atomically; False (nothing written) when the
        change is no longer in the outbox."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(f"SET LOCAL {GUC} = 'on'")
            gone = await conn.fetchval(
                f"DELETE FROM {SCHEMA}.outbox WHERE id = $1 RETURNING id", change.outbox_id)
            if gone is None:
                return False
            await self._write(conn, spec, change, wb)
        return True

    async def _write(self, conn: asyncpg.Connection, spec: CaptureSpec, change: Change,
                     wb: WriteBack) -> None:
        if wb.kind == "column":
            await self._write_column(conn, spec, change, wb)
        elif wb.kind == "side":
            await self._write_side(conn, spec, change, wb)
        elif wb.kind == "forget":
            await conn.execute(f"DELETE FROM {pg_quote(wb.target)} WHERE capture = $1 AND "
                               "row_key = $2", spec.name, change.row_key)

    async def _write_column(self, conn: asyncpg.Connection, spec: CaptureSpec,
                            change: Change, wb: WriteBack) -> None:
        t = pg_quote(spec.table)
        rec = f"jsonb_populate_record(NULL::{t}, $2::jsonb)"
        cond = " AND ".join(f"{pg_quote(k)} = ({rec}).{pg_quote(k)}" for k in spec.key)
        col = pg_quote(wb.target)
        await conn.execute(
            f"UPDATE {t} SET {col} = (jsonb_populate_record(NULL::{t}, $1::jsonb)).{col} "
            f"WHERE {cond}",
            orjson.dumps({wb.target: wb.value}).decode(), orjson.dumps(change.key).decode())

    async def _write_side(self, conn: asyncpg.Connection, spec: CaptureSpec, change: Change,
                          wb: WriteBack) -> None:
        await conn.execute(
            f"INSERT INTO {pg_quote(wb.target)} (change_id, capture, row_key, op, result) "
            "VALUES ($1, $2, $3, $4, $5::jsonb) ON CONFLICT DO NOTHING",
            change.change_id, spec.name, change.row_key, change.op,
            orjson.dumps(wb.value).decode())

    async def ensure_side_table(self, table: str) -> None:
        check_table(table)
        async with self.pool.acquire() as conn, conn.transaction():
            # concurrent CREATE TABLE IF NOT EXISTS can collide: consumers start together
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('lockgate_cdc_install'))")
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {pg_quote(table)} (seq bigserial PRIMARY KEY, "
                "change_id text NOT NULL UNIQUE, capture text NOT NULL, row_key text NOT NULL, "
                "op text NOT NULL, result jsonb NOT NULL, "
                "created_at timestamptz NOT NULL DEFAULT now())")

    async def wait(self, spec: CaptureSpec, timeout: float) -> None:
        """Until a NOTIFY for ``spec`` or ``timeout`` seconds (the polling fallback)."""
        event = self._wake.get(spec.name)
        if event is None:
            event = self._wake[spec.name] = asyncio.Event()
            with contextlib.suppress(Exception):  # no LISTEN: polling still works
                await self._listen()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)
        event.clear()

    async def _listen(self) -> None:
        if self._listener is not None:
            return

        def on_notify(_c: Any, _pid: int, _channel: str, payload: str) -> None:
            ev = self._wake.get(payload)
            if ev is not None:
                ev.set()

        self._listener = await asyncpg.connect(self.dsn)
        await self._listener.add_listener(CHANNEL, on_notify)
