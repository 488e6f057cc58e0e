"""Reviewer decisions become feedback rows; review ids resolve for ``POST /v1/feedback``.

Wired by the Runtime: :func:`decision_recorder` goes into ``ReviewService.on_decided`` and
:func:`review_subject` into ``FeedbackService.resolvers["review"]``. An approval is a
``review_approved`` row, an edit ``review_edited`` (with the corrected output), a rejection
``review_rejected`` (with the reason as the comment); each carries the task, the model, the
input and the model's answer so quality reports and the fine-tuning export need no join.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from lockgate.feedback import FeedbackService
from lockgate.feedback.model import Subject
from lockgate.review.model import ReviewItem, ReviewNotFound
from lockgate.review.repository import ReviewRepository

__all__ = ["decision_recorder", "review_subject"]

_KIND = {"approved": "review_approved", "edited": "review_edited", "rejected": "review_rejected"}


def _subject(item: ReviewItem) -> Subject:
    return Subject(
        request_id=item.request_id if item.source == "http" else None,
        review_id=item.id, job_id=item.source_ref if item.source == "jobs" else None,
        key_id=item.key_id, team_id=item.team_id, task=item.task, model=item.model,
        deployment=item.deployment, input=item.input, output=item.output,
    )


def review_subject(repo: ReviewRepository) -> Callable[[str], Awaitable[Subject | None]]:
    async def resolve(review_id: str) -> Subject | None:
        try:
            return _subject(await repo.get(review_id))
        except ReviewNotFound:
            return None

    return resolve


def decision_recorder(feedback: FeedbackService) -> Callable[[ReviewItem], Awaitable[None]]:
    async def record(item: ReviewItem) -> None:
        kind = _KIND.get(item.state)
        if kind is None:
            return
        decision = item.decision or {}
        await feedback.record(
            kind, subject=_subject(item), source="review", given_by=item.decided_by,
            comment=decision.get("reason"),
            corrected_output=decision.get("output") if item.state == "edited" else None,
            task=item.task, input=item.input, output=item.output,
        )

    return record
