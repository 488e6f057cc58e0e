"""FeedbackService: record feedback on a call (API, review service), read it back.

``record(kind, request_id=..., ...)`` looks the call up in the audit table (404-style
:class:`~lockgate.store.NotFoundError` when the request id was never audited) and copies
task, model, deployment and versions onto the row, so quality reports need no join.
Values given explicitly (e.g. by the review service, which knows the task, the input and
the model's answer) win over what the audit row says.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import fields, replace
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncEngine

from lockgate.feedback.calls import call_subject, parse_json
from lockgate.feedback.model import (
    FEEDBACK_KINDS,
    Feedback,
    Subject,
    clean_label,
    clean_score,
    clean_text,
    json_text,
)
from lockgate.pipeline.call import Principal
from lockgate.store import InvalidInput, NotFoundError
from lockgate.store.engine import writer_engine
from lockgate.store.tables import feedback

__all__ = ["FeedbackService", "SubjectResolver"]

SubjectResolver = Callable[[str], Awaitable[Subject | None]]
"""id -> the subject (None: unknown id). E.g. the review service registers one for
review ids: ``runtime.feedback.resolvers["review"] = reviews.feedback_subject``."""


def _row(row: RowMapping) -> Feedback:
    corrected = row["corrected_output"]
    return Feedback(
        id=row["feedback_id"], created_at=row["created_at"], kind=row["kind"],
        source=row["source"], request_id=row["request_id"], review_id=row["review_id"],
        job_id=row["job_id"], key_id=row["key_id"], team_id=row["team_id"],
        given_by=row["given_by"], thumbs=row["thumbs"], score=row["score"],
        comment=row["comment"],
        corrected_output=parse_json(corrected) if corrected is not None else None,
        outcome=row["outcome"], refused=row["refused"], task=row["task"], model=row["model"],
        deployment=row["deployment"], prompt_version=row["prompt_version"],
        contract_version=row["contract_version"],
    )


def may_give_feedback(subject: Subject, principal: Principal) -> bool:
    """The key that made the call, a key of its team, or the master key."""
    if principal.is_master:
        return True
    if subject.key_id is not None and subject.key_id == principal.key_id:
        return True
    return subject.team_id is not None and subject.team_id == principal.team_id


class FeedbackService:
    def __init__(self, engine: AsyncEngine, *, max_text_chars: int = 65536) -> None:
        self._engine = engine
        self._writer = writer_engine(engine)
        self.max_text = max_text_chars
        self.resolvers: dict[str, SubjectResolver] = {}
        """``"review"`` / ``"job"`` -> resolver of that kind of id (see SubjectResolver)."""

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    async def subject(self, *, request_id: str | None = None, review_id: str | None = None,
                      job_id: str | None = None) -> Subject:
        """The call one id names; NotFoundError when unknown."""
        given = [(n, v) for n, v in (("request_id", request_id), ("review_id", review_id),
                                     ("job_id", job_id)) if v is not None]
        if len(given) != 1:
            raise InvalidInput("give exactly one of request_id, review_id, job_id")
        name, value = given[0]
        if not isinstance(value, str) or not value or len(value) > 200:
            raise InvalidInput(f"'{name}' must be a non-empty id")
        found: Subject | None
        if name == "request_id":
            async with self._engine.connect() as conn:
                found = await call_subject(conn, value)
        else:
            resolver = self.resolvers.get(name.removesuffix("_id"))
            found = await resolver(value) if resolver is not None else None
            if found is not None and found.request_id is not None:
                async with self._engine.connect() as conn:
                    audited = await call_subject(conn, found.request_id)
                if audited is not None:  # the caller's values win, the audit row fills in
                    found = _merge(audited, found)
            if found is not None:
                found = (replace(found, review_id=value) if name == "review_id"
                         else replace(found, job_id=value))
        if found is None:
            raise NotFoundError(f"unknown {name.replace('_', ' ')} '{value}'")
        return found

    async def record(
        self,
        kind: str,
        *,
        subject: Subject | None = None,
        request_id: str | None = None,
        review_id: str | None = None,
        job_id: str | None = None,
        source: str = "api",
        given_by: str | None = None,
        thumbs: str | None = None,
        score: float | None = None,
        comment: str | None = None,
        corrected_output: Any = None,
        outcome: str | None = None,
        task: str | None = None,
        prompt_version: str | None = None,
        contract_version: str | None = None,
        input: Any = None,
        output: Any = None,
        refused: bool | None = None,
    ) -> Feedback:
        """Store one piece of feedback and return it.

        Give ``subject`` (already resolved) or one id: a ``request_id`` is looked up in
        the audit table; with ``review_id``/``job_id`` only (and no resolver registered)
        the row is stored with what is given. Explicit task/versions/input/output/refused
        override the subject's. InvalidInput for bad values, NotFoundError for an
        unknown request id.
        """
        if kind not in FEEDBACK_KINDS:
            raise InvalidInput(f"'kind' must be one of {', '.join(FEEDBACK_KINDS)}")
        if thumbs is not None and thumbs not in ("up", "down"):
            raise InvalidInput("'thumbs' must be 'up' or 'down'")
        if refused is not None and not isinstance(refused, bool):
            raise InvalidInput("'refused' must be true or false")
        if subject is None:
            if request_id is not None:
                subject = await self.subject(request_id=request_id)
                subject = replace(subject, review_id=review_id, job_id=job_id)
            elif review_id is not None or job_id is not None:
                subject = Subject(review_id=review_id, job_id=job_id)
            else:
                raise InvalidInput("feedback needs a request_id, review_id or job_id")
        limit = self.max_text
        values: dict[str, Any] = {
            "feedback_id": "fb_" + secrets.token_hex(12),
            "created_at": datetime.now(UTC),
            "request_id": subject.request_id, "review_id": subject.review_id,
            "job_id": subject.job_id, "kind": kind,
            "source": clean_label(source, "source") or "api",
            "key_id": subject.key_id, "team_id": subject.team_id,
            "given_by": clean_text(given_by, "given_by", 200),
            "thumbs": thumbs, "score": clean_score(score),
            "comment": clean_text(comment, "comment", limit),
            "corrected_output": json_text(corrected_output, "corrected_output", limit),
            "outcome": clean_label(outcome, "outcome"),
            "refused": refused if refused is not None else subject.refused,
            "task": clean_label(task, "task") or subject.task,
            "model": subject.model, "deployment": subject.deployment,
            "prompt_version": clean_label(prompt_version, "prompt_version")
            or subject.prompt_version,
            "contract_version": clean_label(contract_version, "contract_version")
            or subject.contract_version,
            "input": json_text(input if input is not None else subject.input, "input", limit),
            "output": json_text(output if output is not None else subject.output, "output",
                                limit),
        }
        async with self._writer.begin() as conn:
            await conn.execute(feedback.insert().values(**values))
        return _row(values)  # type: ignore[arg-type]

    async def list(self, *, request_id: str | None = None, kind: str | None = None,
                   limit: int = 100) -> list[Feedback]:
        """Newest first."""
        stmt = sa.select(feedback).order_by(feedback.c.id.desc()).limit(limit)
        if request_id is not None:
            stmt = stmt.where(feedback.c.request_id == request_id)
        if kind is not None:
            stmt = stmt.where(feedback.c.kind == kind)
        async with self._engine.connect() as conn:
            return [_row(r) for r in (await conn.execute(stmt)).mappings()]


def _merge(base: Subject, given: Subject) -> Subject:
    """``given``'s known values over ``base``'s."""
    updates = {f.name: getattr(given, f.name) for f in fields(given)
               if getattr(given, f.name) is not None}
    return replace(base, **updates)
