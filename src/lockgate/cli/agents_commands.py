"""``lockgate agents list|run|show|tools|grants``: agents from a terminal.

The CLI acts as an operator (admin rights, every tool the agent has) against the
configured store and models; ``--as NAME`` records who ran it. ``run`` steps the run in
this process until it ends or pauses for approval (a decision made later, by the HTTP
API or ``lockgate review decide``, resumes it in the process that records it).
``show RUN`` prints the run, its steps and its tree of sub-runs with their costs.
``tools list|set|delete`` and ``grants list|set|delete`` manage tool sources and grants
in the store (as the admin API does; audited; ``lockgate.yaml``'s cannot be changed).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer
from rich.tree import Tree

from lockgate.cli.common import ConfigOption, console, fail, get_config, operator, run
from lockgate.errors import GatewayError
from lockgate.store.errors import StoreError

if TYPE_CHECKING:
    from lockgate.agents import AgentService

__all__ = ["agents_app", "mcp_app"]

agents_app = typer.Typer(help="Permissioned agents: run them, list and show runs.",
                         no_args_is_help=True)
T = TypeVar("T")
AsOption = typer.Option(None, "--as", help="Operator name recorded with the run.")


_operator = operator


def _with_agents(config: Path | None, fn: Callable[[AgentService], Awaitable[T]]) -> T:
    cfg = get_config(config)

    async def go() -> T:
        from lockgate.runtime import Runtime

        rt = await Runtime.start(cfg, warm_up=False)
        try:
            assert rt.agents is not None
            return await fn(rt.agents)
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


@agents_app.command("list")
def agents_list(
    agent: str | None = typer.Option(None, "--agent", help="Only runs of this agent."),
    runs: bool = typer.Option(False, "--runs", help="List recent runs instead of agents."),
    limit: int = typer.Option(20, "--limit", min=1, max=500),
    config: Path | None = ConfigOption,
) -> None:
    """The configured agents (or, with --runs, the newest runs)."""
    if not runs:
        cfg = get_config(config)
        if not cfg.agents.agents:
            console.print("no agents configured (agents.agents in lockgate.yaml)")
        for name, spec in sorted(cfg.agents.agents.items()):
            console.print(f"{name}\tmodel={spec.model}\tmode={spec.mode}\t"
                          f"tools={','.join(spec.tools) or '-'}", highlight=False)
        return

    async def go(svc: AgentService) -> list[dict[str, Any]]:
        if agent is not None:
            svc.spec(agent)
        return [r.public() for r in await svc.find(_operator(None), agent=agent, limit=limit)]

    for r in _with_agents(config, go):
        console.print(f"{r['id']}\t{r['agent']}\t{r['status']}\tsteps={r['steps_count']}\t"
                      f"cost={r['cost']}", highlight=False)


@agents_app.command("run")
def agents_run(
    name: str = typer.Argument(..., help="Agent name."),
    text: str = typer.Argument(..., help="What to ask the agent."),
    as_: str | None = AsOption,
    as_json: bool = typer.Option(False, "--json", help="Print the whole run as JSON."),
    config: Path | None = ConfigOption,
) -> None:
    """Run an agent until it answers, stops or waits for an approval."""
    if not text.strip():
        fail("the input is empty", 2)

    async def go(svc: AgentService) -> dict[str, Any]:
        started = await svc.start(name, text, _operator(as_))
        done = await svc.advance(started)
        return await svc.show(done.id, _operator(as_))

    doc = _with_agents(config, go)
    if as_json:
        _print(doc)
    elif doc["status"] == "succeeded":
        out = doc["output"]
        print(out if isinstance(out, str) else json.dumps(out))
    elif doc["status"] == "awaiting_approval":
        waiting = str(doc["review_id"] or "")
        if waiting.startswith("child:"):
            console.print(f"run {doc['id']} waits for its sub-run {waiting[6:]} (lockgate "
                          f"agents show {waiting[6:]})", highlight=False)
        else:
            console.print(f"run {doc['id']} waits for approval: review {waiting} "
                          "(lockgate review decide ...)", highlight=False)
    if doc["status"] in ("failed", "stopped"):
        fail(f"run {doc['id']} {doc['status']}: {doc['error']}")


def _tree(node: dict[str, Any], tree: Tree) -> None:
    for child in node.get("children") or ():
        sub = tree.add(f"{child['agent']} {child['id']} [{child['status']}] "
                       f"cost={child['cost']}: {str(child['input'])[:60]}")
        _tree(child, sub)


@agents_app.command("show")
def agents_show(
    run_id: str = typer.Argument(..., help="Run id (run_...)."),
    as_json: bool = typer.Option(False, "--json", help="Print the run as JSON."),
    config: Path | None = ConfigOption,
) -> None:
    """A run: its steps (model turns, tool calls, approvals) and its tree of sub-runs."""
    doc = _with_agents(config, lambda svc: svc.show(run_id, _operator(None)))
    if as_json:
        _print(doc)
        return
    console.print(f"run {doc['id']} agent={doc['agent']} status={doc['status']} "
                  f"cost={doc['cost']} steps={doc['steps_count']}", highlight=False)
    if doc.get("error"):
        console.print(f"error: {doc['error']}", highlight=False)
    for s in doc.get("steps") or ():
        console.print(f"  #{s['seq']} {s['kind']:<8} {s['name'] or '-':<24} {s['status']:<9}"
                      f" {s['duration_ms']:.1f} ms  {json.dumps(s['arguments'])[:80]}",
                      highlight=False)
    tree = Tree(f"{doc['agent']} {doc['id']} [{doc['status']}] cost={doc['cost']}")
    _tree(doc, tree)
    console.print(tree)
    if doc["status"] == "succeeded":
        out = doc["output"]
        print(out if isinstance(out, str) else json.dumps(out))


tools_app = typer.Typer(help="Tool sources: lockgate.yaml's and those defined over the "
                        "admin API (stored; every gateway picks a change up within 2 s).",
                        no_args_is_help=True)
grants_app = typer.Typer(help="Grants: which tools a team, key or end user may use "
                         "(lockgate.yaml's and the admin API's).", no_args_is_help=True)
agents_app.add_typer(tools_app, name="tools")
agents_app.add_typer(grants_app, name="grants")


def _spec_arg(text: str) -> Any:
    """A JSON object, or ``@path`` of a JSON/YAML file."""
    import yaml

    if text.startswith("@"):
        try:
            raw = Path(text[1:]).read_text()
        except OSError as exc:
            fail(f"cannot read {text[1:]}: {exc.strerror}", 2)
        try:
            return yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            fail(f"{text[1:]} is not YAML/JSON: {str(exc).splitlines()[0]}", 2)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        fail(f"the spec is not JSON: {exc}", 2)


@tools_app.command("list")
def tools_list(
    as_json: bool = typer.Option(False, "--json"),
    config: Path | None = ConfigOption,
) -> None:
    """Every tool source (kind, name, config|api, its tools; secrets masked)."""
    docs = _with_agents(config, lambda svc: svc.sources_view())
    if as_json:
        _print(docs)
        return
    for d in docs:
        console.print(f"{d['kind']}\t{d['id']}\t{d['source']}\t"
                      f"{','.join(d['tools']) or '-'}", highlight=False)


@tools_app.command("set")
def tools_set(
    kind: str = typer.Argument(..., help="openapi, rag, sql or mcp."),
    name: str = typer.Argument(..., help="Source name (its tools are <name>__<tool>)."),
    spec: str = typer.Argument(..., help="The source as JSON (as in lockgate.yaml), or "
                                         "@file.yaml."),
    as_: str | None = AsOption,
    config: Path | None = ConfigOption,
) -> None:
    """Create or replace a tool source (not one of lockgate.yaml's)."""
    raw = _spec_arg(spec)
    who = _operator(as_).key_name
    doc = _with_agents(config, lambda svc: svc.define_source(kind, name, raw, who))
    tools = ",".join(doc["tools"]) or "(tools listed on first use)"
    console.print(f"{doc['kind']} source {doc['id']}: {tools}", highlight=False)


@tools_app.command("delete")
def tools_delete(
    kind: str = typer.Argument(...),
    name: str = typer.Argument(...),
    as_: str | None = AsOption,
    config: Path | None = ConfigOption,
) -> None:
    """Delete a tool source defined over the API."""
    who = _operator(as_).key_name
    _with_agents(config, lambda svc: svc.undefine_source(kind, name, who))
    console.print(f"deleted {kind} source {name}", highlight=False)


@grants_app.command("list")
def grants_list(
    as_json: bool = typer.Option(False, "--json"),
    config: Path | None = ConfigOption,
) -> None:
    """Every grant (part, subject, tool patterns, config|api)."""
    docs = _with_agents(config, lambda svc: svc.grants_view())
    if as_json:
        _print(docs)
        return
    for d in docs:
        console.print(f"{d['part']}\t{d['subject']}\t{d['source']}\t"
                      f"{','.join(d['tools']) or '-'}", highlight=False)


@grants_app.command("set")
def grants_set(
    part: str = typer.Argument(..., help="teams, keys or end_users."),
    subject: str = typer.Argument(..., help="Team or key name/id; user:<id> or group:<g>."),
    patterns: list[str] = typer.Argument(None, help="Tool name patterns (none: no tools)."),
    as_: str | None = AsOption,
    config: Path | None = ConfigOption,
) -> None:
    """Create or replace a grant (not one of lockgate.yaml's)."""
    who = _operator(as_).key_name
    tools = list(patterns or [])
    _with_agents(config, lambda svc: svc.define_grant(part, subject, {"tools": tools}, who))
    console.print(f"{part} {subject}: {','.join(tools) or '(no tools)'}", highlight=False)


@grants_app.command("delete")
def grants_delete(
    part: str = typer.Argument(...),
    subject: str = typer.Argument(...),
    as_: str | None = AsOption,
    config: Path | None = ConfigOption,
) -> None:
    """Delete a grant defined over the API."""
    who = _operator(as_).key_name
    _with_agents(config, lambda svc: svc.undefine_grant(part, subject, who))
    console.print(f"deleted the grant of {part} {subject}", highlight=False)


mcp_app = typer.Typer(help="lockgate as an MCP server.", no_args_is_help=True)


@mcp_app.command("serve")
def mcp_serve(
    transport: str = typer.Option("stdio", "--transport", help="stdio or http."),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8765, "--port", min=1, max=65535),
    key: str | None = typer.Option(None, "--key", envvar="LOCKGATE_API_KEY",
                                   help="The lockgate key tools act as (stdio; HTTP "
                                        "requests may send their own bearer key)."),
    config: Path | None = ConfigOption,
) -> None:
    """Expose RAG search, jobs, reviews and agents as MCP tools under lockgate keys."""
    if transport not in ("stdio", "http"):
        fail("--transport must be stdio or http", 2)
    if transport == "stdio" and not key:
        fail("--key (or LOCKGATE_API_KEY) is required over stdio", 2)
    cfg = get_config(config)

    async def go() -> None:
        from lockgate.mcp_server.server import _stderr_logging, serve
        from lockgate.runtime import Runtime

        _stderr_logging()
        rt = await Runtime.start(cfg, warm_up=False)
        try:
            await serve(rt, transport=transport, key=key, host=host, port=port)
        finally:
            await rt.aclose()

    try:
        run(go)
    except GatewayError as exc:
        fail(f"{exc.message} ({exc.status})")
    except StoreError as exc:
        fail(str(exc))
