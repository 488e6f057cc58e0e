"""CSV and XES files -> :class:`~lockgate.mining.log.EventLog`.

CSV: a header row naming the columns. Recognised names (case-insensitive):
case ``case``/``case_id``/``case:concept:name``; activity ``activity``/``concept:name``/
``event``; timestamp ``timestamp``/``time``/``time:timestamp``/``complete``; optional
``resource``/``org:resource`` and ``start``/``start_timestamp``. Timestamps are ISO 8601
(naive means UTC) or Unix seconds.

XES (IEEE 1849): ``<trace>`` elements with a ``concept:name`` string, ``<event>`` elements with
``concept:name``, ``time:timestamp``, optional ``org:resource`` and
``lifecycle:transition``. A ``start`` event is paired with the next ``complete`` of the same
activity in the trace (its time becomes the event's start); other transitions than
start/complete are skipped. Documents must be UTF-8, and ones with a DTD
(``<!DOCTYPE``/``<!ENTITY``) are refused, so entity expansion cannot be used against the
parser.

Every problem is a :class:`~lockgate.mining.log.MiningInputError` naming the line/event.
"""

from __future__ import annotations

import csv
import io
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from lockgate.mining.log import Event, EventLog, MiningInputError

__all__ = ["DEFAULT_MAX_EVENTS", "parse_time", "read_csv", "read_log_file", "read_xes"]

DEFAULT_MAX_EVENTS = 5_000_000

_CASE = ("case", "case_id", "caseid", "case:concept:name", "case id")
_ACT = ("activity", "concept:name", "event", "activity name", "task")
_TS = ("timestamp", "time", "time:timestamp", "complete", "complete_timestamp", "end")
_RES = ("resource", "org:resource", "user")
_START = ("start", "start_timestamp", "start_time")


def parse_time(raw: str, where: str) -> float:
    """ISO 8601 (naive = UTC) or Unix seconds -> Unix seconds."""
    text = raw.strip()
    if not text:
        raise MiningInputError(f"{where}: empty timestamp")
    try:
        return float(text)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise MiningInputError(f"{where}: timestamp {text[:40]!r} is not ISO 8601 or Unix "
                               "seconds") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def _column(header: list[str], names: tuple[str, ...], what: str, required: bool) -> int | None:
    lowered = [h.strip().lower() for h in header]
    for name in names:
        if name in lowered:
            return lowered.index(name)
    if required:
        raise MiningInputError(f"CSV header has no {what} column (one of: {', '.join(names)})")
    return None


def _csv_events(text: str, max_events: int) -> Iterator[Event]:
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if not header:
        raise MiningInputError("CSV file is empty (a header row is required)")
    ci = _column(header, _CASE, "case", True)
    ai = _column(header, _ACT, "activity", True)
    ti = _column(header, _TS, "timestamp", True)
    ri = _column(header, _RES, "resource", False)
    si = _column(header, _START, "start", False)
    assert ci is not None and ai is not None and ti is not None
    width = max(i for i in (ci, ai, ti, ri, si) if i is not None) + 1
    for n, row in enumerate(reader, start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if n - 1 > max_events:
            raise MiningInputError(f"the log has more than {max_events} events")
        if len(row) < width:
            raise MiningInputError(f"CSV line {n}: {len(row)} fields, expected {width}")
        case, act = row[ci].strip(), row[ai].strip()
        if not case or not act:
            raise MiningInputError(f"CSV line {n}: empty case or activity")
        res = row[ri].strip() if ri is not None and row[ri].strip() else None
        start = (parse_time(row[si], f"CSV line {n}")
                 if si is not None and row[si].strip() else None)
        yield Event(case, act, parse_time(row[ti], f"CSV line {n}"), res, start)


def read_csv(data: bytes | str, *, max_events: int = DEFAULT_MAX_EVENTS) -> EventLog:
    text = _decode(data)
    try:
        return EventLog.from_events(_csv_events(text, max_events))
    except csv.Error as exc:  # e.g. a bare carriage return inside an unquoted field
        raise MiningInputError(f"CSV file cannot be parsed: {exc}") from None


def _decode(data: bytes | str) -> str:
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise MiningInputError(f"the file is not UTF-8 (byte {exc.start})") from None


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _attrs(elem: ET.Element) -> dict[str, str]:
    return {str(child.get("key")): str(child.get("value", ""))
            for child in elem if child.get("key") is not None}


def _xes_events(data: bytes, max_events: int) -> Iterator[Event]:
    text = _decode(data)  # UTF-8 only: a DTD cannot hide in another encoding
    if "<!DOCTYPE" in text or "<!ENTITY" in text:
        raise MiningInputError("XES documents with a DTD (<!DOCTYPE/<!ENTITY) are not accepted")
    n_trace = 0
    n_events = 0
    try:
        for _, elem in ET.iterparse(io.BytesIO(text.encode()), events=("end",)):
            if _local(elem.tag) != "trace":
                continue
            n_trace += 1
            attrs = _attrs(elem)
            case = attrs.get("concept:name") or f"trace-{n_trace}"
            open_starts: dict[str, list[float]] = {}
            for ev in elem:
                if _local(ev.tag) != "event":
                    continue
                ea = _attrs(ev)
                where = f"XES trace {case!r} event {n_events + 1}"
                act = ea.get("concept:name", "").strip()
                if not act:
                    raise MiningInputError(f"{where}: no concept:name")
                if "time:timestamp" not in ea:
                    raise MiningInputError(f"{where}: no time:timestamp")
                ts = parse_time(ea["time:timestamp"], where)
                transition = ea.get("lifecycle:transition", "complete").strip().lower()
                if transition == "start":
                    open_starts.setdefault(act, []).append(ts)
                    continue
                if transition != "complete":
                    continue
                n_events += 1
                if n_events > max_events:
                    raise MiningInputError(f"the log has more than {max_events} events")
                starts = open_starts.get(act)
                start = starts.pop(0) if starts else None
                yield Event(case, act, ts, ea.get("org:resource") or None, start)
            elem.clear()
    except ET.ParseError as exc:
        raise MiningInputError(f"XES is not well-formed XML: {exc}") from None


def read_xes(data: bytes | str, *, max_events: int = DEFAULT_MAX_EVENTS) -> EventLog:
    raw = data.encode() if isinstance(data, str) else data
    return EventLog.from_events(_xes_events(raw, max_events))


def read_log_file(path: Path, *, max_events: int = DEFAULT_MAX_EVENTS) -> EventLog:
    """By extension: ``.xes`` is XES, anything else CSV."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise MiningInputError(f"cannot read {path}: {exc.strerror}") from None
    return parse_log(data, "xes" if path.suffix.lower() == ".xes" else "csv",
                     max_events=max_events)


def parse_log(data: bytes, fmt: str, *, max_events: int = DEFAULT_MAX_EVENTS) -> EventLog:
    if fmt == "xes":
        return read_xes(data, max_events=max_events)
    if fmt == "csv":
        return read_csv(data, max_events=max_events)
    raise MiningInputError(f"unknown log format {fmt!r} (csv or xes)")
