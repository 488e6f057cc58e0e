"""CDC on MariaDB/MySQL: triggers + outbox, polled (aiomysql).

``install`` adds the tables ``lockgate_cdc_outbox`` and ``lockgate_cdc_captures`` and two
triggers on the table, one per captured operation (``lockgate_cdc_<name>_ins`` / ``_upd`` /
``_del``, AFTER INSERT / UPDATE / DELETE; a delete carries the old row's values and
``--where`` is evaluated on ``OLD`` for it).
MariaDB has no ``NOTIFY``: the consumer polls (``poll_interval``). The triggers skip an
UPDATE that changes none of the watched columns (``<=>``) and any write made while the
session variable ``@lockgate_cdc_writeback`` is set (the consumer's write-backs), so a
write-back never re-triggers itself. Claims, per-row order and atomic write-backs work as
on PostgreSQL (``FOR UPDATE SKIP LOCKED``: MariaDB 10.6+ / MySQL 8+).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any
from urllib.parse import unquote, urlsplit

import aiomysql
import orjson

from lockgate.cdc.model import CaptureSpec, Change, WriteBack
from lockgate.cdc.sqltext import CdcSqlError, check_table, rewrite_where

__all__ = ["MariaCdc", "my_quote"]

OUTBOX = "lockgate_cdc_outbox"
CAPTURES = "lockgate_cdc_captures"


def my_quote(name: str) -> str:
    return ".".join(f"`{p}`" for p in name.split("."))


def _lit(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


def connect_args(dsn: str) -> dict[str, Any]:
    """``mysql://user:pass@host:port/db`` (or ``mariadb://``) -> aiomysql arguments."""
    u = urlsplit(dsn)
    if u.scheme.split("+")[0] not in ("mysql", "mariadb"):
        raise CdcSqlError(f"not a MySQL/MariaDB DSN: {u.scheme}://")
    db = u.path.lstrip("/")
    if not db:
        raise CdcSqlError("the DSN needs a database name (mysql://user@host/db)")
    return {"host": u.hostname or "127.0.0.1", "port": u.port or 3306,
            "user": unquote(u.username or "root"), "password": unquote(u.password or ""),
            "db": db, "autocommit": False, "charset": "utf8mb4"}


class MariaCdc:
    kind = "mariadb"

    def __init__(self, dsn: str, *, pool_size: int = 4) -> None:
        self.args = connect_args(dsn)
        self.pool_size = pool_size
        self._pool: aiomysql.Pool | None = None

    async def open(self) -> None:
        self._pool = await aiomysql.create_pool(minsize=1, maxsize=self.pool_size, **self.args)

    async def aclose(self) -> None:
        if self._pool is not None:
            self._pool.close()
            await self._pool.wait_closed()

    @contextlib.asynccontextmanager
    async def _tx(self) -> Any:
        assert self._pool is not None, "open() first"
        async with self._pool.acquire() as conn:
            try:
                async with conn.cursor(aiomysql.DictCursor) as cur:
                    yield cur
                await conn.commit()
            except BaseException:
                with contextlib.suppress(Exception):
                    await conn.rollback()
                raise

    async def _all(self, sql: str, args: Any = None) -> list[dict[str, Any]]:
        async with self._tx() as cur:
            await cur.execute(sql, args)
            return list(await cur.fetchall())

    # ------------------------------------------------------------------ catalogue

    def _split(self, table: str) -> tuple[str, str]:
        if "." in table:
            schema, name = table.split(".", 1)
            return schema, name
        return str(self.args["db"]), table

    async def table_columns(self, table: str) -> list[str]:
        schema, name = self._split(table)
        rows = await self._all(
            "SELECT column_name AS c FROM information_schema.columns WHERE table_schema = %s "
            "AND table_name = %s ORDER BY ordinal_position", (schema, name))
        return [r["c"] for r in rows]

    async def primary_key(self, table: str) -> list[str]:
        schema, name = self._split(table)
        rows = await self._all(
            "SELECT column_name AS c FROM information_schema.key_column_usage WHERE "
            "table_schema = %s AND table_name = %s AND constraint_name = 'PRIMARY' "
            "ORDER BY ordinal_position", (schema, name))
        return [r["c"] for r in rows]

    async def table_exists(self, table: str) -> bool:
        return bool(await self.table_columns(table))

    # ------------------------------------------------------------------ install

    async def install(self, spec: CaptureSpec) -> None:
        check_table(spec.table)
        t = my_quote(spec.table)
        cols = [*spec.key, *(c for c in spec.columns if c not in spec.key)]
        changed = " AND ".join(f"NEW.{my_quote(c)} <=> OLD.{my_quote(c)}" for c in spec.columns)
        present = await self.table_columns(spec.table)
        name = _lit(spec.name)

        def body(op: str, rec: str, extra: str) -> str:
            where = "TRUE"
            if spec.where:
                where = rewrite_where(spec.where, present, lambda c: f"{rec}.{my_quote(c)}")
            data = ", ".join(f"{_lit(c)}, {rec}.{my_quote(c)}" for c in cols)
            key = ", ".join(f"{_lit(c)}, {rec}.{my_quote(c)}" for c in spec.key)
            row_key = ", ".join(f"{rec}.{my_quote(c)}" for c in spec.key)
            return (f"BEGIN IF @lockgate_cdc_writeback IS NULL {extra} AND ({where}) THEN "
                    f"INSERT INTO {OUTBOX} (capture, row_key, op, `key`, data) VALUES "
                    f"({name}, JSON_ARRAY({row_key}), '{op}', JSON_OBJECT({key}), "
                    f"JSON_OBJECT({data})); END IF; END")

        triggers = {"INSERT": ("ins", body("INSERT", "NEW", "")),
                    "UPDATE": ("upd", body("UPDATE", "NEW", f"AND NOT ({changed})")),
                    "DELETE": ("del", body("DELETE", "OLD", ""))}

        async with self._tx() as cur:
            # "table already exists" notes of CREATE ... IF NOT EXISTS are not news
            await cur.execute("SET SESSION sql_notes = 0")
            await cur.execute("SELECT GET_LOCK('lockgate_cdc_install', 30)")
            try:
                await cur.execute(f"""CREATE TABLE IF NOT EXISTS {OUTBOX} (
                    id BIGINT AUTO_INCREMENT PRIMARY KEY,
                    capture VARCHAR(64) NOT NULL,
                    row_key VARCHAR(512) NOT NULL,
                    op VARCHAR(8) NOT NULL,
                    `key` LONGTEXT NOT NULL,
                    data LONGTEXT NOT NULL,
                    created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
                    not_before DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
                    attempts INT NOT NULL DEFAULT 0,
                    last_error TEXT,
                    INDEX outbox_row (capture, row_key, id),
                    INDEX outbox_ready (capture, id)) ENGINE=InnoDB""")
                await cur.execute(f"""CREATE TABLE IF NOT EXISTS {CAPTURES} (
                    name VARCHAR(64) PRIMARY KEY,
                    tbl VARCHAR(200) NOT NULL,
                    columns LONGTEXT NOT NULL,
                    `key` LONGTEXT NOT NULL,
                    where_sql TEXT,
                    epoch VARCHAR(32) NOT NULL,
                    installed_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6))
                    ENGINE=InnoDB""")
                await cur.execute(f"SELECT 1 FROM {CAPTURES} WHERE name = %s", (spec.name,))
                if await cur.fetchone():
                    raise CdcSqlError(f"capture '{spec.name}' is already installed "
                                      "(uninstall it first)")
                await self._add_ops_column(cur)
                for op in spec.ops:
                    suffix, sql = triggers[op]
                    await cur.execute(f"CREATE TRIGGER `lockgate_cdc_{spec.name}_{suffix}` "
                                      f"AFTER {op} ON {t} FOR EACH ROW " + sql)
                await cur.execute(
                    f"INSERT INTO {CAPTURES} (name, tbl, columns, `key`, where_sql, epoch, ops)"
                    " VALUES (%s, %s, %s, %s, %s, DATE_FORMAT(NOW(6), '%%Y%%m%%d%%H%%i%%s%%f'),"
                    " %s)",
                    (spec.name, spec.table, orjson.dumps(list(spec.columns)).decode(),
                     orjson.dumps(list(spec.key)).decode(), spec.where, ",".join(spec.ops)))
            finally:
                await cur.execute("SELECT RELEASE_LOCK('lockgate_cdc_install')")
                await cur.execute("SET SESSION sql_notes = 1")

    async def _add_ops_column(self, cur: Any) -> None:
        """``ops`` of captures installed before deletes were captured (MySQL has no
        ``ADD COLUMN IF NOT EXISTS``)."""
        await cur.execute("SELECT 1 FROM information_schema.columns WHERE table_schema = %s "
                          "AND table_name = %s AND column_name = 'ops'",
                          (self.args["db"], CAPTURES))
        if not await cur.fetchone():
            await cur.execute(f"ALTER TABLE {CAPTURES} ADD COLUMN ops VARCHAR(32) NOT NULL "
                              "DEFAULT 'INSERT,UPDATE'")

    async def _has_tables(self) -> bool:
        rows = await self._all(
            "SELECT table_name AS t FROM information_schema.tables WHERE table_schema = %s "
            "AND table_name = %s", (self.args["db"], CAPTURES))
        return bool(rows)

    async def uninstall(self, name: str | None) -> list[str]:
        if not await self._has_tables():
            return []
        removed: list[str] = []
        async with self._tx() as cur:
            if name:
                await cur.execute(f"SELECT name, tbl FROM {CAPTURES} WHERE name = %s", (name,))
            else:
                await cur.execute(f"SELECT name, tbl FROM {CAPTURES}")
            rows = list(await cur.fetchall())
            for r in rows:
                await cur.execute("SET SESSION sql_notes = 0")  # absent triggers: no news
                for suffix in ("ins", "upd", "del"):
                    await cur.execute(f"DROP TRIGGER IF EXISTS `lockgate_cdc_{r['name']}_{suffix}`")
                await cur.execute("SET SESSION sql_notes = 1")
                await cur.execute(f"DELETE FROM {OUTBOX} WHERE capture = %s", (r["name"],))
                await cur.execute(f"DELETE FROM {CAPTURES} WHERE name = %s", (r["name"],))
                removed.append(r["name"])
            await cur.execute(f"SELECT count(*) AS n FROM {CAPTURES}")
            left = (await cur.fetchone())["n"]
        if not left:
            async with self._tx() as cur:
                await cur.execute(f"DROP TABLE IF EXISTS {OUTBOX}, {CAPTURES}")
        return removed

    async def capture(self, name: str) -> CaptureSpec | None:
        if not await self._has_tables():
            return None
        rows = await self._all(f"SELECT * FROM {CAPTURES} WHERE name = %s", (name,))
        if not rows:
            return None
        r = rows[0]
        ops = tuple(str(r.get("ops") or "INSERT,UPDATE").split(","))
        return CaptureSpec(r["name"], r["tbl"], tuple(orjson.loads(r["columns"])),
                           tuple(orjson.loads(r["key"])), r["where_sql"], r["epoch"], ops=ops)

    async def captures(self) -> list[CaptureSpec]:
        if not await self._has_tables():
            return []
        names = [r["name"] for r in await self._all(f"SELECT name FROM {CAPTURES} ORDER BY name")]
        return [c for c in [await self.capture(n) for n in names] if c is not None]

    # ------------------------------------------------------------------ consuming

    async def claim(self, spec: CaptureSpec, n: int, lease: float) -> list[Change]:
        async with self._tx() as cur:
            await cur.execute(
                f"SELECT o.id FROM {OUTBOX} o WHERE o.capture = %s AND o.not_before <= NOW(6) "
                f"AND NOT EXISTS (SELECT 1 FROM {OUTBOX} p WHERE p.capture = o.capture AND "
                "p.row_key = o.row_key AND p.id < o.id) ORDER BY o.id LIMIT %s "
                "FOR UPDATE SKIP LOCKED", (spec.name, n))
            ids = [r["id"] for r in await cur.fetchall()]
            if not ids:
                return []
            marks = ", ".join(["%s"] * len(ids))
            await cur.execute(
                f"UPDATE {OUTBOX} SET not_before = NOW(6) + INTERVAL %s MICROSECOND, "
                f"attempts = attempts + 1 WHERE id IN ({marks})", (int(lease * 1e6), *ids))
            await cur.execute(f"SELECT id, row_key, op, `key`, data, attempts FROM {OUTBOX} "
                              f"WHERE id IN ({marks}) ORDER BY id", tuple(ids))
            rows = list(await cur.fetchall())
        return [Change(spec.name, r["id"], r["row_key"], r["op"], orjson.loads(r["key"]),
                       orjson.loads(r["data"]), r["attempts"], spec.epoch) for r in rows]

    async def depth(self, spec: CaptureSpec) -> int:
        rows = await self._all(f"SELECT count(*) AS n FROM {OUTBOX} WHERE capture = %s",
                               (spec.name,))
        return int(rows[0]["n"])

    async def retry_later(self, change: Change, delay: float, error: str) -> None:
        async with self._tx() as cur:
            await cur.execute(
                f"UPDATE {OUTBOX} SET not_before = NOW(6) + INTERVAL %s MICROSECOND, "
                "last_error = %s WHERE id = %s", (int(delay * 1e6), error[:2000], change.outbox_id))

    async def extend(self, change: Change, lease: float) -> None:
        async with self._tx() as cur:
            await cur.execute(
                f"UPDATE {OUTBOX} SET not_before = NOW(6) + INTERVAL %s MICROSECOND "
                "WHERE id = %s", (int(lease * 1e6), change.outbox_id))

    async def delete(self, change: Change) -> bool:
        async with self._tx() as cur:
            await cur.execute(f"DELETE FROM {OUTBOX} WHERE id = %s", (change.outbox_id,))
            return bool(cur.rowcount)

    async def complete(self, spec: CaptureSpec, change: Change, wb: WriteBack) -> bool:
        assert self._pool is not None
        async with self._pool.acquire() as conn:
            try:
                async with conn.cursor() as cur:
                    await cur.execute("SET @lockgate_cdc_writeback = 1")
                    await cur.execute(f"DELETE FROM {OUTBOX} WHERE id = %s", (change.outbox_id,))
                    if not cur.rowcount:
                        await conn.rollback()
                        return False
                    if wb.kind == "column":
                        value = wb.value if isinstance(wb.value, str) or wb.value is None \
                            else orjson.dumps(wb.value).decode()
                        cond = " AND ".join(f"{my_quote(k)} = %s" for k in spec.key)
                        await cur.execute(
                            f"UPDATE {my_quote(spec.table)} SET {my_quote(wb.target)} = %s "
                            f"WHERE {cond}", (value, *(change.key[k] for k in spec.key)))
                    elif wb.kind == "forget":
                        await cur.execute(
                            f"DELETE FROM {my_quote(wb.target)} WHERE capture = %s AND "
                            "row_key = %s", (spec.name, change.row_key))
                    elif wb.kind == "side":
                        await cur.execute(
                            f"INSERT IGNORE INTO {my_quote(wb.target)} (change_id, capture, "
                            "row_key, op, result) VALUES (%s, %s, %s, %s, %s)",
                            (change.change_id, spec.name, change.row_key, change.op,
                             orjson.dumps(wb.value).decode()))
                await conn.commit()
                return True
            except BaseException:
                with contextlib.suppress(Exception):
                    await conn.rollback()
                raise
            finally:
                with contextlib.suppress(Exception):
                    async with conn.cursor() as cur:
                        await cur.execute("SET @lockgate_cdc_writeback = NULL")

    async def ensure_side_table(self, table: str) -> None:
        check_table(table)
        async with self._tx() as cur:
            await cur.execute("SET SESSION sql_notes = 0")
            await cur.execute(
                f"CREATE TABLE IF NOT EXISTS {my_quote(table)} (seq BIGINT AUTO_INCREMENT "
                "PRIMARY KEY, change_id VARCHAR(160) NOT NULL UNIQUE, capture VARCHAR(64) NOT "
                "NULL, row_key VARCHAR(512) NOT NULL, op VARCHAR(8) NOT NULL, result LONGTEXT "
                "NOT NULL, created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)) "
                "ENGINE=InnoDB")
            await cur.execute("SET SESSION sql_notes = 1")

    async def wait(self, spec: CaptureSpec, timeout: float) -> None:
        await asyncio.sleep(timeout)  # no NOTIFY on MariaDB: poll
