"""What the audit row of a call tells about it: the key, model, deployment and, when
request/response bodies are logged (``log_bodies: true``), the task, contract, prompt
version, input, output and whether the model refused."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from lockgate.feedback.model import Subject
from lockgate.store.tables import usage_records

__all__ = ["answer_text", "call_subject", "is_refusal", "parse_json", "subject_from_row"]

_COLUMNS = (usage_records.c.request_id, usage_records.c.key_id, usage_records.c.team_id,
            usage_records.c.model, usage_records.c.deployment, usage_records.c.request_body,
            usage_records.c.response_body, usage_records.c.error_class)
REFUSAL_ERRORS = frozenset({"content_filter", "refusal"})


def parse_json(text: str | None) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def _first_choice(body: Any) -> dict[str, Any]:
    if isinstance(body, dict):
        choices = body.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            return choices[0]
    return {}


def answer_text(body: Any) -> str | None:
    """The assistant's text of an OpenAI chat completion body (None if not one)."""
    message = _first_choice(body).get("message")
    if isinstance(message, dict) and isinstance(message.get("content"), str):
        return str(message["content"])
    return None


def is_refusal(body: Any, error_class: str | None = None) -> bool:
    """A refusal: OpenAI's ``message.refusal``, ``finish_reason: content_filter``, a RAG
    answer lockgate refused (``lockgate_rag.refused``), or such an error class."""
    if error_class in REFUSAL_ERRORS:
        return True
    choice = _first_choice(body)
    message = choice.get("message")
    if isinstance(message, dict) and message.get("refusal"):
        return True
    if choice.get("finish_reason") == "content_filter":
        return True
    rag = body.get("lockgate_rag") if isinstance(body, dict) else None
    return bool(isinstance(rag, dict) and rag.get("refused"))


def subject_from_row(row: RowMapping) -> Subject:
    request = parse_json(row["request_body"])
    response = parse_json(row["response_body"])
    meta = request.get("metadata") if isinstance(request, dict) else None
    meta = meta if isinstance(meta, dict) else {}

    def label(name: str) -> str | None:
        value = meta.get(name)
        return value if isinstance(value, str) and value else None

    messages = request.get("messages") if isinstance(request, dict) else None
    return Subject(
        request_id=row["request_id"], key_id=row["key_id"], team_id=row["team_id"],
        model=row["model"], deployment=row["deployment"], task=label("task"),
        contract_version=label("contract"), prompt_version=label("prompt_version"),
        input=messages if isinstance(messages, list) else None,
        output=answer_text(response),
        refused=is_refusal(response, row["error_class"]) if response is not None
        or row["error_class"] else None,
    )


async def call_subject(conn: AsyncConnection, request_id: str) -> Subject | None:
    """The call's subject from its audit row; None when no such request id was audited."""
    row = (await conn.execute(
        sa.select(*_COLUMNS).where(usage_records.c.request_id == request_id)
    )).mappings().first()
    return subject_from_row(row) if row is not None else None
