"""Feedback values: what a caller or a reviewer says about one call, and its checks.

Kinds: ``feedback`` (thumbs, score, comment, corrected output from an API caller),
``outcome`` (a business result that arrived later, e.g. ``refund_granted``), and the
reviewer's decisions ``review_approved``, ``review_edited``, ``review_rejected`` (the
review service records them through :meth:`FeedbackService.record`).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

from lockgate.store import InvalidInput

__all__ = [
    "FEEDBACK_KINDS",
    "OVERRIDE_KINDS",
    "REVIEW_KINDS",
    "Feedback",
    "FeedbackKind",
    "Subject",
    "clean_label",
    "clean_text",
    "json_text",
]

FeedbackKind = Literal["feedback", "outcome", "review_approved", "review_edited",
                       "review_rejected"]
FEEDBACK_KINDS: Final = ("feedback", "outcome", "review_approved", "review_edited",
                         "review_rejected")
REVIEW_KINDS: Final = frozenset({"review_approved", "review_edited", "review_rejected"})
OVERRIDE_KINDS: Final = frozenset({"review_edited", "review_rejected"})
"""A reviewer overrode the model: its answer was edited or rejected."""

_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@/-]{0,127}$")


def clean_label(value: Any, name: str) -> str | None:
    """An identifier-like value (task, outcome, versions): 1-128 of ``A-Za-z0-9_.:@/-``."""
    if value is None:
        return None
    if not isinstance(value, str) or not _LABEL.match(value):
        raise InvalidInput(f"'{name}' must be 1-128 characters of letters, digits and _.:@/-")
    return value


def clean_text(value: Any, name: str, limit: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"'{name}' must be a string")
    if len(value) > limit:
        raise InvalidInput(f"'{name}' is longer than {limit} characters")
    return value.replace("\x00", "")


def json_text(value: Any, name: str, limit: int) -> str | None:
    """Free JSON (a string stays a string): stored as JSON text."""
    if value is None:
        return None
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        raise InvalidInput(f"'{name}' must be JSON") from None
    if len(text) > limit:
        raise InvalidInput(f"'{name}' is longer than {limit} characters")
    return text.replace("\\u0000", "")


def clean_score(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInput("'score' must be a finite number")
    return float(value)


@dataclass(frozen=True, slots=True)
class Subject:
    """The call feedback is about, as far as it is known (from its audit row, a job, a
    review item, or the caller)."""

    request_id: str | None = None
    review_id: str | None = None
    job_id: str | None = None
    key_id: str | None = None
    """The key that made the call (owner checks)."""
    team_id: str | None = None
    task: str | None = None
    model: str | None = None
    deployment: str | None = None
    prompt_version: str | None = None
    contract_version: str | None = None
    input: Any = None
    """The call's input (chat messages or a task input), when known."""
    output: Any = None
    """The model's answer (text or JSON), when known."""
    refused: bool | None = None


@dataclass(frozen=True, slots=True)
class Feedback:
    id: str
    created_at: datetime
    kind: str
    source: str
    request_id: str | None
    review_id: str | None
    job_id: str | None
    key_id: str | None
    team_id: str | None
    given_by: str | None
    thumbs: str | None
    score: float | None
    comment: str | None
    corrected_output: Any
    outcome: str | None
    refused: bool | None
    task: str | None
    model: str | None
    deployment: str | None
    prompt_version: str | None
    contract_version: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "object": "feedback", "created_at": self.created_at.isoformat(),
            "kind": self.kind, "source": self.source, "request_id": self.request_id,
            "review_id": self.review_id, "job_id": self.job_id, "given_by": self.given_by,
            "thumbs": self.thumbs, "score": self.score, "comment": self.comment,
            "corrected_output": self.corrected_output, "outcome": self.outcome,
            "refused": self.refused, "task": self.task, "model": self.model,
            "deployment": self.deployment, "prompt_version": self.prompt_version,
            "contract_version": self.contract_version,
        }
