"""``lockgate rag ...``: ingest, sync, status, query, eval, calibrate, delete, drop,
refresh-stats.

Mounted by the root app as ``app.add_typer(rag_app, name="rag")``. Each command
starts a :class:`lockgate.runtime.Runtime` and uses its RAG service — the same one,
built from the same ``rag:`` config, that answers over HTTP — so embeddings and
answers go through the gateway pipeline like every other model call, as the
operator (``key_id="cli"``). The embeddings model of a new collection is
``--embed-model``, else ``rag.embed_model``, else the first deployment with
``mode: embeddings`` in the config, else none (BM25 only). ``query`` uses
``rag.mode``, ``rag.k`` and ``rag.generation_model`` unless ``--mode``, ``--k`` or
``--model`` say otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from lockgate.cli.common import ConfigOption, console, err_console, fail, get_config, run
from lockgate.pipeline import Principal
from lockgate.rag.evaluation import calibrate, evaluate, load_qrels, load_queries
from lockgate.rag.service import RagService, UnknownCollection
from lockgate.rag.types import PUBLIC, Caller, Mode, normalize_principal
from lockgate.settings import Config

__all__ = ["OPERATOR_PRINCIPAL", "rag_app"]

T = TypeVar("T")

rag_app = typer.Typer(
    help="Permission-aware retrieval: collections, ingestion, queries, evaluation.",
    no_args_is_help=True,
)

OPERATOR_PRINCIPAL = Principal(key_id="cli", team_id=None, team_name=None, is_master=True)

ModeOption = typer.Option("hybrid", "--mode", help="bm25, dense or hybrid.")
JsonOption = typer.Option(False, "--json", help="Print one JSON object.")


def _with_service(config: Config, fn: Callable[[RagService], Awaitable[T]]) -> T:
    async def go() -> T:
        from lockgate.runtime import Runtime

        rt = await Runtime.start(config, jobs=False)
        try:
            return await fn(rt.rag)
        finally:
            await rt.aclose()

    try:
        return run(go)
    except UnknownCollection as exc:
        fail(str(exc))
    except ValueError as exc:
        fail(str(exc))


def _mode(value: str | None) -> Mode | None:
    if value is None:
        return None
    if value not in ("bm25", "dense", "hybrid"):
        fail(f"--mode must be bm25, dense or hybrid, not {value!r}", 2)
    return value  # type: ignore[return-value]


def _kv(items: list[str], what: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"{what} must look like key=value, not {item!r}", 2)
        out.setdefault(key, [])
        out[key].append(value)
    return {k: v[0] if len(v) == 1 else v for k, v in out.items()}


def _print_report(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(report))
        return
    console.print(
        f"added {report['added']}, updated {report['updated']}, "
        f"permissions updated {report['permissions_updated']}, unchanged {report['unchanged']}, "
        f"removed {report['removed']}; chunks written {report['chunks_written']} "
        f"(embedded {report['chunks_embedded']}, reused {report['chunks_reused']})",
        highlight=False,
    )
    for f in report["failed"]:
        err_console.print(f"[yellow]skipped[/] {f['source']}: {f['reason']}", highlight=False)


def _ingest(
    collection: str, paths: list[Path], acl: list[str], meta: list[str],
    embed_model: str | None, as_json: bool, config_path: Path | None, sync: bool,
) -> None:
    config = get_config(config_path)
    try:
        principals = tuple(sorted({normalize_principal(p) for p in acl})) or (PUBLIC,)
    except ValueError as exc:
        fail(str(exc), 2)
    metadata = _kv(meta, "--meta")
    for p in paths:
        if not p.exists():
            fail(f"{p}: no such file or directory", 2)

    async def go(svc: RagService) -> dict[str, Any]:
        with Progress(
            TextColumn("[bold]ingest[/]"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), console=err_console, disable=as_json, transient=True,
        ) as bar:
            task = bar.add_task("docs", total=None)

            def progress(done: int, total: int | None) -> None:
                bar.update(task, completed=done, total=total)

            report = await svc.ingest_paths(
                collection, paths, principal=OPERATOR_PRINCIPAL, acl=principals,
                metadata=metadata, sync=sync, progress=progress, embed_model=embed_model,
            )
        return report.as_dict()

    report = _with_service(config, go)
    _print_report(report, as_json)
    if report["failed"] and not (report["added"] or report["updated"] or report["unchanged"]
                                 or report["permissions_updated"]):
        raise typer.Exit(1)


@rag_app.command("ingest")
def ingest_cmd(
    collection: str,
    paths: list[Path],
    acl: list[str] = typer.Option([], "--acl", help="Principal allowed to read (repeat)."),
    meta: list[str] = typer.Option([], "--meta", help="Document metadata key=value (repeat)."),
    embed_model: str | None = typer.Option(None, "--embed-model", help="Embeddings model."),
    as_json: bool = JsonOption,
    config_path: Path | None = ConfigOption,
) -> None:
    """Ingest files/directories (Markdown, text, HTML, PDF, DOCX, BEIR corpus.jsonl)."""
    _ingest(collection, paths, acl, meta, embed_model, as_json, config_path, sync=False)


@rag_app.command("sync")
def sync_cmd(
    collection: str,
    paths: list[Path],
    acl: list[str] = typer.Option([], "--acl", help="Principal allowed to read (repeat)."),
    meta: list[str] = typer.Option([], "--meta", help="Document metadata key=value (repeat)."),
    embed_model: str | None = typer.Option(None, "--embed-model", help="Embeddings model."),
    as_json: bool = JsonOption,
    config_path: Path | None = ConfigOption,
) -> None:
    """Make the collection mirror PATHS: ingest changes and remove vanished documents."""
    _ingest(collection, paths, acl, meta, embed_model, as_json, config_path, sync=True)


@rag_app.command("status")
def status_cmd(
    collection: str | None = typer.Argument(None),
    as_json: bool = JsonOption,
    config_path: Path | None = ConfigOption,
) -> None:
    """Document and chunk counts, embedding model, threshold and staleness."""
    config = get_config(config_path)

    async def go(svc: RagService) -> list[dict[str, Any]]:
        names = [collection] if collection else [c.name for c in await svc.collections()]
        return [await svc.status(n) for n in names]

    rows = _with_service(config, go)
    if as_json:
        print(json.dumps(rows if collection is None else rows[0]))
        return
    if not rows:
        console.print("no collections")
    for r in rows:
        console.print(
            f"{r['collection']}: {r['documents']} documents, {r['chunks']} chunks "
            f"({r['embedded_chunks']} embedded, model {r['embed_model'] or 'none'}), "
            f"threshold {r['threshold'] if r['threshold'] is not None else 'default'}, "
            f"oldest indexed {r['max_staleness_seconds']} s ago",
            highlight=False,
        )


@rag_app.command("query")
def query_cmd(
    collection: str,
    question: str,
    user: str | None = typer.Option(None, "--user", help="End-user id (ACL user:<id>)."),
    group: list[str] = typer.Option([], "--group", help="End-user group (repeat)."),
    team: str | None = typer.Option(None, "--team", help="Team id (ACL team:<id>)."),
    operator: bool = typer.Option(False, "--operator", help="Ignore ACLs (operator view)."),
    mode: str | None = typer.Option(None, "--mode", help="bm25, dense or hybrid "
                                    "(default: rag.mode)."),
    k: int | None = typer.Option(None, "--k", min=1, max=100, help="Passages (default: rag.k)."),
    model: str | None = typer.Option(None, "--model", help="Chat model (default: "
                                     "rag.generation_model, else extractive)."),
    filters: list[str] = typer.Option([], "--filter", help="Metadata key=value (repeat)."),
    as_json: bool = JsonOption,
    config_path: Path | None = ConfigOption,
) -> None:
    """Answer QUESTION from the collection, with citations (or a refusal)."""
    config = get_config(config_path)
    caller = Caller(user_id=user, groups=tuple(group), team_id=team, all_access=operator)
    flt = _kv(filters, "--filter")

    async def go(svc: RagService) -> dict[str, Any]:
        ans = await svc.answer(collection, question, caller, principal=OPERATOR_PRINCIPAL,
                               model=model, mode=_mode(mode), k=k, filters=flt or None)
        return ans.as_dict()

    out = _with_service(config, go)
    if as_json:
        print(json.dumps(out))
        return
    if out.get("mode_note"):
        console.print(f"note: {out['mode_note']}", style="yellow", highlight=False)
    console.print(out["answer"], highlight=False)
    for c in out["citations"]:
        console.print(
            f"  [{c['n']}] {c['title']} ({c['doc_id']}, chars {c['char_start']}-{c['char_end']},"
            f" score {c['score']:.3f})", highlight=False,
        )


@rag_app.command("eval")
def eval_cmd(
    collection: str,
    queries: Path = typer.Option(..., "--queries", help="BEIR queries.jsonl"),
    qrels: Path = typer.Option(..., "--qrels", help="BEIR qrels.tsv"),
    mode: str = ModeOption,
    fusion: str = typer.Option("convex", "--fusion", help="rrf or convex (hybrid only)."),
    alpha: float | None = typer.Option(None, "--alpha", min=0.0, max=1.0),
    as_json: bool = JsonOption,
    config_path: Path | None = ConfigOption,
) -> None:
    """P@k, R@k, nDCG@10, MRR@10 over the judged queries (pytrec_eval)."""
    config = get_config(config_path)
    if fusion not in ("rrf", "convex"):
        fail("--fusion must be rrf or convex", 2)
    try:
        qs, qr = load_queries(queries), load_qrels(qrels)
    except (OSError, ValueError) as exc:
        fail(str(exc), 2)

    async def go(svc: RagService) -> dict[str, Any]:
        return await evaluate(svc, collection, qs, qr, mode=_mode(mode) or "hybrid",
                              fusion=fusion, alpha=alpha,  # type: ignore[arg-type]
                              principal=OPERATOR_PRINCIPAL)

    out = _with_service(config, go)
    if as_json:
        print(json.dumps(out))
        return
    for key, value in out.items():
        console.print(f"{key:>16}  {value}", highlight=False)


@rag_app.command("calibrate")
def calibrate_cmd(
    collection: str,
    queries: Path = typer.Option(..., "--queries", help="Held-out BEIR queries.jsonl"),
    qrels: Path = typer.Option(..., "--qrels", help="BEIR qrels.tsv"),
    mode: str = ModeOption,
    save: bool = typer.Option(True, "--save/--no-save", help="Store the threshold."),
    as_json: bool = JsonOption,
    config_path: Path | None = ConfigOption,
) -> None:
    """Pick the refusal threshold separating answerable from gold-removed queries."""
    config = get_config(config_path)
    try:
        qs, qr = load_queries(queries), load_qrels(qrels)
    except (OSError, ValueError) as exc:
        fail(str(exc), 2)

    async def go(svc: RagService) -> dict[str, Any]:
        cal = await calibrate(svc, collection, qs, qr, mode=_mode(mode) or "hybrid",
                              principal=OPERATOR_PRINCIPAL)
        if save:
            await svc.set_threshold(collection, cal.threshold, cal.kind)
        return dict(cal.as_dict(), saved=save)

    out = _with_service(config, go)
    if as_json:
        print(json.dumps(out))
        return
    for key, value in out.items():
        console.print(f"{key:>30}  {value}", highlight=False)


@rag_app.command("delete")
def delete_cmd(
    collection: str, doc_ids: list[str], config_path: Path | None = ConfigOption
) -> None:
    """Delete documents by id."""
    config = get_config(config_path)
    n = _with_service(config, lambda svc: svc.delete_documents(collection, doc_ids))
    console.print(f"deleted {n} documents")


@rag_app.command("refresh-stats")
def refresh_stats_cmd(collection: str, config_path: Path | None = ConfigOption) -> None:
    """Recount a collection's BM25 term statistics from its postings (PostgreSQL).

    Deletes leave each term's largest tf and smallest chunk length as they were: still
    bounds, so answers stay exact, but looser ones let the BM25 pruning skip less. Run
    it after deleting or replacing a large part of a collection."""
    config = get_config(config_path)
    n = _with_service(config, lambda svc: svc.refresh_term_stats(collection))
    if n is None:
        console.print("nothing to refresh: SQLite collections keep no term statistics (FTS5)")
    else:
        console.print(f"refreshed the statistics of {n} terms in {collection}")


@rag_app.command("drop")
def drop_cmd(collection: str, config_path: Path | None = ConfigOption) -> None:
    """Delete a collection and everything in it."""
    config = get_config(config_path)
    _with_service(config, lambda svc: svc.drop(collection))
    console.print(f"dropped {collection}")
