"""Tamper-evident audit: usage rows form a sha256 hash chain.

Every usage row gets a chain position ``seq`` (1, 2, 3, ... without gaps) and
``chain_hash = sha256(prev_hash + canonical(seq, row))``, where ``prev_hash``
is the ``chain_hash`` of row ``seq - 1`` (64 zeros for the first row) and
``canonical`` is a fixed JSON array of the row's fields (see
:func:`canonical`). The table ``audit_chain`` holds one row (id 1) with the
chain head (last seq and its hash).

Writing (:func:`insert_chained`, called by ``Store.write_usage_rows``, i.e. by
the AuditWriter once per batch): one transaction per batch that

1. locks the chain head: ``SELECT ... FROM audit_chain WHERE id = 1 FOR UPDATE``
   on PostgreSQL (so any number of gateway processes writing to one database
   serialise their batches and the order is well defined); on SQLite the
   writer engine's ``BEGIN IMMEDIATE`` already holds the database write lock;
2. drops request ids that are already stored (and duplicates inside the batch:
   the first one wins), exactly like the old ``ON CONFLICT DO NOTHING``;
3. assigns consecutive ``seq`` numbers and hashes and inserts the rows;
4. moves the head, then commits (the lock is released at commit).

Verifying (:func:`verify_chain`) walks the rows by ``seq`` in pages and reports
the *first* problem: an edited row (hash mismatch), a deleted row (gap in
``seq``), rows deleted at the end (head says more rows exist), a row outside
the chain (``seq`` NULL: inserted by someone other than the writer) or beyond
the head, and a head whose hash does not match. A complete rewrite of the
chain from some row onwards (recomputing every later hash and the head) is not
detectable from the database alone: anchor the head elsewhere
(``lockgate audit verify`` prints it; ``--anchor SEQ:HASH`` checks a saved one).

Rows that existed before the chain was introduced are chained, in ``id`` order,
by migration 0002.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypeVar

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection

from lockgate.store.errors import StoreError
from lockgate.store.records import USAGE_FIELDS
from lockgate.store.tables import audit_archives, audit_chain, usage_records

__all__ = [
    "GENESIS",
    "ChainConflict",
    "ChainReport",
    "RowsAlreadyStored",
    "canonical",
    "chain_head",
    "get_chained_record",
    "insert_chained",
    "link",
    "verify_chain",
]

GENESIS: Final = "0" * 64
"""The ``prev_hash`` of the first row."""
CHAIN_VERSION: Final = 1
HEAD_ID: Final = 1
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_US: Final = timedelta(microseconds=1)
YIELD_EVERY: Final = 4
"""Rows converted or hashed between two returns to the event loop (~10 us of work each).
A batch of a few hundred rows is milliseconds of it, and a request crosses the loop 4-6
times (body, auth, upstream send and reply, response), waiting at each crossing behind
whatever stretch is running: at 32 rows per stretch (~0.3 ms) that put 1.5-1.9 ms at c=1
p99, at 4 rows 1.0-1.15 ms, with CPU per request at c=64 unchanged within the noise
(bench/RESULTS.md, issue 12, fourth round)."""
YIELD_EVERY_BEHIND: Final = 128
"""The same while the audit writer is behind (more than a batch still queued): with the loop
saturated, a writer that yields every few rows queues behind every request at each yield and
falls further behind (62,000 rows and 17 s of backlog after 20 s at ~3,600 requests/s in
one measurement); with the loop saturated there is no idle latency to protect. Its INSERT
parts are this long too (one round trip through the saturated loop per part)."""
_LARGEST_PART: Final = 32
"""Rows per INSERT and ids per duplicate lookup (:func:`padded_parts`). The driver binds a
statement's parameters in one C call holding the GIL: 512 rows (~11,000 parameters) kept the
event loop waiting 2-7 ms on this project's 2-core box, 64 rows about 1 ms, 32 rows half
that. Padded parts of up to 32 rows are 6 statement shapes, 8 with the writer's
:data:`YIELD_EVERY_BEHIND` parts."""

u = usage_records
_T = TypeVar("_T")


class ChainConflict(StoreError):
    """A chained insert lost a row to a concurrent non-chained writer; the batch is retried."""

    http_status = 503


class RowsAlreadyStored(StoreError):
    """:func:`insert_chained` with ``assume_new=True`` met a request id stored already.

    Its links are then wrong (a ``seq`` was skipped): roll the transaction back and insert
    the batch again without ``assume_new``, which leaves the stored rows out first.
    """


def _created_us(value: Any) -> int:
    """``created_at`` (epoch seconds or datetime, naive = UTC) as integer microseconds."""
    if isinstance(value, datetime):
        dt = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    else:
        dt = datetime.fromtimestamp(float(value), UTC)
    return (dt - _EPOCH) // _US


def canonical(seq: int, row: Mapping[Any, Any]) -> bytes:
    """The bytes hashed for one row: a JSON array in a fixed field order.

    Values are normalised so the row read back from either database gives the
    same bytes as the row written: ``created_at`` as integer microseconds since
    the epoch (UTC), numbers as int/float, flags as booleans.

    ``detail`` (added later: guard findings, admin changes) is appended only when
    set, so rows written before it existed hash exactly as they did.
    """
    fields: list[Any] = [
        CHAIN_VERSION,
        int(seq),
        row["request_id"],
        _created_us(row["created_at"]),
        row["key_id"],
        row["team_id"],
        row["model"],
        row["deployment"],
        row["kind"],
        row["source"],
        int(row["status"]),
        row["error_class"],
        int(row["prompt_tokens"]),
        int(row["completion_tokens"]),
        float(row["cost"]),
        float(row["latency_ms"]),
        float(row["overhead_ms"]),
        bool(row["stream"]),
        bool(row["cached"]),
        row["request_body"],
        row["response_body"],
    ]
    detail = row.get("detail")
    if detail is not None:
        fields.append(detail)
    return orjson.dumps(fields)


def link(prev_hash: str, seq: int, row: Mapping[Any, Any]) -> str:
    """``sha256(prev_hash + canonical(seq, row))`` as hex."""
    return hashlib.sha256(prev_hash.encode("ascii") + canonical(seq, row)).hexdigest()


def _datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return datetime.fromtimestamp(float(value), UTC)


async def _lock_head(conn: AsyncConnection) -> tuple[int, str]:
    stmt = sa.select(audit_chain.c.seq, audit_chain.c.head_hash).where(
        audit_chain.c.id == HEAD_ID
    )
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    row = (await conn.execute(stmt)).first()
    if row is None:  # the head row was removed by hand: start it again (verify will tell)
        if conn.dialect.name == "postgresql":
            from sqlalchemy.dialects import postgresql as dialect_pg

            ins: Any = dialect_pg.insert(audit_chain).on_conflict_do_nothing()
        else:
            from sqlalchemy.dialects import sqlite as dialect_sqlite

            ins = dialect_sqlite.insert(audit_chain).on_conflict_do_nothing()
        await conn.execute(ins.values(id=HEAD_ID, seq=0, head_hash=GENESIS))
        row = (await conn.execute(stmt)).first()
        assert row is not None
    return int(row[0]), str(row[1])


async def _existing(conn: AsyncConnection, request_ids: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for part in padded_parts(request_ids):
        result = await conn.execute(sa.select(u.c.request_id).where(u.c.request_id.in_(part)))
        found.update(r[0] for r in result)
    return found


def padded_parts(items: Sequence[_T], largest: int = _LARGEST_PART) -> list[list[_T]]:
    """``items`` in parts of ``largest``, each padded with its last item to a power of two.

    Every distinct batch size is a distinct SQL text (``VALUES (...), (...)`` or
    ``IN (?, ?, ...)``), and the driver keeps each one prepared in its per-connection
    statement cache (sqlite3: 128 statements; asyncpg: 100). A 300-row multi-row INSERT
    holds about 0.7 MB there: with batches of every size from 1 to 500 that cache grew and
    shrank by tens of megabytes under load (bench/RESULTS.md, 2026-12-02). Padded parts
    leave at most ``log2(largest) + 1`` shapes. (A one-row ``executemany``, which on SQLite
    gives up and re-takes the GIL per row, made the audit writer fall behind a loaded event
    loop.)

    The padding repeats an item, so it only suits statements where a repeat changes nothing:
    ``IN (...)`` lists, and the audit INSERT, whose ``ON CONFLICT (request_id) DO NOTHING``
    skips the repeats of a row it has just stored.
    """
    parts: list[list[_T]] = []
    for start in range(0, len(items), largest):
        part = list(items[start : start + largest])
        part += part[-1:] * ((1 << (len(part) - 1).bit_length()) - len(part))
        parts.append(part)
    return parts


_INSERT_COLUMNS: Final = (*USAGE_FIELDS, "seq", "chain_hash")
_insert_sql_cache: dict[tuple[str, str, int], str] = {}


def _insert_sql(dialect: Dialect, rows: int) -> str:
    """``INSERT INTO usage_records (...) VALUES (...) x rows ON CONFLICT (request_id) DO
    NOTHING`` in the driver's own parameter style, cached per shape.

    Rendered here rather than compiled by SQLAlchemy per execution: its multi-row
    "insertmanyvalues" path builds and processes every parameter in Python on the event loop
    (~10 ms for a 512-row part on this project's 2-core box, time every request waiting on
    the loop sat through: the c=1 latency tail, bench/RESULTS.md issue 12). A conflicting
    request id (a row stored meanwhile, or a padding repeat) is skipped; the statement's
    rowcount is the number of rows it stored.
    """
    key = (dialect.name, str(dialect.paramstyle), rows)
    sql = _insert_sql_cache.get(key)
    if sql is not None:
        return sql
    quote = dialect.identifier_preparer.quote
    width = len(_INSERT_COLUMNS)
    style = dialect.paramstyle
    if style == "qmark":
        groups = ["(" + ", ".join("?" * width) + ")"] * rows
    elif style in ("numeric_dollar", "numeric"):
        mark = "$" if style == "numeric_dollar" else ":"
        groups = [
            "(" + ", ".join(f"{mark}{r * width + c + 1}" for c in range(width)) + ")"
            for r in range(rows)
        ]
    elif style == "format":
        groups = ["(" + ", ".join(["%s"] * width) + ")"] * rows
    else:  # pragma: no cover - every supported driver uses one of the styles above
        raise StoreError(f"audit insert: unsupported parameter style {style!r}")
    sql = (
        f"INSERT INTO {quote(u.name)} ({', '.join(quote(c) for c in _INSERT_COLUMNS)}) "
        f"VALUES {', '.join(groups)} ON CONFLICT ({quote('request_id')}) DO NOTHING"
    )
    _insert_sql_cache[key] = sql
    return sql


async def _insert_parts(conn: AsyncConnection, params: list[tuple[Any, ...]],
                        yield_every: int = YIELD_EVERY) -> int:
    """Insert value tuples (in :data:`_INSERT_COLUMNS` order) in padded parts; rows stored."""
    dialect = conn.dialect
    inserted = 0
    for part in padded_parts(params, max(_LARGEST_PART, yield_every)):
        flat: list[Any] = []
        for i, values in enumerate(part):
            if i and not i % yield_every:
                await asyncio.sleep(0)
            flat.extend(values)
        result = await conn.exec_driver_sql(_insert_sql(dialect, len(part)), tuple(flat))
        inserted += max(result.rowcount, 0)
    return inserted


def _created_binder(dialect: Dialect) -> Callable[[Any], Any]:
    """``created_at`` as the driver takes it (naive UTC text on SQLite, aware on PostgreSQL)."""
    processor = u.c.created_at.type.bind_processor(dialect)
    if processor is None:  # pragma: no cover - UTCDateTime always has one
        return _datetime
    return lambda value: processor(_datetime(value))


async def insert_chained(
    conn: AsyncConnection, rows: Sequence[Mapping[str, Any]], *, assume_new: bool = False,
    yield_every: int = YIELD_EVERY,
) -> int:
    """Insert row dicts (``records.usage_row``) as the next links; returns how many were new.

    Must run inside a write transaction (``Store._writer.begin()``); the chain
    head stays locked until that transaction ends.

    ``assume_new`` skips the look-up of request ids stored already (one round trip per 64
    rows): the audit writer's batches are new rows but for the rare retry or spill replay.
    If one was stored after all, :class:`RowsAlreadyStored` is raised and the caller rolls
    back and calls again without it.
    """
    if not rows:
        return 0
    seq, prev = await _lock_head(conn)
    existing = (
        set() if assume_new
        else await _existing(conn, [r["request_id"] for r in rows])
    )
    created = _created_binder(conn.dialect)
    params: list[tuple[Any, ...]] = []
    for i, row in enumerate(rows):
        if i and not i % yield_every:
            await asyncio.sleep(0)  # let waiting requests run (the head stays locked)
        rid = row["request_id"]
        if rid in existing:
            continue
        existing.add(rid)
        seq += 1
        prev = link(prev, seq, row)
        values = [row.get(name) for name in USAGE_FIELDS]
        values[1] = created(row["created_at"])
        values += (seq, prev)
        params.append(tuple(values))
    if not params:
        return 0
    inserted = await _insert_parts(conn, params, yield_every)
    if inserted != len(params) and assume_new:
        raise RowsAlreadyStored(f"{len(params) - inserted} of {len(params)} rows were stored")
    if inserted != len(params):
        # only a writer that bypasses the chain can race us here; retrying re-reads it
        raise ChainConflict(
            f"{len(params) - inserted} usage rows were inserted concurrently outside the chain"
        )
    await conn.execute(
        audit_chain.update().where(audit_chain.c.id == HEAD_ID).values(seq=seq, head_hash=prev)
    )
    return len(params)


@dataclass(frozen=True, slots=True)
class ChainReport:
    """The result of :func:`verify_chain`."""

    ok: bool
    records: int
    """Chained rows walked (up to the first problem)."""
    head_seq: int
    head_hash: str
    problem: str | None = None
    """One line naming the first problem; None when ok."""
    seq: int | None = None
    request_id: str | None = None

    def line(self) -> str:
        if self.ok:
            return f"ok, {self.records} records (head {self.head_seq}:{self.head_hash})"
        return f"TAMPERED: {self.problem}"


_CHAIN_COLUMNS = (u.c.seq, u.c.chain_hash, *(u.c[name] for name in USAGE_FIELDS))


async def chain_head(conn: AsyncConnection) -> tuple[int, str] | None:
    """``(seq, hash)`` stored in the head row, or None when it is missing."""
    row = (
        await conn.execute(
            sa.select(audit_chain.c.seq, audit_chain.c.head_hash).where(
                audit_chain.c.id == HEAD_ID
            )
        )
    ).first()
    return (int(row[0]), str(row[1])) if row is not None else None


async def verify_chain(
    conn: AsyncConnection, *, page: int = 5000, anchor: tuple[int, str] | None = None,
    base: tuple[int, str] | None = None,
) -> ChainReport:
    """Walk the whole chain; the first problem found is reported (see the module doc).

    Safe while gateways keep writing: the walk reads one snapshot (PostgreSQL:
    REPEATABLE READ when ``conn`` has no transaction yet; SQLite: the
    connection's single read transaction).

    ``anchor`` is a ``(seq, hash)`` saved earlier from a verified chain: the row
    at that seq must still carry that hash.

    ``base`` is ``(seq, hash)`` of the last archived record (:mod:`lockgate.store.archive`):
    the live rows start after it and link to its hash. An ``anchor`` at or before it is the
    archive's to check (:func:`~lockgate.store.archive.verify_archives`), not this walk's.
    """
    if conn.dialect.name == "postgresql" and not conn.in_transaction():
        # one snapshot for the head and every page: writers may append meanwhile
        await conn.execution_options(isolation_level="REPEATABLE READ")
    head = await chain_head(conn)
    head_seq, head_hash = head if head is not None else (0, GENESIS)
    base_seq, prev = base if base is not None else (0, GENESIS)
    expected, count = base_seq + 1, 0
    anchor_seen = anchor is None or anchor[0] <= base_seq

    def bad(problem: str, seq: int | None = None, rid: str | None = None) -> ChainReport:
        return ChainReport(False, count, head_seq, head_hash, problem, seq, rid)

    while True:
        stmt = (
            sa.select(*_CHAIN_COLUMNS)
            .where(u.c.seq >= expected)
            .order_by(u.c.seq)
            .limit(page)
        )
        batch = (await conn.execute(stmt)).mappings().all()
        if not batch:
            break
        for row in batch:
            seq = int(row["seq"])
            rid = row["request_id"]
            if seq != expected:
                missing = _span(expected, seq - 1)
                return bad(
                    f"{missing} deleted (chain jumps to #{seq}, request {rid})", expected, rid
                )
            if head is not None and seq > head_seq:
                return bad(
                    f"record #{seq} (request {rid}) inserted beyond the chain head #{head_seq}",
                    seq,
                    rid,
                )
            if link(prev, seq, row) != row["chain_hash"]:
                return bad(
                    f"record #{seq} (request {rid}) was edited: its hash does not match "
                    "(the record or its chain hash was changed)",
                    seq,
                    rid,
                )
            if anchor is not None and seq == anchor[0]:
                if row["chain_hash"] != anchor[1]:
                    return bad(
                        f"record #{seq} (request {rid}) does not match the anchor: "
                        "the chain was rewritten from here or earlier",
                        seq,
                        rid,
                    )
                anchor_seen = True
            prev = row["chain_hash"]
            expected += 1
            count += 1
    last = expected - 1
    stray = (
        await conn.execute(
            sa.select(u.c.id, u.c.request_id).where(u.c.seq.is_(None)).order_by(u.c.id).limit(1)
        )
    ).first()
    if stray is not None:
        return bad(
            f"record request {stray[1]} (row id {stray[0]}) is not in the chain: "
            "inserted outside the audit writer",
            None,
            str(stray[1]),
        )
    if head is None:
        if last:
            return bad("the chain head row (audit_chain id 1) was deleted", last)
    elif head_seq > last:
        return bad(f"{_span(last + 1, head_seq)} deleted from the end of the chain", last + 1)
    elif head_hash != prev:
        return bad(f"the chain head hash does not match record #{last}", last)
    if not anchor_seen:
        assert anchor is not None
        return bad(f"anchor record #{anchor[0]} is missing: the chain was truncated", anchor[0])
    return ChainReport(True, count, head_seq, head_hash)


def _span(first: int, last: int) -> str:
    return f"record #{first}" if first == last else f"records #{first}..#{last}"


async def get_chained_record(conn: AsyncConnection, request_id: str) -> dict[str, Any] | None:
    """One stored row with ``seq``, ``chain_hash`` and ``link_ok`` (its own link checks out)."""
    row = (
        (await conn.execute(sa.select(*_CHAIN_COLUMNS).where(u.c.request_id == request_id)))
        .mappings()
        .first()
    )
    if row is None:
        return None
    out = dict(row)
    link_ok: bool | None = None
    if row["seq"] is not None:
        seq = int(row["seq"])
        if seq == 1:
            prev: str | None = GENESIS
        elif (archived := await _archived_hash(conn, seq - 1)) is not None:
            prev = archived
        else:
            prev = (
                await conn.execute(sa.select(u.c.chain_hash).where(u.c.seq == seq - 1))
            ).scalar()
        link_ok = prev is not None and link(prev, seq, row) == row["chain_hash"]
    out["link_ok"] = link_ok
    return out


async def _archived_hash(conn: AsyncConnection, seq: int) -> str | None:
    """The hash of record ``seq`` when it is the last one of an archive file."""
    return (  # type: ignore[no-any-return]
        await conn.execute(
            sa.select(audit_archives.c.last_hash).where(audit_archives.c.last_seq == seq)
        )
    ).scalar()
