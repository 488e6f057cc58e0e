"""Training and evaluation data from feedback: OpenAI chat fine-tuning JSONL + an eval set.

For each call with feedback (grouped by request id, else review id, job id, feedback id)
the verdict is, in this order: the newest ``corrected_output`` (a reviewer's edit or a
caller's correction) -> that answer; else any rejection or thumbs down -> left out; else
an approval or thumbs up -> the model's own answer; else left out. Only accepted or
corrected answers are written.

* ``train.jsonl``: one ``{"messages": [...]}`` per line (OpenAI's chat fine-tuning
  format), the call's messages followed by the assistant's accepted answer;
* ``eval.jsonl``: ``{"input", "expected_output", "task", "model", "request_id"}``.

The input and the answer come from the feedback row (``input``/``output``, which the
review service fills in) or, failing that, from the call's logged bodies
(``log_bodies: true``). Every text is passed through the PII redactor (the configured
``guards.pii.entities``; all built-in entities when unset) unless ``redact=False``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from lockgate.feedback.calls import answer_text, parse_json
from lockgate.guards import PiiScanner, redact_text
from lockgate.guards.pii.detectors import detectors_for
from lockgate.store.tables import feedback, usage_records

__all__ = ["ExportStats", "export_feedback", "pii_redactor"]

Redactor = Callable[[str], str]


def pii_redactor(entities: tuple[str, ...] | list[str] | None = None) -> Redactor:
    scanner = PiiScanner(detectors_for(entities))

    def redact(text: str) -> str:
        return redact_text(scanner, text)[0]

    return redact


@dataclass
class ExportStats:
    calls: int = 0
    """Calls with feedback considered."""
    written: int = 0
    corrected: int = 0
    """Of the written: answers taken from a correction."""
    skipped_rejected: int = 0
    skipped_no_verdict: int = 0
    skipped_no_data: int = 0
    """Accepted, but the input or the answer is unknown (no row input, no logged body)."""

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def _content(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _messages(value: Any, redact: Redactor) -> list[dict[str, str]] | None:
    if value is None:
        return None
    if isinstance(value, list) and value and all(isinstance(m, dict) for m in value):
        out = []
        for m in value:
            role, content = m.get("role"), m.get("content")
            if role not in ("system", "user", "assistant", "developer") or content is None:
                continue
            if isinstance(content, list):  # content parts: keep the text ones
                content = "".join(p.get("text", "") for p in content
                                  if isinstance(p, dict) and p.get("type") == "text")
            out.append({"role": "system" if role == "developer" else role,
                        "content": redact(_content(content))})
        return out or None
    return [{"role": "user", "content": redact(_content(value))}]


def _verdict(rows: list[dict[str, Any]]) -> tuple[str, dict[str, Any] | None]:
    """('corrected'|'accepted'|'rejected'|'none', the row that decides)."""
    corrected = [r for r in rows if r["corrected_output"] is not None]
    if corrected:
        return "corrected", corrected[-1]
    if any(r["kind"] == "review_rejected" or r["thumbs"] == "down" for r in rows):
        return "rejected", None
    accepted = [r for r in rows if r["kind"] in ("review_approved", "review_edited")
                or r["thumbs"] == "up"]
    return ("accepted", accepted[-1]) if accepted else ("none", None)


async def export_feedback(
    engine: AsyncEngine,
    train: Path,
    eval_path: Path | None = None,
    *,
    redact: Redactor | None = None,
    task: str | None = None,
    model: str | None = None,
) -> ExportStats:
    redactor: Redactor = redact or (lambda s: s)
    f = feedback.c
    stmt = sa.select(feedback).order_by(f.id)
    if task is not None:
        stmt = stmt.where(f.task == task)
    if model is not None:
        stmt = stmt.where(f.model == model)
    groups: dict[str, list[dict[str, Any]]] = {}
    async with engine.connect() as conn:
        result = await conn.stream(stmt)
        async for row in result.mappings():
            key = (f"req:{row['request_id']}" if row["request_id"] else
                   f"rev:{row['review_id']}" if row["review_id"] else
                   f"job:{row['job_id']}" if row["job_id"] else f"fb:{row['feedback_id']}")
            groups.setdefault(key, []).append(dict(row))
        need_bodies = sorted({rows[0]["request_id"] for rows in groups.values()
                              if rows[0]["request_id"]})
        bodies: dict[str, tuple[Any, Any]] = {}
        for i in range(0, len(need_bodies), 500):
            part = need_bodies[i:i + 500]
            res = await conn.execute(sa.select(
                usage_records.c.request_id, usage_records.c.request_body,
                usage_records.c.response_body).where(usage_records.c.request_id.in_(part)))
            for rid, req, resp in res:
                request = parse_json(req)
                bodies[rid] = (request.get("messages") if isinstance(request, dict) else None,
                               answer_text(parse_json(resp)))
    stats = ExportStats()
    train.parent.mkdir(parents=True, exist_ok=True)
    with train.open("w", encoding="utf-8") as out, \
            (eval_path.open("w", encoding="utf-8") if eval_path else _Null()) as ev:
        for rows in groups.values():
            stats.calls += 1
            verdict, decider = _verdict(rows)
            if verdict == "rejected":
                stats.skipped_rejected += 1
                continue
            if decider is None:
                stats.skipped_no_verdict += 1
                continue
            logged_in, logged_out = bodies.get(rows[0]["request_id"] or "", (None, None))
            raw_in = next((parse_json(r["input"]) for r in reversed(rows)
                           if r["input"] is not None), None) or logged_in
            if verdict == "corrected":
                answer = parse_json(decider["corrected_output"])
            else:
                answer = next((parse_json(r["output"]) for r in reversed(rows)
                               if r["output"] is not None), None) or logged_out
            messages = _messages(raw_in, redactor)
            if not messages or answer is None:
                stats.skipped_no_data += 1
                continue
            expected = redactor(_content(answer))
            out.write(json.dumps({"messages": [*messages,
                                               {"role": "assistant", "content": expected}]},
                                 ensure_ascii=False) + "\n")
            ev.write(json.dumps({
                "input": messages if isinstance(raw_in, list) else messages[0]["content"],
                "expected_output": expected, "task": decider["task"],
                "model": decider["model"], "request_id": decider["request_id"],
            }, ensure_ascii=False) + "\n")
            stats.written += 1
            stats.corrected += verdict == "corrected"
    return stats


class _Null:
    def __enter__(self) -> _Null:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def write(self, text: str) -> int:
        return len(text)
