"""Task declarations: :class:`TaskSpec`, :class:`TaskStep` and the built-in tasks.

Kept free of pipeline imports so the ``jobs:`` config section (and so ``lockgate.config``)
can use them; :mod:`lockgate.jobs.tasks` runs them and re-exports these names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["BUILTIN_KINDS", "TaskSpec", "TaskStep", "builtin_tasks"]

BUILTIN_KINDS = ("classify", "extract", "summarize", "triage")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TaskStep(_Strict):
    name: str = Field(min_length=1)
    prompt: str = Field(min_length=1)
    system: str | None = None
    output_schema: dict[str, Any] | None = None
    model: str | None = None
    """Overrides the task's model for this step."""


class TaskSpec(_Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    kind: Literal["prompt", "classify", "extract", "summarize", "triage"] = "prompt"
    model: str | None = None
    """Public model name (or task route); default: ``jobs.default_model``."""
    system: str | None = None
    prompt: str | None = None
    steps: list[TaskStep] = Field(default_factory=list)
    output_schema: dict[str, Any] | None = None
    confidence_field: str | None = None
    labels: list[str] = Field(default_factory=list)
    fields: dict[str, dict[str, Any]] = Field(default_factory=dict)
    routes: dict[str, str] = Field(default_factory=dict)
    default_team: str = "general"
    max_attempts: int = Field(3, ge=1, le=100)
    temperature: float = Field(0.0, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=1)
    json_mode: bool = True
    """Ask for ``response_format: json_schema`` (models that support it answer in shape)."""

    @model_validator(mode="after")
    def _check(self) -> TaskSpec:
        if self.kind == "prompt" and not (self.prompt or self.steps):
            raise ValueError(f"task '{self.name}' needs 'prompt' or 'steps'")
        if self.kind in ("classify", "triage") and not self.labels:
            raise ValueError(f"task '{self.name}' ({self.kind}) needs 'labels'")
        if self.kind == "extract" and not self.fields and not self.output_schema:
            raise ValueError(f"task '{self.name}' (extract) needs 'fields' or 'output_schema'")
        for schema in [self.output_schema, *(s.output_schema for s in self.steps)]:
            if schema is not None:
                try:
                    Draft202012Validator.check_schema(schema)
                except SchemaError as exc:
                    msg = f"task '{self.name}': invalid JSON schema: {exc.message}"
                    raise ValueError(msg) from None
        return self

    def chain(self) -> list[TaskStep]:
        """The steps this task runs (built-ins expand to their standard prompts)."""
        if self.kind == "prompt":
            if self.steps:
                return list(self.steps)
            return [
                TaskStep(
                    name="main",
                    prompt=self.prompt or "",
                    system=self.system,
                    output_schema=self.output_schema,
                )
            ]
        return _builtin_chain(self)


# ------------------------------------------------------------------ built-ins

_CLASSIFY_PROMPT = (
    "Classify the text into exactly one of these labels: {labels}.\n"
    'Answer with JSON: {{"label": <label>, "confidence": <0..1>}}.\n\nText:\n{{{{input}}}}'
)


def _classify_schema(labels: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "label": {"type": "string", "enum": labels},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        },
        "required": ["label", "confidence"],
    }


_ENTITIES_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "entities": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"type": {"type": "string"}, "value": {"type": "string"}},
                "required": ["type", "value"],
            },
        }
    },
    "required": ["entities"],
}


def _builtin_chain(spec: TaskSpec) -> list[TaskStep]:
    labels = ", ".join(spec.labels)
    if spec.kind == "classify":
        return [
            TaskStep(
                name="classify",
                system=spec.system,
                prompt=spec.prompt or _CLASSIFY_PROMPT.format(labels=labels),
                output_schema=spec.output_schema or _classify_schema(spec.labels),
            )
        ]
    if spec.kind == "extract":
        schema = spec.output_schema or {
            "type": "object",
            "properties": dict(spec.fields),
            "required": list(spec.fields),
        }
        names = ", ".join(schema.get("properties", {}))
        return [
            TaskStep(
                name="extract",
                system=spec.system,
                prompt=spec.prompt
                or f"Extract these fields from the text as JSON ({names}).\n\nText:\n{{{{input}}}}",
                output_schema=schema,
            )
        ]
    if spec.kind == "summarize":
        return [
            TaskStep(
                name="summarize",
                system=spec.system,
                prompt=spec.prompt
                or "Summarize the text in at most three sentences. Answer with JSON: "
                '{"summary": <text>}.\n\nText:\n{{input}}',
                output_schema=spec.output_schema
                or {
                    "type": "object",
                    "properties": {"summary": {"type": "string"}},
                    "required": ["summary"],
                },
            )
        ]
    # triage: classify, then extract entities; routing to a team is deterministic (config)
    return [
        TaskStep(
            name="classify",
            system=spec.system,
            prompt=_CLASSIFY_PROMPT.format(labels=labels),
            output_schema=_classify_schema(spec.labels),
        ),
        TaskStep(
            name="entities",
            system=spec.system,
            prompt="List the named entities (people, products, accounts, order numbers) in the "
            'text as JSON: {"entities": [{"type": ..., "value": ...}]}.\n\nText:\n{{input}}',
            output_schema=_ENTITIES_SCHEMA,
        ),
    ]


def builtin_tasks(
    *,
    labels: list[str] | None = None,
    routes: Mapping[str, str] | None = None,
    model: str | None = None,
) -> dict[str, TaskSpec]:
    """Ready-made ``classify``/``extract``/``summarize``/``triage`` (generic support labels)."""
    lab = labels or ["billing", "bug", "feature_request", "account", "other"]
    return {
        "classify": TaskSpec(
            name="classify", kind="classify", labels=lab, model=model, confidence_field="confidence"
        ),
        "extract": TaskSpec(
            name="extract",
            kind="extract",
            model=model,
            fields={
                "name": {"type": ["string", "null"]},
                "email": {"type": ["string", "null"]},
                "order_id": {"type": ["string", "null"]},
            },
        ),
        "summarize": TaskSpec(name="summarize", kind="summarize", model=model),
        "triage": TaskSpec(
            name="triage",
            kind="triage",
            labels=lab,
            routes=dict(
                routes or {"billing": "finance", "bug": "engineering", "account": "support"}
            ),
            model=model,
            confidence_field="confidence",
        ),
    }
