"""``lockgate controls ...``: kill switch, governance status, usage by business unit.

``kill``/``restore`` write the shared kill switch straight into Redis (and
announce it to every gateway) when the config has ``redis_url``; without Redis
they ask the running gateway (``--gateway``, master key from
``LOCKGATE_MASTER_KEY`` or the config) through ``POST /admin/controls/kill``.
Either way the change is a row in the audit chain (``kill_switch.set``).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from lockgate.cli.common import ConfigOption, console, fail, get_config, run
from lockgate.settings import Config

__all__ = ["controls_app"]

controls_app = typer.Typer(help="Kill switch, governance status, usage by business unit.",
                           no_args_is_help=True)

GatewayOption = typer.Option("http://127.0.0.1:4000", "--gateway",
                             help="Running gateway (used when the config has no redis_url).")


def _master(cfg: Config) -> str:
    master = os.environ.get("LOCKGATE_MASTER_KEY") or cfg.resolved_master_key()
    if not master:
        fail("no master key: set LOCKGATE_MASTER_KEY")
    return master


def _http(cfg: Config, url: str, method: str = "GET", body: dict[str, Any] | None = None
          ) -> dict[str, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={
        "Authorization": f"Bearer {_master(cfg)}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            out: dict[str, Any] = json.loads(resp.read())
            return out
    except urllib.error.HTTPError as exc:
        try:
            msg = json.loads(exc.read())["error"]["message"]
        except (ValueError, KeyError, TypeError):
            msg = str(exc)
        fail(f"gateway refused: {msg}")
    except (urllib.error.URLError, OSError) as exc:
        fail(f"cannot reach the gateway at {url}: {exc}")


def _switch(cfg: Config, gateway: str, model: str | None, team: str | None, off: bool) -> None:
    if (model is None) == (team is None):
        fail("give exactly one of --model or --team")
    if model is not None and model not in cfg.model_names():
        fail(f"unknown model '{model}' for this config")
    if cfg.redis_url:
        from lockgate.pipeline.kill_switch import KillSwitch
        from lockgate.state import open_state

        async def go() -> dict[str, list[str]]:
            state = open_state(cfg.redis_url, prefix=cfg.redis_prefix)
            ks = KillSwitch(state, models=cfg.kill_switch.models, teams=cfg.kill_switch.teams,
                            shared=True)
            try:
                await ks.start()
                return await ks.set("model" if model else "team", str(model or team), off)
            finally:
                await ks.stop()
                await state.close()

        doc = run(go)
        from lockgate.cli.admin_commands import audit_admin, with_store
        from lockgate.store import Store

        async def audit(store: Store) -> None:
            await audit_admin(store, "kill_switch.set",
                              target=f"{'model' if model else 'team'}:{model or team}",
                              changes={"off": off, "kill_switch": doc})

        with_store(cfg, audit)  # without Redis the gateway records it (POST /admin/controls)
    else:
        body: dict[str, Any] = {"off": off, **({"model": model} if model else {"team": team})}
        doc = _http(cfg, gateway.rstrip("/") + "/admin/controls/kill", "POST", body)[
            "kill_switch"]
    what = f"model {model}" if model else f"team {team}"
    console.print(f"{what} switched {'off' if off else 'on'}; now off: "
                  f"models [{', '.join(doc['models'])}] teams [{', '.join(doc['teams'])}]",
                  highlight=False)


@controls_app.command("kill")
def kill(
    model: str | None = typer.Option(None, "--model", "-m"),
    team: str | None = typer.Option(None, "--team", "-t"),
    gateway: str = GatewayOption,
    config: Path | None = ConfigOption,
) -> None:
    """Switch a model or a team off on every gateway (calls get the fallback model or 503)."""
    _switch(get_config(config), gateway, model, team, True)


@controls_app.command("restore")
def restore(
    model: str | None = typer.Option(None, "--model", "-m"),
    team: str | None = typer.Option(None, "--team", "-t"),
    gateway: str = GatewayOption,
    config: Path | None = ConfigOption,
) -> None:
    """Switch a model or a team back on."""
    _switch(get_config(config), gateway, model, team, False)


@controls_app.command("status")
def status(gateway: str = GatewayOption, config: Path | None = ConfigOption) -> None:
    """Kill switches, cache, limits/budgets and breaker counters of a running gateway."""
    cfg = get_config(config)
    print(json.dumps(_http(cfg, gateway.rstrip("/") + "/admin/controls"), indent=2))


@controls_app.command("canary")
def canary(
    restore_id: str | None = typer.Option(None, "--restore",
                                          help="Put this rolled-back canary back into routing."),
    gateway: str = GatewayOption,
    config: Path | None = ConfigOption,
) -> None:
    """Canary deployments of a running gateway: state, window, rollback; or restore one."""
    cfg = get_config(config)
    base = gateway.rstrip("/") + "/admin/controls"
    if restore_id is not None:
        doc = _http(cfg, base + "/canary", "POST", {"deployment": restore_id})["canary"]
        console.print(f"canary {restore_id}: {doc['state']}", highlight=False)
        return
    snap = _http(cfg, base).get("canary")
    if not snap or not snap.get("canaries"):
        console.print("no canary deployments configured")
        return
    table = Table("canary", "model", "state", "canary window", "stable window", "reason")
    for dep, c in snap["canaries"].items():
        w = c.get("window") or {}

        def fmt(t: dict[str, Any] | None) -> str:
            if not t:
                return "-"
            p95 = f", p95 {t['p95_ms']} ms" if t.get("p95_ms") is not None else ""
            return f"{t['calls']} calls, {t['error_rate']:.1%} errors{p95}"

        table.add_row(dep, c["model"], c["state"], fmt(w.get("canary")), fmt(w.get("stable")),
                      (c.get("rollback") or {}).get("reason", ""))
    console.print(table)


@controls_app.command("usage")
def usage(
    by: str = typer.Option("business-unit", "--by", help="Only business-unit here."),
    since: str | None = typer.Option(None, "--since", "-s", help="ISO date or 24h / 7d."),
    as_json: bool = typer.Option(False, "--json"),
    config: Path | None = ConfigOption,
) -> None:
    """Spend and tokens per business unit (teams' business_unit)."""
    from lockgate.api.admin import parse_since
    from lockgate.cli.admin_commands import with_store
    from lockgate.errors import GatewayError

    if by.replace("_", "-") != "business-unit":
        fail("--by: only business-unit (lockgate usage groups by team, key and model)")
    cfg = get_config(config)
    try:
        since_dt = parse_since(since) if since else None
    except GatewayError as exc:
        fail(exc.message)
    rows = with_store(cfg, lambda s: s.usage_by_business_unit(since=since_dt))
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
