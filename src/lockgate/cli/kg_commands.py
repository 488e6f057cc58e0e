"""``lockgate kg``: the knowledge graph of RAG collections (lockgate.rag.graph)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from lockgate.cli.common import ConfigOption, fail, get_config, run
from lockgate.cli.rag_commands import OPERATOR_PRINCIPAL
from lockgate.rag import UnknownCollection

__all__ = ["kg_app"]

kg_app = typer.Typer(help="Knowledge graph of RAG collections.", no_args_is_help=True)


@kg_app.command("rebuild")
def rebuild(collection: str, config: Path | None = ConfigOption) -> None:
    """Extract entities and relations of every document again (e.g. after enabling
    ``knowledge_graph`` on an existing collection, or changing ``extractor_model``)."""
    cfg = get_config(config)
    if not cfg.knowledge_graph.enabled:
        fail("the knowledge graph is off: set knowledge_graph.enabled: true", 2)

    async def go() -> dict[str, int]:
        from lockgate.runtime import Runtime

        rt = await Runtime.start(cfg, jobs=False)
        try:
            return await rt.rag.rebuild_graph(collection, principal=OPERATOR_PRINCIPAL)
        finally:
            await rt.aclose()

    try:
        print(json.dumps(run(go)))
    except UnknownCollection as exc:
        fail(str(exc).strip("'\""))
