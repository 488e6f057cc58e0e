"""``lockgate mine``: process mining over lockgate's records, stored logs or CSV/XES files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from lockgate.api.admin import parse_since
from lockgate.cli.common import ConfigOption, console, fail, get_config, run
from lockgate.cli.rag_commands import OPERATOR_PRINCIPAL
from lockgate.errors import GatewayError
from lockgate.mining import (
    Analysis,
    MiningInputError,
    RenderError,
    UnknownLog,
    read_log_file,
)
from lockgate.mining.render import human_duration

__all__ = ["mine"]


def _when(value: str | None, name: str) -> float | None:
    if value is None:
        return None
    try:
        return parse_since(value).timestamp()
    except GatewayError:
        fail(f"--{name} must be an ISO date/time or like 24h, 7d: got {value[:60]!r}", 2)


def _print(an: Analysis) -> None:
    r = an.result
    ov = r.overview
    console.print(f"[bold]{an.source}[/]: {ov['cases']} cases, {ov['events']} events, "
                  f"{ov['activities']} activities, {ov['variants']} variants; case throughput "
                  f"median {human_duration(ov['throughput']['median_s'])}, p90 "
                  f"{human_duration(ov['throughput']['p90_s'])}", highlight=False)
    edges = Table("from", "to", "count", "median", "mean", "share of time", "rework",
                  title="directly-follows graph")
    for e in r.edges[:25]:
        edges.add_row(e["source"], e["target"], str(e["count"]), human_duration(e["median_s"]),
                      human_duration(e["mean_s"]), f"{100 * e['share_of_case_time']:.1f}%",
                      str(e["rework"]))
    console.print(edges)
    steps = Table("step", "executions", "cases", "per day", "sojourn median", "share of time",
                  "rework cases", title="steps")
    for a in r.activities[:25]:
        soj = a["sojourn"]
        steps.add_row(a["activity"], str(a["count"]), str(a["cases"]), f"{a['per_day']:.1f}",
                      human_duration(soj["median_s"]) if soj else "-",
                      f"{100 * a['share_of_case_time']:.1f}%", str(a["rework_cases"]))
    console.print(steps)
    variants = Table("#", "cases", "share", "mean throughput", "activities", title="variants")
    for v in r.variants[:10]:
        variants.add_row(str(v["rank"]), str(v["count"]), f"{100 * v['share']:.1f}%",
                         human_duration(v["mean_throughput_s"]), " > ".join(v["activities"]))
    console.print(variants)
    if r.conformance is not None:
        c = r.conformance
        console.print(f"conformance: {c.fitting_cases}/{c.cases} cases fit the reference "
                      f"({100 * c.fitting_share:.1f}%), mean fitness {c.mean_fitness:.3f}",
                      highlight=False)
        for d in c.deviations[:10]:
            console.print(f"  {d['kind']} {d['activity']!r}: {d['cases']} cases",
                          highlight=False)
    if an.summary is not None:
        who = an.summary.model or "rules (no summary model configured)"
        console.print(f"[bold]summary[/] ({who}):\n{an.summary.text}", highlight=False)
        for f in an.summary.facts:
            if f.id in an.summary.cited:
                console.print(f"  [{f.id}] {f.text}", highlight=False, markup=False)


def mine(
    file: Path | None = typer.Option(None, "--file", "-f", help="CSV or XES (.xes) event log."),
    log: str | None = typer.Option(None, "--log", "-l", help="A stored log (see --list)."),
    source: list[str] = typer.Option([], "--source", "-s",
                                     help="lockgate records: calls, reviews, jobs (repeat)."),
    since: str | None = typer.Option(None, "--since", help="ISO date/time or 24h, 7d."),
    until: str | None = typer.Option(None, "--until", help="ISO date/time."),
    reference: list[str] = typer.Option(
        [], "--reference", "-r", help="Reference path 'a,b,c' (repeat for alternatives)."),
    reference_name: str | None = typer.Option(None, "--reference-name",
                                              help="A path from mining.references."),
    svg: Path | None = typer.Option(None, "--svg", help="Write the process map (Graphviz)."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the JSON ('-' = stdout)."),
    summary: bool = typer.Option(False, "--summary", help="AI summary (mining.summary_model)."),
    model: str | None = typer.Option(None, "--model", "-m", help="Chat model for --summary."),
    save: str | None = typer.Option(None, "--save", help="Store the event log under a name."),
    replace: bool = typer.Option(False, "--replace", help="With --save: overwrite."),
    list_logs: bool = typer.Option(False, "--list", help="List stored logs and exit."),
    delete: str | None = typer.Option(None, "--delete", help="Delete a stored log and exit."),
    config: Path | None = ConfigOption,
) -> None:
    """Directly-follows graph, variants, step times, bottlenecks, rework and conformance."""
    cfg = get_config(config)
    t_since, t_until = _when(since, "since"), _when(until, "until")
    if file is not None and log is not None:
        fail("give --file or --log, not both", 2)
    paths = [[a.strip() for a in r.split(",") if a.strip()] for r in reference]

    async def go() -> Any:
        from lockgate.runtime import Runtime

        rt = await Runtime.start(cfg, jobs=False, warm_up=summary)
        try:
            svc = rt.mining
            assert svc is not None
            if list_logs:
                return [i.to_dict() for i in await svc.logs()]
            if delete is not None:
                if not await svc.delete(delete):
                    raise UnknownLog(f"no event log named {delete!r}")
                return None
            ref = svc.reference(reference_name, paths or None)
            if file is not None:
                import asyncio

                ev = await asyncio.to_thread(read_log_file, file,
                                             max_events=cfg.mining.max_events)
                ev, label = ev.filter_time(t_since, t_until), f"file {file.name}"
            else:
                ev, label = await svc.event_log(log=log, sources=source or None,
                                                since=t_since, until=t_until)
            if save is not None:
                await svc.import_log(save, ev, source=label, replace=replace)
            return await svc.analyze(ev, label, reference=ref, svg=svg is not None,
                                     summary=summary, principal=OPERATOR_PRINCIPAL,
                                     model=model)
        finally:
            await rt.aclose()

    try:
        out = run(go)
    except (MiningInputError, UnknownLog, RenderError) as exc:
        fail(str(exc).strip("'\""))
    except GatewayError as exc:
        fail(exc.message)
    if list_logs:
        print(json.dumps(out, indent=2))
        return
    if delete is not None:
        console.print(f"deleted {delete}", highlight=False)
        return
    assert isinstance(out, Analysis)
    if svg is not None and out.svg is not None:
        svg.write_text(out.svg)
    if json_out is not None:
        doc = out.to_dict(max_variants=None)
        doc.pop("svg", None)
        text = json.dumps(doc, indent=2)
        if str(json_out) == "-":
            print(text)
            return
        json_out.write_text(text)
    _print(out)
