"""``lockgate shadow report``: primary vs candidate, from the ``shadow_results`` table.

One row per (model, candidate deployment): samples, mean/p50/p95 latency and
total cost of both sides, agreement (normalised text; JSON documents when both
answers were JSON) and error rates. See :mod:`lockgate.shadow`.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import typer
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError

from lockgate.cli.admin_commands import with_store as _with_store
from lockgate.cli.common import ConfigOption, console, fail, get_config
from lockgate.settings import Config
from lockgate.shadow import ShadowStats, shadow_report
from lockgate.store import Store, StoreError

__all__ = ["shadow_app"]

shadow_app = typer.Typer(help="Shadow traffic: compare a candidate deployment with the primary.",
                         no_args_is_help=True)


T = TypeVar("T")


def with_store(config: Config, fn: Callable[[Store], Awaitable[T]]) -> T:
    """Run ``fn`` against the configured store; database errors end as one line, exit 1."""
    try:
        return _with_store(config, fn)
    except StoreError as exc:
        fail(str(exc))
    except SQLAlchemyError as exc:
        fail(f"database error: {str(getattr(exc, 'orig', None) or exc).strip().splitlines()[0]}")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _ms(mean: float, p50: float, p95: float) -> str:
    return f"{mean:.1f} / {p50:.1f} / {p95:.1f}"


@shadow_app.command("report")
def report(
    model: str | None = typer.Option(None, "--model", "-m", help="Only this public model."),
    as_json: bool = typer.Option(False, "--json", help="JSON instead of a table."),
    config: Path | None = ConfigOption,
) -> None:
    """Primary vs candidate: latency, cost, agreement and error rates per shadowed model."""
    cfg = get_config(config)
    stats: list[ShadowStats] = with_store(cfg, lambda s: shadow_report(s, model))
    if as_json:
        print(json.dumps([s.as_dict() for s in stats], indent=2))
        return
    if not stats:
        console.print("no shadow results" + (f" for model {model}" if model else ""))
        return
    table = Table("model", "candidate", "n", "latency ms primary (mean/p50/p95)",
                  "latency ms candidate", "cost primary", "cost candidate",
                  "text agree", "json agree", "errors primary", "errors candidate")
    for s in stats:
        table.add_row(
            s.model, s.candidate, str(s.count),
            _ms(s.primary_latency_mean_ms, s.primary_latency_p50_ms, s.primary_latency_p95_ms),
            _ms(s.candidate_latency_mean_ms, s.candidate_latency_p50_ms,
                s.candidate_latency_p95_ms),
            f"{s.primary_cost:.6f}", f"{s.candidate_cost:.6f}",
            _pct(s.text_agreement),
            _pct(s.json_agreement) + (f" of {s.json_pairs}" if s.json_pairs else ""),
            _pct(s.primary_error_rate), _pct(s.candidate_error_rate),
        )
    console.print(table)
