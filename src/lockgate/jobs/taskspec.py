"""What tasks run: the steps of a :class:`~lockgate.settings.TaskSpec` and the built-in tasks.

The declarations (``TaskSpec``, ``TaskStep``) are config data in :mod:`lockgate.settings.jobs`;
this module expands them (:func:`task_chain`), provides the built-ins (:func:`builtin_tasks`)
and overlays the configured tasks on them (:func:`task_specs`). :mod:`lockgate.jobs.tasks`
runs them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lockgate.settings.jobs import JobsSettings, TaskSpec, TaskStep

__all__ = ["BUILTIN_KINDS", "builtin_tasks", "task_chain", "task_specs"]

BUILTIN_KINDS = ("classify", "extract", "summarize", "triage")


def task_chain(spec: TaskSpec) -> list[TaskStep]:
    """The steps ``spec`` runs (built-ins expand to their standard prompts)."""
    if spec.kind == "prompt":
        if spec.steps:
            return list(spec.steps)
        return [
            TaskStep(
                name="main",
                prompt=spec.prompt or "",
                system=spec.system,
                output_schema=spec.output_schema,
            )
        ]
    return _builtin_chain(spec)


def task_specs(settings: JobsSettings) -> dict[str, TaskSpec]:
    """Built-ins overlaid with the configured tasks (``jobs.tasks``).

    A task without ``model`` uses the task route (``Config.tasks[name]``) if any, else
    ``default_model`` (the TaskRunner resolves it); one without ``max_attempts`` gets
    ``jobs.max_attempts``.
    """
    specs = builtin_tasks()
    for spec in settings.tasks:
        specs[spec.name] = spec
    return {
        name: spec
        if "max_attempts" in spec.model_fields_set
        else spec.model_copy(update={"max_attempts": settings.max_attempts})
        for name, spec in specs.items()
    }


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
