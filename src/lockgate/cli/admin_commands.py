"""``lockgate teams|keys|usage``: administration against the store, through the same
:class:`~lockgate.admin.AdminService` as the admin API and the console.

Revoking a key also tells a running gateway (``--gateway``, default the local
one) to drop its key cache, so the revocation is immediate there. Every change
(team or key created, key revoked) is appended to the audit chain with the actor
``cli:<os user>`` (:func:`audit_admin`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import typer
from rich.table import Column, Table

from lockgate.admin import AdminService
from lockgate.cli.common import ConfigOption, console, fail, get_config, run
from lockgate.errors import GatewayError, NotFound
from lockgate.pipeline import Principal
from lockgate.settings import Config
from lockgate.store import Store, StoreError
from lockgate.store.records import ApiKey, Team

T = TypeVar("T")

teams_app = typer.Typer(help="Teams: who owns keys and spend.", no_args_is_help=True)
keys_app = typer.Typer(help="Virtual API keys (shown once, stored as hashes).",
                       no_args_is_help=True)


def cli_actor() -> str:
    """Who an administrator's action from the command line is recorded as."""
    import getpass

    try:
        return "cli:" + getpass.getuser()
    except (KeyError, OSError):
        return "cli:" + str(os.getuid())


async def audit_admin(store: Store, action: str, **kwargs: object) -> None:
    """Append a CLI admin action to the audit chain (see ``Store.record_admin_action``)."""
    await store.record_admin_action(action, actor=cli_actor(), **kwargs)  # type: ignore[arg-type]


def _admin(store: Store, config: Config) -> tuple[AdminService, Principal]:
    """The admin service on this store (as the admin API and the console use it) and the
    CLI's operator. Revoking here revokes in the store; :func:`_notify_gateway` tells the
    running gateway afterwards."""
    from lockgate.rag.deployment import grantable_rag_model

    def grantable(m: str) -> bool:
        return m in config.model_names() or grantable_rag_model(m)

    who = cli_actor()
    return (AdminService(store, grantable=grantable, revoke=store.revoke_key),
            Principal(key_id=who, team_id=None, is_master=True, key_name=who))


def with_store(config: Config, fn: Callable[[Store], Awaitable[T]]) -> T:
    async def go() -> T:
        config.home_path.mkdir(parents=True, exist_ok=True)
        store = await Store.open(config.effective_database_url)
        try:
            return await fn(store)
        finally:
            await store.close()

    try:
        return run(go)
    except StoreError as exc:
        fail(str(exc))
    except GatewayError as exc:
        fail(exc.message)
    except OSError as exc:
        fail(f"cannot open the database {config.effective_database_url}: {exc}")


def _ts(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else ""


@teams_app.command("create")
def teams_create(
    name: str,
    business_unit: str | None = typer.Option(None, "--business-unit", "-b"),
    config: Path | None = ConfigOption,
) -> None:
    """Create a team."""
    cfg = get_config(config)

    async def create(s: Store) -> Team:
        svc, who = _admin(s, cfg)
        return await svc.create_team(who, name, business_unit)

    team = with_store(cfg, create)
    console.print(f"created team [bold]{team.name}[/] ({team.id})")


@teams_app.command("list")
def teams_list(config: Path | None = ConfigOption) -> None:
    """List teams."""
    cfg = get_config(config)
    teams = with_store(cfg, lambda s: s.list_teams())
    table = Table(Column("id", no_wrap=True), "name", "business unit", "created")
    for t in teams:
        table.add_row(t.id, t.name, t.business_unit or "", _ts(t.created_at))
    console.print(table)


@keys_app.command("create")
def keys_create(
    team: str = typer.Option(..., "--team", "-t", help="Team id or name."),
    name: str = typer.Option("", "--name", "-n"),
    models: list[str] | None = typer.Option(None, "--model", "-m",
                                             help="Allowed model (repeat); default all."),
    config: Path | None = ConfigOption,
) -> None:
    """Create a virtual key. The key is printed once; only its hash is stored."""
    cfg = get_config(config)
    from lockgate.rag.deployment import grantable_rag_model

    unknown = [m for m in models or []
               if m not in cfg.model_names() and not grantable_rag_model(m)]
    if unknown:
        fail(f"unknown model(s) for this config: {', '.join(unknown)}")

    async def create(s: Store) -> tuple[str, ApiKey]:
        svc, who = _admin(s, cfg)
        return await svc.create_key(who, team, name=name, models=models or None)

    plaintext, key = with_store(cfg, create)
    console.print(f"created key {key.id} for team {key.team_id} (shown once):", highlight=False)
    print(plaintext)


@keys_app.command("list")
def keys_list(
    team: str | None = typer.Option(None, "--team", "-t"),
    config: Path | None = ConfigOption,
) -> None:
    """List keys (prefixes only)."""
    cfg = get_config(config)
    keys = with_store(cfg, lambda s: s.list_keys(team))
    table = Table("team", "name", "models", "created", "revoked")
    table.columns.insert(0, Column("prefix", no_wrap=True))
    table.columns.insert(0, Column("id", no_wrap=True))
    for k in keys:
        table.add_row(k.id, k.key_prefix, k.team_name or k.team_id, k.name,
                      ",".join(k.allowed_models) if k.allowed_models else "*",
                      _ts(k.created_at), _ts(k.revoked_at))
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(
    key_id: str,
    gateway: str = typer.Option("http://127.0.0.1:4000", "--gateway",
                                help="Running gateway to notify (needs LOCKGATE_MASTER_KEY)."),
    config: Path | None = ConfigOption,
) -> None:
    """Revoke a key (effective immediately on the notified gateway)."""
    cfg = get_config(config)

    async def revoke(s: Store) -> bool:
        svc, who = _admin(s, cfg)
        try:
            await svc.revoke_key(who, key_id)
        except NotFound:
            return False
        return True

    if not with_store(cfg, revoke):
        fail(f"no active key with id '{key_id}'")
    console.print(f"revoked {key_id}")
    _notify_gateway(gateway, cfg)


def _notify_gateway(url: str, cfg: Config) -> None:
    import urllib.error
    import urllib.request

    master = os.environ.get("LOCKGATE_MASTER_KEY") or cfg.master_key
    if not master or master.startswith("env:"):
        console.print("[dim]gateway not notified (no LOCKGATE_MASTER_KEY); running gateways "
                      f"drop cached keys within {cfg.key_cache_ttl:g}s[/]")
        return
    req = urllib.request.Request(
        url.rstrip("/") + "/admin/cache/invalidate", method="POST",
        headers={"Authorization": f"Bearer {master}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=2):
            console.print(f"[dim]notified {url}[/]")
    except (urllib.error.URLError, OSError) as exc:
        console.print(f"[dim]gateway at {url} not notified ({exc}); running gateways drop "
                      f"cached keys within {cfg.key_cache_ttl:g}s[/]")


def usage(
    team: str | None = typer.Option(None, "--team", "-t"),
    since: str | None = typer.Option(None, "--since", "-s", help="ISO date or 24h / 7d."),
    by: str = typer.Option("team,key,model", "--by",
                           help="Grouping: team,key,model (default) or business-unit."),
    as_json: bool = typer.Option(False, "--json"),
    config: Path | None = ConfigOption,
) -> None:
    """Spend and tokens per team, key and model (or per business unit)."""
    from lockgate.api.admin import parse_since
    from lockgate.errors import GatewayError

    cfg = get_config(config)
    try:
        since_dt = parse_since(since) if since else None
    except GatewayError as exc:
        fail(exc.message)
    if by.replace("_", "-") == "business-unit":
        rows = with_store(cfg, lambda s: s.usage_by_business_unit(team=team, since=since_dt))
    elif by == "team,key,model":
        rows = with_store(cfg, lambda s: s.usage_summary(team=team, since=since_dt))
    else:
        fail(f"--by: expected team,key,model or business-unit, got '{by}'")
    if as_json:
        print(json.dumps(rows, default=str))
        return
    if not rows:
        console.print("no usage recorded")
        return
    table = Table(*rows[0].keys())
    for row in rows:
        table.add_row(*(f"{v:.6f}" if isinstance(v, float) else str(v) for v in row.values()))
    console.print(table)
