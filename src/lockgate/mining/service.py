"""MiningService: the mining feature's public surface (the CLI and the HTTP API call only this).

``analyze`` reads a stored log (``log=``), an uploaded file's bytes (``data=`` + ``fmt=``) or
lockgate's own records (``sources=``), mines it and, on request, renders SVG and writes a
summary through the pipeline. ``import_log`` stores a CSV/XES file (or a snapshot of the
records) as a named log so repeated analyses do not re-read the sources.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from lockgate.mining.analysis import MiningResult, mine
from lockgate.mining.importers import parse_log
from lockgate.mining.log import EventLog, MiningInputError
from lockgate.mining.render import to_svg
from lockgate.mining.repository import LogInfo, MiningStore
from lockgate.mining.sources import collect
from lockgate.mining.summary import MiningSummary, SummaryPipeline, summarize
from lockgate.pipeline import Principal
from lockgate.settings.mining import MiningSettings

__all__ = ["Analysis", "MiningService"]

MAX_REFERENCE_PATHS = 50
MAX_PATH_LEN = 500


@dataclass(slots=True)
class Analysis:
    result: MiningResult
    source: str
    svg: str | None = None
    summary: MiningSummary | None = None

    def to_dict(self, *, max_variants: int | None = 50) -> dict[str, Any]:
        doc = self.result.to_dict(max_variants=max_variants)
        doc["source"] = self.source
        if self.svg is not None:
            doc["svg"] = self.svg
        if self.summary is not None:
            doc["summary"] = self.summary.to_dict()
        return doc


class MiningService:
    def __init__(self, engine: AsyncEngine, pipeline: SummaryPipeline | None,
                 settings: MiningSettings | None = None) -> None:
        self.store = MiningStore(engine)
        self.engine = engine
        self.pipeline = pipeline
        self.settings = settings or MiningSettings()

    def reference(self, name: str | None,
                  paths: Sequence[Sequence[str]] | None) -> list[list[str]] | None:
        """A named reference (``mining.references``) or explicit paths, checked."""
        if name is not None and paths:
            raise MiningInputError("give a reference name or reference paths, not both")
        if name is not None:
            found = self.settings.references.get(name)
            if found is None:
                known = ", ".join(sorted(self.settings.references)) or "none configured"
                raise MiningInputError(f"unknown reference {name!r} (known: {known})")
            return [list(p) for p in found]
        if not paths:
            return None
        if len(paths) > MAX_REFERENCE_PATHS:
            raise MiningInputError(f"at most {MAX_REFERENCE_PATHS} reference paths")
        out = [list(p) for p in paths]
        if any(not p or len(p) > MAX_PATH_LEN for p in out):
            raise MiningInputError(f"a reference path has 1 to {MAX_PATH_LEN} activities")
        return out

    async def event_log(
        self, *, log: str | None = None, data: bytes | None = None, fmt: str | None = None,
        sources: Sequence[str] | None = None, since: float | None = None,
        until: float | None = None,
    ) -> tuple[EventLog, str]:
        if sum(x is not None for x in (log, data)) > 1:
            raise MiningInputError("give one of: a stored log name, a file")
        if data is not None:
            ev = await asyncio.to_thread(parse_log, data, fmt or "csv",
                                         max_events=self.settings.max_events)
            label = f"file ({fmt or 'csv'})"
        elif log is not None:
            ev = await self.store.load(log)
            label = f"log {log}"
        else:
            names = list(sources or self.settings.sources)
            events = await collect(self.engine, names, since, until)
            if len(events) > self.settings.max_events:
                raise MiningInputError(f"more than {self.settings.max_events} events; narrow "
                                       "the time window (since/until)")
            ev = EventLog.from_events(events)
            label = "lockgate " + ",".join(names)
            return ev, label
        return ev.filter_time(since, until), label

    async def analyze(
        self, ev: EventLog, source: str, *, reference: list[list[str]] | None = None,
        svg: bool = False, summary: bool = False, principal: Principal | None = None,
        model: str | None = None,
    ) -> Analysis:
        result = await asyncio.to_thread(mine, ev, reference=reference)
        out = Analysis(result, source)
        if svg:
            out.svg = await asyncio.to_thread(to_svg, result, dot_path=self.settings.dot_path)
        if summary:
            out.summary = await summarize(result, pipeline=self.pipeline,
                                          model=model or self.settings.summary_model,
                                          principal=principal)
        return out

    async def import_log(self, name: str, ev: EventLog, *, source: str,
                         replace: bool = False) -> LogInfo:
        if not len(ev):
            raise MiningInputError("the log has no events")
        return await self.store.save(name, ev, source=source, replace=replace)

    async def logs(self) -> list[LogInfo]:
        return await self.store.logs()

    async def delete(self, name: str) -> bool:
        return await self.store.delete(name)
