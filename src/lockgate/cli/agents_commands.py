"""``lockgate agents list|run|show``: agents from a terminal.

The CLI acts as an operator (admin rights, every tool the agent has) against the
configured store and models; ``--as NAME`` records who ran it. ``run`` steps the run in
this process until it ends or pauses for approval (a decision made later, by the HTTP
API or ``lockgate review decide``, resumes it in the process that records it).
``show RUN`` prints the run, its steps and its tree of sub-runs with their costs.
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
        console.print(f"run {doc['id']} waits for approval: review {doc['review_id']} "
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
