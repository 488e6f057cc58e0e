"""``lockgate feedback quality|export``: quality reports and training data (lockgate.feedback)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from lockgate.api.admin import parse_since
from lockgate.cli.common import ConfigOption, console, fail, get_config
from lockgate.cli.shadow_commands import with_store
from lockgate.errors import GatewayError
from lockgate.feedback import ExportStats, export_feedback, pii_redactor, quality_report
from lockgate.store import Store

__all__ = ["feedback_app"]

feedback_app = typer.Typer(help="Feedback on calls: quality reports, training exports.",
                           no_args_is_help=True)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


@feedback_app.command("quality")
def quality(
    since: str | None = typer.Option(None, "--since", help="ISO date/time or 24h, 7d."),
    task: str | None = typer.Option(None, "--task"),
    model: str | None = typer.Option(None, "--model", "-m"),
    deployment: str | None = typer.Option(None, "--deployment"),
    outcome: str | None = typer.Option(None, "--outcome",
                                       help="outcome_rate = this label / all outcomes."),
    as_json: bool = typer.Option(False, "--json", help="JSON instead of a table."),
    config: Path | None = ConfigOption,
) -> None:
    """Approval, override, thumbs-down, outcome and refusal rates with counts, per task x
    model x deployment x prompt/contract version."""
    cfg = get_config(config)
    try:
        when = parse_since(since) if since else None
    except GatewayError as exc:
        fail(exc.message, 2)

    async def go(store: Store) -> list[dict[str, Any]]:
        return await quality_report(store.engine, since=when, task=task, model=model,
                                    deployment=deployment, outcome=outcome)

    rows = with_store(cfg, go)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        console.print("no feedback yet")
        return
    table = Table("task", "model", "deployment", "prompt", "contract", "rows", "reviews",
                  "approval", "override", "thumbs", "thumbs down", "outcomes", "outcome rate",
                  "refusal")
    for r in rows:
        table.add_row(*(str(r[c] or "-") for c in ("task", "model", "deployment",
                                                    "prompt_version", "contract_version")),
                      str(r["rows"]), str(r["reviews"]), _pct(r["approval_rate"]),
                      _pct(r["override_rate"]), str(r["thumbs"]), _pct(r["thumbs_down_rate"]),
                      str(r["outcomes"]), _pct(r["outcome_rate"]), _pct(r["refusal_rate"]))
    console.print(table)


@feedback_app.command("export")
def export(
    out: Path = typer.Option(..., "--out", "-o", help="OpenAI chat fine-tuning JSONL."),
    eval_path: Path | None = typer.Option(None, "--eval", help="Eval set JSONL "
                                          "(input, expected_output)."),
    task: str | None = typer.Option(None, "--task"),
    model: str | None = typer.Option(None, "--model", "-m"),
    no_redact: bool = typer.Option(False, "--no-redact", help="Keep PII (not recommended)."),
    config: Path | None = ConfigOption,
) -> None:
    """Accepted or corrected answers as fine-tuning data, PII redacted with the configured
    guard's entities (all built-in entities when guards are not configured)."""
    cfg = get_config(config)
    entities = cfg.guards.pii.entities if cfg.guards is not None else None
    redact = None if no_redact else pii_redactor(entities)

    async def go(store: Store) -> ExportStats:
        return await export_feedback(store.engine, out, eval_path, redact=redact, task=task,
                                     model=model)

    try:
        stats = with_store(cfg, go)
    except OSError as exc:
        fail(f"cannot write the export: {exc}")
    console.print(f"wrote {stats.written} examples to {out}"
                  + (f" and {eval_path}" if eval_path else "")
                  + f" ({stats.corrected} corrected; skipped: {stats.skipped_rejected} "
                  f"rejected, {stats.skipped_no_verdict} without a verdict, "
                  f"{stats.skipped_no_data} without input/answer)", highlight=False)
