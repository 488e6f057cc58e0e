"""Audit retention: old audit rows move to compressed JSONL files, the chain stays provable.

:func:`archive_audit` moves the oldest chained rows of ``usage_records`` (all rows older
than ``max_age``, and all but the newest ``max_rows``) into gzip-compressed JSONL files,
``audit-<first seq>-<last seq>.jsonl.gz`` under an archive directory, at most
``file_rows`` rows per file. Each file starts with a header line (its seq range, the hash
of the record before it, the hash of its last record, its row count), then one JSON object
per record (``seq``, ``chain_hash`` and every field :func:`~lockgate.store.chain.canonical`
hashes, ``created_at`` as ISO 8601). The table ``audit_archives`` gets one row per file
with the same anchors and the file's sha256; the rows are deleted in the same transaction.

The chain is unchanged: the live table now starts at ``last_seq + 1`` of the newest
archive, and that record's link uses the archive's ``last_hash`` as its previous hash.
:func:`verify_archives` walks every file (sha256, header, each link, contiguous from #1) and
:func:`~lockgate.store.chain.verify_chain` continues the live part from the archived base,
so ``lockgate audit verify`` proves both; a ``--anchor`` inside an archived range is checked
in its file.

Safety
- A file is written to a temporary name, flushed, fsynced and renamed before its rows
  are deleted; a crash in between leaves a file and no archive row, and the next run
  rewrites the same file (same name, same content).
- Before writing, the rows are checked against the chain (links, no gaps): a tampered or
  broken range is never archived (:class:`ArchiveError`; run ``lockgate audit verify``).
- Several archivers (gateways, the CLI) may run at once: the delete transaction locks the
  chain head (``FOR UPDATE`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite) and re-reads the
  archived base; if another archiver moved it meanwhile this one stops.
- Writers keep appending meanwhile: archiving only reads and deletes rows behind the head.

Partial / by design
- The duplicate-request-id check of the audit writer sees the live table only: a
  retried request id whose first row is already archived is stored again (a new link).
- Usage summaries (``/admin/usage``, ``lockgate usage``), feedback and review lookups read
  the live table: keep ``max_age`` longer than the windows you report on.
- The archive files are as trustworthy as the database: keep them (and an anchor printed
  by ``lockgate audit verify``) where the database's administrators cannot rewrite them.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from lockgate.store.chain import GENESIS, chain_head, link, verify_chain
from lockgate.store.errors import StoreError
from lockgate.store.records import USAGE_FIELDS
from lockgate.store.store import Store
from lockgate.store.tables import audit_archives, audit_chain, usage_records

__all__ = [
    "ARCHIVE_FORMAT",
    "ArchiveError",
    "ArchiveReport",
    "ArchiveVerdict",
    "ArchivedFile",
    "AuditVerdict",
    "archive_audit",
    "archived_base",
    "list_archives",
    "read_archive",
    "verify_archives",
    "verify_audit",
]

ARCHIVE_FORMAT: Final = 1
"""The ``lockgate_audit_archive`` version in each file's header line."""
_HEADER_KEY: Final = "lockgate_audit_archive"
_READ_PAGE: Final = 5000
_MOVED: Final = "another archiver moved the archived base meanwhile"

u = usage_records
a = audit_archives
_ROW_COLUMNS = (u.c.seq, u.c.chain_hash, *(u.c[name] for name in USAGE_FIELDS))


class ArchiveError(StoreError):
    """The rows to archive do not form an intact chain, or the archive directory failed."""

    http_status = 409


@dataclass(frozen=True, slots=True)
class ArchivedFile:
    """One ``audit_archives`` row: a file and the chain anchors around it."""

    first_seq: int
    last_seq: int
    prev_hash: str
    last_hash: str
    rows: int
    file: str
    sha256: str
    oldest_at: datetime
    newest_at: datetime
    created_at: datetime


@dataclass(slots=True)
class ArchiveReport:
    """What one :func:`archive_audit` run did."""

    files: list[ArchivedFile] = field(default_factory=list)
    base_seq: int = 0
    """The last archived seq afterwards (the live table starts after it)."""
    stopped: str | None = None
    """Why the run stopped early (another archiver moved the base), else None."""

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)

    def line(self) -> str:
        if not self.files:
            text = f"nothing to archive (archived up to #{self.base_seq})"
        else:
            text = (f"archived {self.rows} records #{self.files[0].first_seq}.."
                    f"#{self.files[-1].last_seq} into {len(self.files)} file(s)")
        return text + (f"; stopped: {self.stopped}" if self.stopped else "")


@dataclass(frozen=True, slots=True)
class ArchiveVerdict:
    """The result of :func:`verify_archives`."""

    ok: bool
    records: int
    files: int
    base_seq: int
    base_hash: str
    problem: str | None = None
    anchor_seen: bool = False


# ------------------------------------------------------------------ rows <-> JSON lines


def _utc(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return datetime.fromtimestamp(float(value), UTC)


def _row_json(row: Mapping[Any, Any]) -> bytes:
    out = {"seq": int(row["seq"]), "chain_hash": row["chain_hash"]}
    for name in USAGE_FIELDS:
        value = row[name]
        out[name] = _utc(value).isoformat() if name == "created_at" else value
    return orjson.dumps(out)


def _row_of(line: bytes) -> dict[str, Any]:
    row: dict[str, Any] = orjson.loads(line)
    row["created_at"] = datetime.fromisoformat(row["created_at"])
    return row


def read_archive(path: Path) -> Iterator[dict[str, Any]]:
    """A file's header (first), then its records (``seq``, ``chain_hash``, the usage
    fields, ``created_at`` as a datetime)."""
    with gzip.open(path, "rb") as stream:
        header = orjson.loads(stream.readline())
        if not isinstance(header, dict) or header.get(_HEADER_KEY) != ARCHIVE_FORMAT:
            raise ValueError(f"{path.name} is not a lockgate audit archive (format "
                             f"{ARCHIVE_FORMAT})")
        yield header
        for line in stream:
            if line.strip():
                yield _row_of(line)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _archive_name(first: int, last: int) -> str:
    return f"audit-{first:012d}-{last:012d}.jsonl.gz"


def _write_file(directory: Path, rows: list[Mapping[Any, Any]], prev_hash: str) -> Path:
    """Write rows (already checked) to their file atomically; returns its path."""
    first, last = int(rows[0]["seq"]), int(rows[-1]["seq"])
    header = {_HEADER_KEY: ARCHIVE_FORMAT, "first_seq": first, "last_seq": last,
              "prev_hash": prev_hash, "last_hash": rows[-1]["chain_hash"], "rows": len(rows)}
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / _archive_name(first, last)
    fd, tmp = tempfile.mkstemp(prefix=".audit-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as raw:
            # mtime=0: the same rows give the same bytes (a rerun after a crash, a check)
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
                gz.write(orjson.dumps(header) + b"\n")
                for row in rows:
                    gz.write(_row_json(row) + b"\n")
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return target


# ------------------------------------------------------------------ the table


def _archived(row: Mapping[Any, Any]) -> ArchivedFile:
    return ArchivedFile(
        first_seq=int(row["first_seq"]), last_seq=int(row["last_seq"]),
        prev_hash=str(row["prev_hash"]), last_hash=str(row["last_hash"]), rows=int(row["rows"]),
        file=str(row["file"]), sha256=str(row["sha256"]), oldest_at=_utc(row["oldest_at"]),
        newest_at=_utc(row["newest_at"]), created_at=_utc(row["created_at"]),
    )


async def list_archives(conn: AsyncConnection) -> list[ArchivedFile]:
    """Every archive file's row, in chain order."""
    result = await conn.execute(sa.select(a).order_by(a.c.first_seq))
    return [_archived(r) for r in result.mappings()]


async def archived_base(conn: AsyncConnection) -> tuple[int, str]:
    """``(last archived seq, its hash)``; ``(0, GENESIS)`` when nothing is archived."""
    row = (await conn.execute(
        sa.select(a.c.last_seq, a.c.last_hash).order_by(a.c.last_seq.desc()).limit(1)
    )).first()
    return (int(row[0]), str(row[1])) if row is not None else (0, GENESIS)


async def _cut(conn: AsyncConnection, base: int, head: int, max_age: timedelta | None,
               max_rows: int | None, now: datetime) -> int:
    """The last seq to archive: rows older than ``max_age`` and beyond ``max_rows``."""
    cut = base
    if max_rows is not None:
        cut = max(cut, head - max_rows)
    if max_age is not None:
        young = (await conn.execute(
            sa.select(sa.func.min(u.c.seq)).where(u.c.seq > base,
                                                  u.c.created_at >= now - max_age)
        )).scalar()
        cut = max(cut, head if young is None else int(young) - 1)
    return min(cut, head)


async def _read_range(conn: AsyncConnection, first: int, last: int, prev: str
                      ) -> list[Mapping[Any, Any]]:
    """Rows ``first..last`` in seq order, checked link by link from ``prev``."""
    rows: list[Mapping[Any, Any]] = []
    expected = first
    while expected <= last:
        page = (await conn.execute(
            sa.select(*_ROW_COLUMNS).where(u.c.seq >= expected, u.c.seq <= last)
            .order_by(u.c.seq).limit(_READ_PAGE)
        )).mappings().all()
        if not page:
            break
        for row in page:
            seq = int(row["seq"])
            if seq != expected:
                raise ArchiveError(f"audit record #{expected} is missing (next is #{seq}); "
                                   "not archiving a broken chain: run `lockgate audit verify`")
            if link(prev, seq, row) != row["chain_hash"]:
                raise ArchiveError(f"audit record #{seq} does not match its hash; not "
                                   "archiving a broken chain: run `lockgate audit verify`")
            prev = row["chain_hash"]
            rows.append(row)
            expected += 1
    if expected <= last:
        raise ArchiveError(f"audit record #{expected} is missing; not archiving a broken "
                           "chain: run `lockgate audit verify`")
    return rows


async def _lock_head(conn: AsyncConnection) -> None:
    stmt = sa.select(audit_chain.c.seq).where(audit_chain.c.id == 1)
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    await conn.execute(stmt)


async def archive_audit(
    store: Store,
    directory: Path,
    *,
    max_age: timedelta | None = None,
    max_rows: int | None = None,
    file_rows: int = 100_000,
    now: datetime | None = None,
) -> ArchiveReport:
    """Archive the audit rows the policy says are old; see the module docstring."""
    if max_age is None and max_rows is None:
        raise ValueError("give max_age, max_rows or both")
    if file_rows < 1:
        raise ValueError("file_rows must be positive")
    now = now or datetime.now(UTC)
    report = ArchiveReport()
    async with store.engine.connect() as conn:
        base, prev = await archived_base(conn)
        head = await chain_head(conn)
        cut = await _cut(conn, base, head[0] if head else 0, max_age, max_rows, now)
    report.base_seq = base
    while base < cut:
        last = min(cut, base + file_rows)
        async with store.engine.connect() as conn:
            try:
                rows = await _read_range(conn, base + 1, last, prev)
            except ArchiveError:
                if (await archived_base(conn))[0] == base:
                    raise
                # rows gone because another archiver took them meanwhile: its work, not ours
                report.stopped = _MOVED
                return report
        try:
            path = _write_file(directory, rows, prev)
            digest = _file_sha256(path)
        except OSError as exc:
            raise ArchiveError(f"cannot write the audit archive in {directory}: {exc}") from exc
        times = [_utc(r["created_at"]) for r in rows]
        entry = ArchivedFile(
            first_seq=base + 1, last_seq=last, prev_hash=prev, last_hash=rows[-1]["chain_hash"],
            rows=len(rows), file=path.name, sha256=digest, oldest_at=min(times),
            newest_at=max(times), created_at=datetime.now(UTC),
        )
        async with store.transaction(write=True) as conn:
            await _lock_head(conn)
            if (await archived_base(conn))[0] != base:
                report.stopped = _MOVED
                return report
            await conn.execute(a.insert().values(
                first_seq=entry.first_seq, last_seq=entry.last_seq, prev_hash=entry.prev_hash,
                last_hash=entry.last_hash, rows=entry.rows, file=entry.file,
                sha256=entry.sha256, oldest_at=entry.oldest_at, newest_at=entry.newest_at,
                created_at=entry.created_at,
            ))
            await conn.execute(u.delete().where(u.c.seq > base, u.c.seq <= last))
        report.files.append(entry)
        base, prev = last, entry.last_hash
        report.base_seq = base
    return report


# ------------------------------------------------------------------ verification


def verify_archives(
    directory: Path, entries: list[ArchivedFile], *, anchor: tuple[int, str] | None = None,
    read_files: bool = True,
) -> ArchiveVerdict:
    """Check every archive file against its ``audit_archives`` row and the chain.

    The rows must cover ``#1..#base`` without gaps, each starting from the previous one's
    ``last_hash``; each file must be there, have the recorded sha256 and header, and every
    record in it must link to the one before. ``read_files=False`` checks only the rows
    (``--live-only``). ``anchor_seen`` tells whether ``anchor`` fell in the archived part
    (and matched; a mismatch is a problem).
    """
    prev, expected, count = GENESIS, 1, 0
    anchor_seen = False

    def bad(problem: str) -> ArchiveVerdict:
        return ArchiveVerdict(False, count, len(entries), expected - 1, prev, problem,
                              anchor_seen)

    for entry in entries:
        span = f"records #{entry.first_seq}..#{entry.last_seq}"
        if entry.first_seq != expected or entry.prev_hash != prev:
            return bad(f"archive {entry.file} ({span}) does not continue the chain at "
                       f"#{expected}: archived records are missing or were replaced")
        if read_files:
            problem = _check_file(directory / entry.file, entry, anchor)
            if problem is not None:
                return bad(problem)
            if anchor is not None and entry.first_seq <= anchor[0] <= entry.last_seq:
                anchor_seen = True
        count += entry.rows
        expected, prev = entry.last_seq + 1, entry.last_hash
    return ArchiveVerdict(True, count, len(entries), expected - 1, prev, None, anchor_seen)


def _check_file(path: Path, entry: ArchivedFile, anchor: tuple[int, str] | None) -> str | None:
    span = f"records #{entry.first_seq}..#{entry.last_seq}"
    if not path.is_file():
        return f"archive file {path} ({span}) is missing"
    if _file_sha256(path) != entry.sha256:
        return f"archive file {path.name} ({span}) was changed: its sha256 does not match"
    try:
        rows = read_archive(path)
        header = next(rows)
        want = {"first_seq": entry.first_seq, "last_seq": entry.last_seq,
                "prev_hash": entry.prev_hash, "last_hash": entry.last_hash, "rows": entry.rows}
        if {k: header.get(k) for k in want} != want:
            return f"archive file {path.name} ({span}): its header does not match its record"
        prev, expected = entry.prev_hash, entry.first_seq
        for row in rows:
            seq = int(row["seq"])
            if seq != expected:
                return f"archive file {path.name}: record #{expected} is missing"
            if link(prev, seq, row) != row["chain_hash"]:
                return (f"archived record #{seq} (request {row['request_id']}) was edited: "
                        "its hash does not match")
            if anchor is not None and seq == anchor[0] and row["chain_hash"] != anchor[1]:
                return (f"archived record #{seq} (request {row['request_id']}) does not match "
                        "the anchor: the chain was rewritten from here or earlier")
            prev = row["chain_hash"]
            expected += 1
    except (OSError, ValueError, KeyError, TypeError, EOFError, StopIteration) as exc:
        return f"archive file {path.name} ({span}) cannot be read: {exc}"
    if expected != entry.last_seq + 1 or prev != entry.last_hash:
        return f"archive file {path.name} ({span}) ends early or its last hash does not match"
    return None


@dataclass(frozen=True, slots=True)
class AuditVerdict:
    """Archived and live parts of the chain, verified together (:func:`verify_audit`)."""

    ok: bool
    archived: int
    """Archived records checked (or only counted, when the files were not read)."""
    files: int
    live: int
    head_seq: int
    head_hash: str
    problem: str | None = None
    files_read: bool = True

    @property
    def records(self) -> int:
        return self.archived + self.live

    def line(self) -> str:
        if not self.ok:
            return f"TAMPERED: {self.problem}"
        head = f"(head {self.head_seq}:{self.head_hash})"
        if not self.files:
            return f"ok, {self.live} records {head}"
        if not self.files_read:
            return (f"ok, {self.live} live records after #{self.head_seq - self.live}; "
                    f"{self.archived} archived records in {self.files} file(s) NOT read "
                    f"(--live-only) {head}")
        return (f"ok, {self.records} records ({self.archived} archived in {self.files} "
                f"file(s), {self.live} live) {head}")


async def verify_audit(
    conn: AsyncConnection, directory: Path, *, anchor: tuple[int, str] | None = None,
    read_files: bool = True,
) -> AuditVerdict:
    """The archive files (:func:`verify_archives`), then the live rows from the archived base
    (:func:`~lockgate.store.chain.verify_chain`), in one snapshot on PostgreSQL."""
    if conn.dialect.name == "postgresql" and not conn.in_transaction():
        await conn.execution_options(isolation_level="REPEATABLE READ")
    entries = await list_archives(conn)
    verdict = await asyncio.to_thread(verify_archives, directory, entries, anchor=anchor,
                                      read_files=read_files)
    if not verdict.ok:
        return AuditVerdict(False, verdict.records, verdict.files, 0, verdict.base_seq,
                            verdict.base_hash, verdict.problem, read_files)
    live = await verify_chain(conn, anchor=anchor, base=(verdict.base_seq, verdict.base_hash))
    if live.ok and anchor is not None and anchor[0] <= verdict.base_seq and read_files \
            and not verdict.anchor_seen and anchor[0] > 0:
        return AuditVerdict(False, verdict.records, verdict.files, live.records, live.head_seq,
                            live.head_hash, f"anchor record #{anchor[0]} is missing",
                            read_files)
    return AuditVerdict(live.ok, verdict.records, verdict.files, live.records, live.head_seq,
                        live.head_hash, live.problem, read_files)
