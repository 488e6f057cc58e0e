"""``lockgate audit verify|archive|tail|show``: the tamper-evident audit chain from the CLI.

``archive`` moves old records to compressed JSONL files (:mod:`lockgate.store.archive`,
policy from ``audit.retention`` or ``--max-age-days`` / ``--max-rows``); ``verify`` then
checks the archive files and the live rows as one chain.

``verify`` walks the hash chain (:mod:`lockgate.store.chain`) and prints
``ok, N records (head SEQ:HASH)`` (exit 0) or one line naming the first edited,
deleted or inserted record (exit 1). Keep the printed head somewhere else and
pass it back as ``--anchor SEQ:HASH`` to also detect a rewritten chain.

Mounted as ``app.add_typer(audit_app, name="audit")`` in ``lockgate/cli/app.py``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
import typer
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError

from lockgate.cli.admin_commands import with_store as _with_store
from lockgate.cli.common import ConfigOption, console, fail, get_config
from lockgate.settings import Config
from lockgate.settings.audit_retention import DEFAULT_ARCHIVE_DIR
from lockgate.store import Store, StoreError
from lockgate.store.archive import ArchiveReport, AuditVerdict, archive_audit, verify_audit
from lockgate.store.chain import get_chained_record
from lockgate.store.tables import usage_records

__all__ = ["audit_app"]

audit_app = typer.Typer(help="Tamper-evident audit log (hash chain).", no_args_is_help=True)


T = TypeVar("T")


def with_store(config: Config, fn: Callable[[Store], Awaitable[T]]) -> T:
    """Run ``fn`` against the configured store; database errors end as one line, exit 1."""
    try:
        return _with_store(config, fn)
    except StoreError as exc:
        fail(str(exc))
    except SQLAlchemyError as exc:
        fail(f"database error: {str(getattr(exc, 'orig', None) or exc).strip().splitlines()[0]}")


def _anchor(text: str | None) -> tuple[int, str] | None:
    if text is None:
        return None
    seq, sep, digest = text.partition(":")
    seq = seq.strip()
    if not sep or not (seq.isascii() and seq.isdigit()) or len(digest.strip()) != 64:
        fail("--anchor must be SEQ:HASH as printed by `lockgate audit verify`", 2)
    return int(seq), digest.strip().lower()


def _archive_dir(cfg: Config, given: Path | None) -> Path:
    if given is not None:
        return given
    retention = cfg.audit.retention
    if retention is not None:
        return retention.directory(cfg.home_path)
    return cfg.home_path / DEFAULT_ARCHIVE_DIR


@audit_app.command("verify")
def verify(
    anchor: str | None = typer.Option(
        None, "--anchor", help="SEQ:HASH saved from an earlier verify; must still match."
    ),
    archive_dir: Path | None = typer.Option(
        None, "--archive-dir", help="Where the archive files are (default: audit.retention's "
        "archive_dir, else <home>/audit-archive)."),
    live_only: bool = typer.Option(
        False, "--live-only", help="Do not read the archive files; check the live rows from "
        "the archived base (and that the archive rows are contiguous)."),
    config: Path | None = ConfigOption,
) -> None:
    """Walk the audit hash chain, archived files and live rows; report the first edited,
    deleted or inserted record."""
    cfg = get_config(config)
    expected = _anchor(anchor)
    directory = _archive_dir(cfg, archive_dir)

    async def go(store: Store) -> AuditVerdict:
        async with store.engine.connect() as conn:
            return await verify_audit(conn, directory, anchor=expected,
                                      read_files=not live_only)

    report = with_store(cfg, go)
    if not report.ok:
        fail(report.line())
    console.print(report.line(), highlight=False, soft_wrap=True)


@audit_app.command("archive")
def archive(
    max_age_days: float | None = typer.Option(
        None, "--max-age-days", min=0.0, help="Archive records older than this (default: "
        "audit.retention.max_age_days)."),
    max_rows: int | None = typer.Option(
        None, "--max-rows", min=0, help="Keep at most this many live records (default: "
        "audit.retention.max_rows)."),
    archive_dir: Path | None = typer.Option(None, "--archive-dir", help="Where to write."),
    file_rows: int | None = typer.Option(None, "--file-rows", min=1,
                                         help="Records per file at most (default 100000)."),
    config: Path | None = ConfigOption,
) -> None:
    """Move old audit records to compressed JSONL files; `audit verify` still proves them."""
    cfg = get_config(config)
    retention = cfg.audit.retention
    if max_age_days is None and max_rows is None:
        if retention is None:
            fail("nothing to do: give --max-age-days or --max-rows (or set audit.retention)", 2)
        max_age_days, max_rows = retention.max_age_days, retention.max_rows
    directory = _archive_dir(cfg, archive_dir)
    rows_per_file = file_rows or (retention.file_rows if retention else 100_000)

    async def go(store: Store) -> ArchiveReport:
        return await archive_audit(
            store, directory,
            max_age=timedelta(days=max_age_days) if max_age_days is not None else None,
            max_rows=max_rows, file_rows=rows_per_file)

    report = with_store(cfg, go)
    console.print(report.line() + (f" in {directory}" if report.files else ""),
                  highlight=False, soft_wrap=True)


@audit_app.command("tail")
def tail(
    n: int = typer.Option(20, "--lines", "-n", min=1, max=10_000, help="How many records."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
    config: Path | None = ConfigOption,
) -> None:
    """The newest audit records in chain order (oldest of them first)."""
    cfg = get_config(config)
    u = usage_records
    cols = (u.c.seq, u.c.request_id, u.c.created_at, u.c.key_id, u.c.team_id, u.c.model,
            u.c.deployment, u.c.status, u.c.error_class, u.c.prompt_tokens,
            u.c.completion_tokens, u.c.cost, u.c.chain_hash)

    async def go(store: Store) -> list[dict[str, Any]]:
        async with store.engine.connect() as conn:
            stmt = sa.select(*cols).order_by(u.c.seq.desc().nulls_first()).limit(n)
            return [dict(r) for r in (await conn.execute(stmt)).mappings()][::-1]

    rows = with_store(cfg, go)
    if as_json:
        for row in rows:
            row["created_at"] = row["created_at"].isoformat()
            print(json.dumps(row))
        return
    table = Table("seq", "request", "time (UTC)", "team", "model", "status", "tokens", "cost",
                  "hash")
    for r in rows:
        table.add_row(
            "-" if r["seq"] is None else str(r["seq"]), r["request_id"],
            r["created_at"].strftime("%Y-%m-%d %H:%M:%S"), r["team_id"] or "", r["model"],
            str(r["status"]) + (f" {r['error_class']}" if r["error_class"] else ""),
            f"{r['prompt_tokens']}+{r['completion_tokens']}", f"{r['cost']:.6f}",
            (r["chain_hash"] or "")[:12],
        )
    console.print(table)


@audit_app.command("show")
def show(request_id: str, config: Path | None = ConfigOption) -> None:
    """One audit record as JSON, with its chain position and whether its link checks out."""
    cfg = get_config(config)

    async def go(store: Store) -> dict[str, Any] | None:
        async with store.engine.connect() as conn:
            return await get_chained_record(conn, request_id)

    row = with_store(cfg, go)
    if row is None:
        fail(f"no audit record for request '{request_id}'")
    row["created_at"] = row["created_at"].isoformat()
    print(json.dumps(row, indent=2, default=str))
