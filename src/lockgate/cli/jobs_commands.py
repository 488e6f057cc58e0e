"""``lockgate worker|jobs|dlq|batch|consume``: the asynchronous side of lockgate.

Mounted in the root app (cli/app.py)::

    from lockgate.cli.jobs_commands import batch_app, consume, dlq_app, jobs_app, worker
    app.command()(worker)
    app.command()(consume)
    app.add_typer(jobs_app, name="jobs")
    app.add_typer(dlq_app, name="dlq")
    app.add_typer(batch_app, name="batch")

The queue comes from ``jobs.queue_url`` in the config (or ``LOCKGATE_QUEUE_URL``,
or ``--queue``); default: a SQLite file under the lockgate home.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from lockgate.cli.common import ConfigOption, console, fail, get_config
from lockgate.errors import GatewayError
from lockgate.interpreter import settle_after_startup
from lockgate.jobs.backends import open_queue
from lockgate.jobs.queue import JobQueue, queue_options
from lockgate.jobs.taskspec import task_specs
from lockgate.settings import Config

__all__ = ["batch_app", "consume", "dlq_app", "jobs_app", "worker"]

T = TypeVar("T")

QueueOption = typer.Option(
    None, "--queue", "-q", help="Queue URL (overrides jobs.queue_url / LOCKGATE_QUEUE_URL)."
)

dlq_app = typer.Typer(
    help="The dead-letter queue: jobs that used up their attempts.", no_args_is_help=True
)
jobs_app = typer.Typer(help="Submit and inspect jobs.", no_args_is_help=True)
batch_app = typer.Typer(help="Run a task over a file of records.", no_args_is_help=True)


def _queue(cfg: Config, url: str | None) -> JobQueue:
    settings = cfg.jobs
    url = url or settings.effective_queue_url(cfg.effective_database_url, cfg.home_path)
    return open_queue(url, queue_options(settings))


def _with_queue(cfg: Config, url: str | None, fn: Callable[[JobQueue], Awaitable[T]]) -> T:
    async def go() -> T:
        q = _queue(cfg, url)
        await q.open()
        try:
            return await fn(q)
        finally:
            await q.aclose()

    try:
        return asyncio.run(go())
    except GatewayError as exc:
        fail(exc.message)
    except (OSError, ValueError) as exc:
        fail(f"job queue: {exc}")


def _audit(cfg: Config, action: str, target: str, changes: dict[str, object]) -> None:
    """An administrator's DLQ action as a row in the audit chain (actor ``cli:<user>``)."""
    from lockgate.cli.admin_commands import audit_admin, with_store
    from lockgate.store import Store

    async def go(store: Store) -> None:
        await audit_admin(store, action, target=target, changes=changes)

    with_store(cfg, go)


def _ts(value: float | None) -> str:
    return datetime.fromtimestamp(value).strftime("%Y-%m-%d %H:%M:%S") if value else ""


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)


# ------------------------------------------------------------------ worker


def worker(
    concurrency: int | None = typer.Option(None, "--concurrency", "-n", help="Jobs in flight."),
    lease: float | None = typer.Option(None, "--lease", help="Lease (visibility timeout), s."),
    queue: str | None = QueueOption,
    config: Path | None = ConfigOption,
) -> None:
    """Run jobs from the queue until SIGTERM/SIGINT (then finish or return in-flight jobs);
    also the event consumers listed under ``events.consumers`` in the config."""
    from lockgate.runtime import Runtime

    cfg = get_config(config)

    async def go() -> None:
        try:
            rt = await Runtime.start(cfg, queue_url=queue, monitor=True)
        except Exception as exc:  # an unreachable queue/broker/database: one line, exit 1
            fail(f"cannot start the worker: {type(exc).__name__}: {exc}")
        consumers = None
        try:
            w = rt.new_worker(concurrency, lease)
            settle_after_startup()  # as the gateway does: gc.freeze(), GIL interval
            stop = asyncio.Event()
            _stop_on_signals(stop)
            if cfg.events.consumers and rt.review is not None:
                from lockgate.events.embedded import EmbeddedConsumers

                consumers = EmbeddedConsumers.start(cfg.events.consumers,
                                                    rt.task_runner("events"), rt.review)
            console.print(f"worker {w.worker_id}: {w.concurrency} concurrent"
                          + (f", {len(consumers.running)} event consumer(s)" if consumers
                             else ""), highlight=False)
            cdc = None
            if cfg.cdc:  # change-data-capture consumers of the config (lockgate.cdc)
                from lockgate.cdc.service import run_configured

                cdc = asyncio.create_task(run_configured(rt, list(cfg.cdc), stop))
            stats = await w.run(stop)
            if cdc is not None:
                stop.set()
                await cdc
        finally:
            if consumers is not None:
                await consumers.stop()
            await rt.aclose()
        console.print(
            f"stopped: {stats.completed} completed, {stats.retried} retried, {stats.dead} "
            f"dead-lettered, {stats.released} returned to the queue",
            highlight=False,
        )

    asyncio.run(go())


# ------------------------------------------------------------------ jobs


@jobs_app.command("submit")
def jobs_submit(
    task: str,
    input_json: str = typer.Argument(..., help="The job input as JSON."),
    idempotency_key: str | None = typer.Option(None, "--idempotency-key"),
    partition_key: str | None = typer.Option(None, "--partition-key"),
    priority: int = typer.Option(0, "--priority"),
    webhook_url: str | None = typer.Option(None, "--webhook-url"),
    queue: str | None = QueueOption,
    config: Path | None = ConfigOption,
) -> None:
    """Queue one job; prints its id."""
    from lockgate.jobs.submission import job_service
    from lockgate.settings import resolve_secret

    cfg = get_config(config)
    try:
        data = json.loads(input_json)
    except json.JSONDecodeError as exc:
        fail(f"input is not JSON: {exc}")

    async def go(q: JobQueue) -> Any:
        settings = cfg.jobs
        secret = resolve_secret(settings.webhook_secret, "jobs.webhook_secret")
        svc = job_service(q, settings, task_specs(settings), secret=secret)
        return await svc.submit(
            task,
            data,
            idempotency_key=idempotency_key,
            partition_key=partition_key,
            priority=priority,
            webhook_url=webhook_url,
        )

    res = _with_queue(cfg, queue, go)
    console.print(
        f"{res.job.id} {'queued' if res.created else 'exists: ' + res.job.state}", highlight=False
    )


@jobs_app.command("show")
def jobs_show(
    job_id: str, queue: str | None = QueueOption, config: Path | None = ConfigOption
) -> None:
    """A job's status, attempts, errors and result (JSON)."""
    cfg = get_config(config)
    job = _with_queue(cfg, queue, lambda q: q.get(job_id))
    print(json.dumps(job.public(), indent=2, default=str))


@jobs_app.command("cancel")
def jobs_cancel(
    job_id: str, queue: str | None = QueueOption, config: Path | None = ConfigOption
) -> None:
    """Cancel a waiting or running job."""
    cfg = get_config(config)
    job = _with_queue(cfg, queue, lambda q: q.cancel(job_id))
    console.print(f"{job.id}: {job.state}", highlight=False)


@jobs_app.command("stats")
def jobs_stats(queue: str | None = QueueOption, config: Path | None = ConfigOption) -> None:
    """Depth, oldest waiting job, in flight, DLQ size."""
    cfg = get_config(config)
    st = _with_queue(cfg, queue, lambda q: q.stats())
    print(
        json.dumps(
            {
                "depth": st.depth,
                "oldest_age_seconds": round(st.oldest_age, 3),
                "in_flight": st.in_flight,
                "dlq": st.dlq,
            }
        )
    )


# ------------------------------------------------------------------ dlq


@dlq_app.command("list")
def dlq_list(
    limit: int = typer.Option(50, "--limit"),
    queue: str | None = QueueOption,
    config: Path | None = ConfigOption,
) -> None:
    """Dead jobs, newest first."""
    cfg = get_config(config)
    jobs = _with_queue(cfg, queue, lambda q: q.dlq_list(limit))
    table = Table()
    table.add_column("id", no_wrap=True, min_width=max([len(j.id) for j in jobs] or [2]))
    for name in ("task", "attempts", "died", "last error"):
        table.add_column(name)
    for j in jobs:
        table.add_row(j.id, j.task, str(j.attempts), _ts(j.finished_at), (j.last_error or "")[:80])
    console.print(table)


@dlq_app.command("show")
def dlq_show(
    job_id: str, queue: str | None = QueueOption, config: Path | None = ConfigOption
) -> None:
    """One dead job with every error and its input."""
    cfg = get_config(config)
    job = _with_queue(cfg, queue, lambda q: q.get(job_id))
    print(json.dumps({**job.public(), "input": job.input}, indent=2, default=str))


@dlq_app.command("retry")
def dlq_retry(
    job_id: str, queue: str | None = QueueOption, config: Path | None = ConfigOption
) -> None:
    """Put a dead job back in the queue (attempts reset)."""
    cfg = get_config(config)
    job = _with_queue(cfg, queue, lambda q: q.dlq_retry(job_id))
    _audit(cfg, "dlq.retry", job_id, {"state": job.state})
    console.print(f"{job.id}: {job.state}", highlight=False)


@dlq_app.command("purge")
def dlq_purge(
    job_id: str | None = typer.Argument(None, help="One job; omit to purge all dead jobs."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask."),
    queue: str | None = QueueOption,
    config: Path | None = ConfigOption,
) -> None:
    """Delete dead jobs for good."""
    cfg = get_config(config)
    if job_id is None and not yes and not typer.confirm("Delete every dead job?"):
        raise typer.Exit(1)
    n = _with_queue(cfg, queue, lambda q: q.dlq_purge(job_id))
    _audit(cfg, "dlq.purge", job_id or "*", {"purged": n})
    console.print(f"purged {n} dead job(s)", highlight=False)


@dlq_app.command("webhooks")
def dlq_webhooks(
    limit: int = typer.Option(50, "--limit"),
    queue: str | None = QueueOption,
    config: Path | None = ConfigOption,
) -> None:
    """Dead-lettered completion webhooks (attempts used up, or refused), newest first."""
    cfg = get_config(config)
    dead = _with_queue(cfg, queue, lambda q: q.webhook_dlq_list(limit))
    table = Table()
    for name in ("delivery id", "job", "event", "attempts", "last error"):
        table.add_column(name, no_wrap=name in ("delivery id", "job"))
    for d in dead:
        table.add_row(d.id, d.job_id, d.event, str(d.attempts), (d.last_error or "")[:80])
    console.print(table)


@dlq_app.command("webhook-retry")
def dlq_webhook_retry(
    delivery_id: str, queue: str | None = QueueOption, config: Path | None = ConfigOption
) -> None:
    """Send a dead-lettered webhook again (same delivery id; a worker delivers it)."""
    cfg = get_config(config)
    d = _with_queue(cfg, queue, lambda q: q.webhook_dlq_retry(delivery_id))
    console.print(f"{d.id} ({d.job_id}, {d.event}): {d.state}", highlight=False)


# ------------------------------------------------------------------ batch


@batch_app.command("run")
def batch_run(
    input_path: Path = typer.Argument(..., exists=True, dir_okay=False, help=".jsonl or .csv"),
    task: str = typer.Option(..., "--task", "-t"),
    out: Path = typer.Option(..., "--out", "-o", help="Results, one JSON line per record."),
    rejects: Path | None = typer.Option(None, "--rejects", help="Default: OUT.rejects.jsonl"),
    concurrency: int = typer.Option(8, "--concurrency", "-n", min=1),
    id_field: str = typer.Option("id", "--id-field"),
    confirm_above: float = typer.Option(
        1.0, "--confirm-above", help="Ask before running when the estimate exceeds this cost."
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask."),
    wait_reviews: float = typer.Option(
        0.0, "--wait-reviews", min=0.0,
        help="Seconds to wait for reviewers' decisions on records the task's review "
        "policy parked (default: do not wait; run the same command again later).",
    ),
    config: Path | None = ConfigOption,
) -> None:
    """Run TASK over every record; a killed run resumes where it stopped (same command).

    Records the task's review policy sends to a person await review (in neither file);
    the same command run again after the decisions writes them, exactly once."""
    from lockgate.jobs.batch import done_indexes, estimate_record_tokens, read_records, run_batch
    from lockgate.runtime import Runtime

    cfg = get_config(config)
    settings = cfg.jobs
    specs = task_specs(settings)
    if task not in specs:
        fail(f"unknown task '{task}' (known: {', '.join(sorted(specs))})")
    spec = specs[task]
    rejects_path = rejects or out.with_name(out.name.removesuffix(".jsonl") + ".rejects.jsonl")
    model = spec.model or settings.default_model
    deployments = cfg.deployments_for(model)
    pricing = deployments[0].pricing if deployments else None
    done = done_indexes(out, rejects_path)
    todo = 0
    ptok = ctok = 0
    try:
        for i, rec in enumerate(read_records(input_path)):
            if i not in done:
                todo += 1
                p, c = estimate_record_tokens(spec, rec)
                ptok += p
                ctok += c
    except ValueError as exc:
        fail(str(exc))
    estimate = pricing.cost(ptok, ctok) if pricing else 0.0
    console.print(
        f"{todo} record(s) to run ({len(done)} already done); estimate ~{ptok + ctok} tokens, "
        f"~{estimate:.4f} cost",
        highlight=False,
    )
    if estimate > confirm_above and not yes and not typer.confirm("Run it?"):
        raise typer.Exit(1)

    async def go() -> Any:
        rt = await Runtime.start(cfg, jobs=False)
        runner = rt.task_runner("batch")
        try:
            with Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
                transient=True,
            ) as bar:
                bid = bar.add_task(task, total=todo)
                return await run_batch(
                    runner,
                    task,
                    input_path,
                    out,
                    rejects_path,
                    concurrency=concurrency,
                    id_field=id_field,
                    price=pricing.cost if pricing else None,
                    on_progress=lambda s: bar.update(
                        bid, completed=s.done + s.failed + s.awaiting_review),
                    review=rt.review,
                    wait_reviews=wait_reviews,
                )
        finally:
            await rt.aclose()

    started = time.perf_counter()
    summary = asyncio.run(go())
    console.print(
        f"done {summary.done}, failed {summary.failed} (rejects: {rejects_path}), skipped "
        f"{summary.skipped}, tokens {summary.prompt_tokens}+{summary.completion_tokens}, "
        f"cost {summary.cost:.4f}, {time.perf_counter() - started:.1f}s",
        highlight=False,
    )
    if summary.awaiting_review:
        console.print(
            f"{summary.awaiting_review} record(s) await review (lockgate review list --task "
            f"{task}); run the same command again after the decisions",
            highlight=False,
        )
    if summary.failed:
        raise typer.Exit(3)
    if summary.awaiting_review:
        raise typer.Exit(4)


# ------------------------------------------------------------------ consume


def consume(
    source: str = typer.Option(
        ...,
        "--source",
        help="nats://host:4222/subject, redis://host:6379/0/stream, amqp://user:pw@host/queue",
    ),
    task: str = typer.Option(..., "--task", "-t"),
    sink: str = typer.Option(..., "--sink", help="Where enriched events go (same URL forms)."),
    key_field: str | None = typer.Option(None, "--key-field", help="Per-key ordering field."),
    id_field: str = typer.Option("id", "--id-field", help="Event id field (dedup)."),
    group: str = typer.Option("lockgate", "--group", help="Consumer group / durable name."),
    concurrency: int = typer.Option(8, "--concurrency", "-n", min=1),
    max_attempts: int = typer.Option(3, "--max-attempts", min=1),
    lease: float = typer.Option(
        30.0, "--lease", help="Seconds before an unacknowledged event is redelivered."
    ),
    dedup: str | None = typer.Option(
        None,
        "--dedup",
        help="redis://host:6379/0 to share handled event ids across consumers "
        "and restarts (default: in memory).",
    ),
    config: Path | None = ConfigOption,
) -> None:
    """Enrich every event from SOURCE with TASK and publish it to SINK (until SIGTERM)."""
    from lockgate.events.consumer import EventConsumer
    from lockgate.events.review_gate import event_resumer, reviewed_enricher
    from lockgate.events.transports import open_transport
    from lockgate.runtime import Runtime

    cfg = get_config(config)

    async def go() -> None:
        rt = await Runtime.start(cfg, jobs=False)
        runner = rt.task_runner("events")
        src = open_transport(source, group=group, lease=lease)
        dst = src if sink == source else open_transport(sink, group=group, lease=lease)
        assert rt.review is not None
        enricher = reviewed_enricher(runner, task, rt.review, id_field=id_field)
        rt.review.resumers[f"events:{task}"] = event_resumer(src, dst, id_field)
        from lockgate.events.dedup import DedupStore, MemoryDedup, RedisDedup

        store: DedupStore = (
            RedisDedup(dedup, prefix=f"lockgate:events:{group}:seen") if dedup else MemoryDedup()
        )
        consumer = EventConsumer(
            src,
            dst,
            enricher,
            key_field=key_field,
            id_field=id_field,
            concurrency=concurrency,
            max_attempts=max_attempts,
            dedup=store,
            touch_every=max(0.2, lease / 3),
        )
        stop = asyncio.Event()
        _stop_on_signals(stop)
        # decided reviews of this task's events are published by this process's sweeper
        sweeper = asyncio.create_task(rt.review.run_sweeper(stop))
        try:
            await consumer.run(stop)
        finally:
            stop.set()
            await sweeper
            await src.aclose()
            if dst is not src:
                await dst.aclose()
            await store.aclose()
            await rt.aclose()
        console.print(f"stopped: {consumer.stats}", highlight=False)

    try:
        asyncio.run(go())
    except ValueError as exc:
        fail(str(exc))


def _standalone() -> typer.Typer:
    """An app with just these commands (tests run it before the root app mounts them)."""
    app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
    app.command()(worker)
    app.command()(consume)
    app.add_typer(jobs_app, name="jobs")
    app.add_typer(dlq_app, name="dlq")
    app.add_typer(batch_app, name="batch")
    return app


if __name__ == "__main__":
    _standalone()()
