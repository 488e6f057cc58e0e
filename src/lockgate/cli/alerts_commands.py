"""``lockgate alerts list|ack``: the incidents in the store (see lockgate.alerts)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from lockgate.alerts import Alert
from lockgate.cli.common import ConfigOption, console, fail, get_config
from lockgate.cli.shadow_commands import with_store
from lockgate.runtime import alert_center
from lockgate.store import InvalidInput, NotFoundError, Store

__all__ = ["alerts_app"]

alerts_app = typer.Typer(help="Alerts: one per incident, across every gateway and worker.",
                         no_args_is_help=True)


@alerts_app.command("list")
def list_alerts(
    state: str | None = typer.Option(None, "--state", "-s", help="open, acked or resolved."),
    kind: str | None = typer.Option(None, "--kind", "-k", help="queue, drift, ..."),
    limit: int = typer.Option(100, "--limit", "-n"),
    as_json: bool = typer.Option(False, "--json", help="JSON instead of a table."),
    config: Path | None = ConfigOption,
) -> None:
    """Newest first."""
    cfg = get_config(config)

    async def go(store: Store) -> list[Alert]:
        return await alert_center(cfg, store).list(state, kind=kind, limit=limit)

    try:
        found = with_store(cfg, go)
    except InvalidInput as exc:
        fail(str(exc), 2)
    if as_json:
        print(json.dumps([a.as_dict() for a in found], indent=2))
        return
    if not found:
        console.print("no alerts" + (f" in state {state}" if state else ""))
        return
    table = Table("id", "state", "kind", "subject", "message", "raised", "seen", "acked by")
    for a in found:
        table.add_row(str(a.id), a.state, a.kind, a.subject, a.message,
                      a.raised_at.strftime("%Y-%m-%d %H:%M:%S"), str(a.raised_count),
                      a.acked_by or "")
    console.print(table)


@alerts_app.command("ack")
def ack(
    alert_id: int = typer.Argument(..., help="The alert's id (lockgate alerts list)."),
    by: str = typer.Option("cli", "--by", help="Who acknowledges it."),
    resolve: bool = typer.Option(False, "--resolve", help="Also close the incident."),
    config: Path | None = ConfigOption,
) -> None:
    """Acknowledge an alert (the incident stays open unless --resolve)."""
    cfg = get_config(config)

    async def go(store: Store) -> Alert:
        center = alert_center(cfg, store)
        try:
            return await center.ack(alert_id, by, resolve=resolve)
        finally:
            if center.sender is not None:
                await center.sender.aclose()

    try:
        alert = with_store(cfg, go)
    except NotFoundError as exc:
        fail(str(exc))
    except InvalidInput as exc:
        fail(str(exc), 2)
    console.print(f"alert {alert.id} {alert.state} (acknowledged by {alert.acked_by})",
                  highlight=False)
