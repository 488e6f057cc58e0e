"""Process mining over lockgate's own records and imported CSV/XES event logs.

Public surface (adapters build nothing themselves: ``Runtime.mining`` is a
:class:`MiningService`)::

    ev, label = await rt.mining.event_log(sources=["calls", "reviews", "jobs"])
    analysis = await rt.mining.analyze(ev, label, reference=[["a", "b"]], svg=True,
                                       summary=True, principal=p)

Modules: ``log`` (events, the columnar :class:`EventLog`), ``importers`` (CSV, XES),
``sources`` (lockgate's records as events; :func:`register_source` for more; ``agent_source``
and ``facade_source`` are registered here as ``agents`` and ``facade``),
``repository`` (stored logs), ``stats`` (grouped medians), ``analysis`` (DFG, variants,
steps, bottlenecks, rework), ``conformance`` (alignment to reference paths), ``render``
(DOT/SVG/JSON), ``summary`` (facts and the AI summary through the pipeline), ``service``.
No pm4py (AGPL): everything here is numpy and the standard library.
"""

from lockgate.mining.agent_source import AgentStepSource
from lockgate.mining.analysis import MiningResult, mine
from lockgate.mining.conformance import ConformanceReport, align, check_conformance
from lockgate.mining.facade_source import FacadeCallSource
from lockgate.mining.importers import parse_log, read_csv, read_log_file, read_xes
from lockgate.mining.log import Event, EventLog, MiningInputError
from lockgate.mining.render import RenderError, to_dot, to_json, to_svg
from lockgate.mining.repository import LogInfo, MiningStore, UnknownLog
from lockgate.mining.service import Analysis, MiningService
from lockgate.mining.sources import EventSource, register_source, source_names
from lockgate.mining.summary import Fact, MiningSummary, build_facts, summarize

__all__ = [
    "AgentStepSource",
    "Analysis",
    "ConformanceReport",
    "Event",
    "EventLog",
    "EventSource",
    "FacadeCallSource",
    "Fact",
    "LogInfo",
    "MiningInputError",
    "MiningResult",
    "MiningService",
    "MiningStore",
    "MiningSummary",
    "RenderError",
    "UnknownLog",
    "align",
    "build_facts",
    "check_conformance",
    "mine",
    "parse_log",
    "read_csv",
    "read_log_file",
    "read_xes",
    "register_source",
    "source_names",
    "summarize",
    "to_dot",
    "to_json",
    "to_svg",
]

register_source("agents", AgentStepSource)
register_source("facade", FacadeCallSource)
