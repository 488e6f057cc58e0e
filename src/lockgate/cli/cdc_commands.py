"""``lockgate cdc install|uninstall|list|run|dead``: change-data-capture on a database."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path

import orjson
import typer

from lockgate.cdc import (
    CdcConsumer,
    CdcLedger,
    CdcSqlError,
    Destination,
    install_capture,
    open_database,
    task_transform,
)
from lockgate.cdc.consumer import ON_DELETE
from lockgate.cdc.database import CdcDatabase, open_capture
from lockgate.cli.common import ConfigOption, console, fail, get_config
from lockgate.errors import ConfigError
from lockgate.jobs.tasks import TaskError
from lockgate.settings import Config
from lockgate.store import StoreError

__all__ = ["cdc_app"]

cdc_app = typer.Typer(help="Change-data-capture: database changes become AI tasks.",
                      no_args_is_help=True)

DsnOption = typer.Option(..., "--dsn", help="postgresql://... or mysql://user@host/db",
                         envvar="LOCKGATE_CDC_DSN")

_DB_ERRORS: tuple[type[BaseException], ...] = (OSError, CdcSqlError, ValueError)


def _db_errors() -> tuple[type[BaseException], ...]:
    errors = list(_DB_ERRORS)
    with contextlib.suppress(ImportError):
        import asyncpg

        errors.append(asyncpg.PostgresError)
        errors.append(asyncpg.InterfaceError)
    with contextlib.suppress(ImportError):
        import pymysql

        errors.append(pymysql.err.MySQLError)
    return tuple(errors)


def _run(coro: object) -> object:
    try:
        return asyncio.run(coro)  # type: ignore[arg-type]
    except (ConfigError, StoreError, TaskError) as exc:
        fail(str(exc))
    except _db_errors() as exc:
        fail(f"{type(exc).__name__}: {exc}".splitlines()[0])


@cdc_app.command("install")
def install(
    dsn: str = DsnOption,
    table: str = typer.Option(..., "--table", "-t"),
    columns: str = typer.Option(..., "--columns", help="Watched columns, comma-separated."),
    name: str | None = typer.Option(None, "--name", help="Capture name (default: the table)."),
    key: str | None = typer.Option(None, "--key", help="Row key columns (default: the PK)."),
    where: str | None = typer.Option(None, "--where", help="SQL condition on the new row."),
    source: str = typer.Option("trigger", "--source",
                               help="trigger (outbox) or wal2json (PostgreSQL logical decoding)"),
    ops: str = typer.Option("insert,update", "--ops",
                            help="Captured operations: insert,update,delete (any subset)."),
) -> None:
    """Install triggers + outbox (+ NOTIFY on PostgreSQL) for a table."""
    cols = [c.strip() for c in columns.split(",") if c.strip()]
    keys = [c.strip() for c in key.split(",") if c.strip()] if key else None
    capture = name or table.split(".")[-1]

    async def go() -> None:
        db = open_database(dsn, source=source)
        await db.open()
        try:
            spec = await install_capture(db, capture, table, cols, key=keys, where=where,
                                         ops=ops)
        finally:
            await db.aclose()
        console.print(f"installed capture '{spec.name}' on {spec.table} ({db.kind}): columns "
                      f"{', '.join(spec.columns)}; key {', '.join(spec.key)}; "
                      f"ops {','.join(spec.ops).lower()}"
                      + (f"; where {spec.where}" if spec.where else ""),
                      highlight=False, soft_wrap=True)

    _run(go())


@cdc_app.command("uninstall")
def uninstall(
    dsn: str = DsnOption,
    name: str | None = typer.Option(None, "--name", help="One capture (default: all)."),
) -> None:
    """Remove the triggers, functions and outbox that install added."""

    async def go() -> None:
        db = open_database(dsn)
        await db.open()
        try:
            removed = await db.uninstall(name)
        finally:
            await db.aclose()
        if name and not removed:
            fail(f"no capture '{name}' is installed")
        console.print(f"removed: {', '.join(removed) or 'nothing was installed'}",
                      highlight=False, soft_wrap=True)

    _run(go())


@cdc_app.command("list")
def list_captures(dsn: str = DsnOption) -> None:
    """Installed captures and their outbox depth."""

    async def go() -> None:
        from lockgate.cdc.postgres import PostgresCdc

        db = open_database(dsn)
        await db.open()
        try:
            for spec in await db.captures():
                if spec.source == "wal2json" and isinstance(db, PostgresCdc):
                    st = await db.wal_status(spec.name)
                    state = f"leader={st['leader'] or '-'} slot_lag_bytes={st['lag_bytes']}"
                else:
                    state = f"pending={await db.depth(spec)}"
                console.print(f"{spec.name}: {spec.table} columns={','.join(spec.columns)} "
                              f"key={','.join(spec.key)} where={spec.where or '-'} "
                              f"ops={','.join(spec.ops).lower()} source={spec.source} {state}",
                              highlight=False, soft_wrap=True)
        finally:
            await db.aclose()

    _run(go())


@cdc_app.command("run")
def run(
    dsn: str | None = typer.Option(None, "--dsn", envvar="LOCKGATE_CDC_DSN"),
    capture: str | None = typer.Option(None, "--capture",
                                       help="The capture name (none: the config's cdc:)."),
    task: str | None = typer.Option(None, "--task", help="Task (jobs.tasks or a built-in)."),
    select: str | None = typer.Option(None, "--select", help="Output field to write."),
    write_column: str | None = typer.Option(None, "--write-column"),
    side_table: str | None = typer.Option(None, "--side-table"),
    event: str | None = typer.Option(None, "--event", help="Events URL (nats/redis/amqp)."),
    concurrency: int = typer.Option(8, "--concurrency", min=1, max=256),
    lease: float = typer.Option(60.0, "--lease", min=0.1),
    max_attempts: int = typer.Option(5, "--max-attempts", min=1, max=100),
    poll: float = typer.Option(1.0, "--poll", min=0.01, help="Polling interval (seconds)."),
    backoff: float = typer.Option(1.0, "--backoff", min=0.01),
    once: bool = typer.Option(False, "--once", help="Stop when nothing is ready."),
    on_delete: str = typer.Option("remove", "--on-delete",
                                  help="A captured DELETE: remove (the side table's results of "
                                       "the row), mark (a tombstone row), task (run the task "
                                       "on the old values); events say 'deleted'."),
    config: Path | None = ConfigOption,
) -> None:
    """Consume a capture: each change -> the task through the pipeline -> write-back/event.
    Without --capture: every consumer of the config's ``cdc:`` until Ctrl-C."""
    cfg = get_config(config)
    if capture is None:
        if not cfg.cdc:
            fail("give --capture (with --dsn and --task) or configure 'cdc:' consumers", 2)
        _run(_run_configured(cfg))
        return
    if dsn is None or task is None:
        fail("--capture needs --dsn and --task", 2)
    if sum(x is not None for x in (write_column, side_table, event)) != 1:
        fail("give exactly one of --write-column, --side-table, --event", 2)
    if on_delete not in ON_DELETE:
        fail(f"--on-delete '{on_delete}': remove, mark or task", 2)

    async def go() -> None:
        from lockgate.events.transports import open_transport
        from lockgate.runtime import Runtime

        runtime = await Runtime.start(cfg, jobs=False, warm_up=False)
        sink = open_transport(event, group=f"cdc-{capture}") if event else None
        db: CdcDatabase | None = None
        try:
            db, spec = await open_capture(dsn, capture, pool_size=concurrency + 2)
            consumer = CdcConsumer(
                db, CdcLedger(runtime.store.engine), spec,
                task_transform(runtime.task_runner("cdc"), task, select),
                Destination(column=write_column, side_table=side_table, event=sink),
                concurrency=concurrency, lease=lease, max_attempts=max_attempts,
                poll_interval=poll, backoff_base=backoff,
                on_delete=on_delete)  # type: ignore[arg-type]  # checked above
            if once:
                stats = await consumer.drain()
            else:
                stop = asyncio.Event()
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGINT, signal.SIGTERM):
                    with contextlib.suppress(NotImplementedError):
                        loop.add_signal_handler(sig, stop.set)
                console.print(f"consuming capture '{capture}' ({spec.source}); Ctrl-C to stop",
                              highlight=False, soft_wrap=True)
                stats = await consumer.run(stop)
            console.print(f"applied={stats.applied} duplicates={stats.duplicates} "
                          f"retries={stats.retries} dead={stats.dead}",
                          highlight=False, soft_wrap=True)
        finally:
            if sink is not None:
                with contextlib.suppress(Exception):
                    await sink.aclose()
            if db is not None:
                await db.aclose()
            await runtime.aclose()

    _run(go())


async def _run_configured(cfg: Config) -> None:
    from lockgate.cdc.service import run_configured
    from lockgate.runtime import Runtime

    runtime = await Runtime.start(cfg, jobs=False, warm_up=False)
    try:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        console.print(f"consuming {len(cfg.cdc)} configured capture(s); Ctrl-C to stop",
                      highlight=False, soft_wrap=True)
        for stats in await run_configured(runtime, list(cfg.cdc), stop):
            console.print(f"applied={stats.applied} duplicates={stats.duplicates} "
                          f"retries={stats.retries} dead={stats.dead}",
                          highlight=False, soft_wrap=True)
    finally:
        await runtime.aclose()


@cdc_app.command("dead")
def dead(
    capture: str | None = typer.Option(None, "--capture"),
    limit: int = typer.Option(100, "--limit", min=1, max=10_000),
    config: Path | None = ConfigOption,
) -> None:
    """The dead-letter list: changes that failed for good (JSON lines)."""
    cfg = get_config(config)

    async def go() -> None:
        from lockgate.store import Store

        store = await Store.open(cfg.effective_database_url)
        try:
            for row in await CdcLedger(store.engine).dead_list(capture, limit):
                print(orjson.dumps(row).decode())
        finally:
            await store.close()

    _run(go())
