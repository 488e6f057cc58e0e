"""``lockgate review list|show|claim|decide``: the review queue from a terminal;
``lockgate review webhooks list|resend``: its webhook outbox.

The CLI acts as an operator (admin rights) against the configured store; ``--as NAME``
records who decided (default ``cli:$USER``). Decisions resume waiting jobs exactly as
the HTTP API does.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.table import Table

from lockgate.cli.admin_commands import with_store
from lockgate.cli.common import ConfigOption, console, fail, get_config, operator, run
from lockgate.errors import GatewayError
from lockgate.review import ReviewService
from lockgate.review.webhook_outbox import resend_dead, webhook_rows
from lockgate.store.errors import StoreError

__all__ = ["review_app"]

review_app = typer.Typer(help="The human review queue.", no_args_is_help=True)
T = TypeVar("T")
AsOption = typer.Option(None, "--as", help="Reviewer name recorded in the audit chain.")


_operator = operator


def _with_review(config: Path | None, fn: Callable[[ReviewService], Awaitable[T]]) -> T:
    cfg = get_config(config)

    async def go() -> T:
        from lockgate.runtime import Runtime

        rt = await Runtime.start(cfg, warm_up=False)
        try:
            assert rt.review is not None
            return await fn(rt.review)
        finally:
            await rt.aclose()

    try:
        return run(go)
    except GatewayError as exc:
        fail(f"{exc.message} ({exc.status})")
    except StoreError as exc:
        fail(str(exc))


def _print(doc: Any) -> None:
    print(json.dumps(doc, indent=2, default=str))


@review_app.command("list")
def review_list(
    state: str = typer.Option("pending", "--state", help="pending|approved|edited|rejected|all"),
    task: str | None = typer.Option(None, "--task"),
    team: str | None = typer.Option(None, "--team"),
    limit: int = typer.Option(50, "--limit", min=1, max=500),
    config: Path | None = ConfigOption,
) -> None:
    """Review items, newest first."""
    if state not in ("pending", "approved", "edited", "rejected", "auto_approved", "all"):
        fail(f"--state must be pending, approved, edited, rejected, auto_approved or all, "
             f"not '{state}'", 2)
    items = _with_review(config, lambda svc: svc.repo.find(
        state=None if state == "all" else state, teams=[team] if team else None, task=task,
        limit=limit))
    now = time.time()
    table = Table()
    for col in ("id", "task", "state", "team", "reasons", "sla left", "claimed by"):
        table.add_column(col, no_wrap=col == "id")
    for i in items:
        left = "breached" if i.sla_breached else f"{int(i.sla_due_at - now)}s"
        claimed = i.claimed_by if (i.claim_until or 0) > now else ""
        table.add_row(i.id, i.task, i.state, i.team or "-", "; ".join(i.reasons)[:60],
                      left if i.state == "pending" else "", claimed or "")
    console.print(table)


@review_app.command("show")
def review_show(item_id: str, config: Path | None = ConfigOption) -> None:
    """One item as a reviewer sees it, with similar past decisions."""

    async def go(svc: ReviewService) -> dict[str, Any]:
        item = await svc.get(item_id, _operator(None))
        out = item.public_with_answer(time.time())
        out["similar"] = await svc.repo.similar(item)
        return out

    _print(_with_review(config, go))


@review_app.command("claim")
def review_claim(
    item_id: str | None = typer.Argument(None, help="An item id; none: the next item."),
    task: str | None = typer.Option(None, "--task"),
    as_: str | None = AsOption,
    config: Path | None = ConfigOption,
) -> None:
    """Claim an item (exclusive until decided or the claim expires)."""
    who = _operator(as_)

    async def go(svc: ReviewService) -> Any:
        if item_id is None:
            item = await svc.claim_next(who, task)
            return None if item is None else item.public(time.time())
        return (await svc.claim(item_id, who)).public(time.time())

    doc = _with_review(config, go)
    if doc is None:
        fail("nothing to claim")
    _print(doc)


@review_app.command("decide")
def review_decide(
    item_id: str,
    action: str = typer.Argument(..., help="approve | edit | reject | escalate"),
    output: str | None = typer.Option(None, "--output", help="Corrected output (JSON) for edit."),
    reason: str | None = typer.Option(None, "--reason"),
    team: str | None = typer.Option(None, "--team", help="Target team for escalate."),
    as_: str | None = AsOption,
    config: Path | None = ConfigOption,
) -> None:
    """Decide an item; a rejection needs --reason, an edit --output."""
    value: Any = None
    if output is not None:
        try:
            value = json.loads(output)
        except json.JSONDecodeError as exc:
            fail(f"--output is not JSON: {exc}", 2)
    item = _with_review(config, lambda svc: svc.decide(
        item_id, _operator(as_), action, output=value, reason=reason, team=team,
        has_output=output is not None))
    _print(item.public(time.time()))


webhooks_app = typer.Typer(help="The review webhooks' outbox.", no_args_is_help=True)
review_app.add_typer(webhooks_app, name="webhooks")
_ROW_STATES = ("pending", "delivered", "dead", "all")


@webhooks_app.command("list")
def webhooks_list(
    state: str = typer.Option("all", "--state", help="pending|delivered|dead|all"),
    item: str | None = typer.Option(None, "--item", help="Only this review item's rows."),
    limit: int = typer.Option(50, "--limit", min=1, max=1000),
    config: Path | None = ConfigOption,
) -> None:
    """Webhook rows, newest first, with their delivery status."""
    if state not in _ROW_STATES:
        fail(f"--state must be {', '.join(_ROW_STATES)}, not '{state}'", 2)
    rows = with_store(get_config(config), lambda store: webhook_rows(
        store, item_id=item, state=None if state == "all" else state, limit=limit))
    table = Table()
    for col in ("id", "event", "item", "state", "attempts", "status"):
        table.add_column(col, no_wrap=col in ("id", "item"))
    for r in rows:
        table.add_row(r.id, r.event, r.item_id, r.state, str(r.attempts), r.status or "")
    console.print(table)


@webhooks_app.command("resend")
def webhooks_resend(
    row_id: str | None = typer.Argument(None, help="A dead row's id (rwh_...)."),
    all_dead: bool = typer.Option(False, "--all-dead", help="Every dead row."),
    config: Path | None = ConfigOption,
) -> None:
    """Make dead rows due again (sent by the next server or worker, attempts from zero)."""
    if (row_id is None) == (not all_dead):
        fail("give one dead row's id, or --all-dead", 2)
    n = with_store(get_config(config), lambda store: resend_dead(store, row_id))
    if row_id is not None and n == 0:
        fail(f"no dead webhook row '{row_id}'", 1)
    console.print(f"{n} webhook row(s) due again")
