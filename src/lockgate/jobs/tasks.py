"""Tasks: declared units of AI work (prompt or chain + model + output contract).

A task run is one or more ``pipeline.chat`` calls (never a provider directly)
plus JSON parsing and validation of each answer against its schema.

Declared in config (``jobs.tasks``)::

    - name: sentiment
      model: local                 # public model name / task route
      system: "You label reviews."
      prompt: "Review: {{input.text}}"
      output_schema: {type: object, properties: {label: {enum: [pos, neg]}}, required: [label]}
      confidence_field: confidence

or as a chain (``steps``): each step is a prompt + schema; later prompts can use
``{{steps.<name>.<field>}}``; the task's output is the merge of the step outputs.

Built-ins (``kind``): ``classify`` (``labels``), ``extract`` (``fields``: name ->
JSON schema), ``summarize``, ``triage`` (classify + extract entities + route to
a team through ``routes``: label -> team, default ``default_team``).
Templates use ``{{path}}`` placeholders: ``input`` (the job input, JSON text
when not a string), ``input.<key>`` and ``steps.<step>.<key>``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import BaseModel, ConfigDict, Field, model_validator

from lockgate.pipeline.call import Call, Principal
from lockgate.providers.base import Completion

__all__ = [
    "BUILTIN_KINDS",
    "SYSTEM_PRINCIPAL",
    "ChatPipeline",
    "TaskError",
    "TaskInputInvalid",
    "TaskOutputInvalid",
    "TaskResult",
    "TaskRunner",
    "TaskSpec",
    "TaskStep",
    "UnknownTask",
    "builtin_tasks",
    "parse_json_answer",
    "render",
]

BUILTIN_KINDS = ("classify", "extract", "summarize", "triage")

SYSTEM_PRINCIPAL = Principal(key_id="system:jobs", team_id=None, is_master=True)
"""Whose calls these are when a job/batch/event has no submitter (operator-run work)."""


class ChatPipeline(Protocol):
    """The part of :class:`lockgate.pipeline.Pipeline` a task needs."""

    async def chat(self, call: Call) -> Completion: ...


class TaskError(Exception):
    """A task run failed. ``permanent`` errors skip the remaining retries (straight to DLQ)."""

    permanent = False


class UnknownTask(TaskError):
    permanent = True


class TaskInputInvalid(TaskError):
    """The input cannot fill the template (missing field): retrying will not help."""

    permanent = True


class TaskOutputInvalid(TaskError):
    """The model's answer is not JSON or breaks the output schema (retried: models vary)."""


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


# ------------------------------------------------------------------ templating and parsing

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_.-]+)\s*\}\}")


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def render(template: str, context: Mapping[str, Any]) -> str:
    """Fill ``{{a.b.c}}`` placeholders; TaskInputInvalid names a missing path."""

    def repl(match: re.Match[str]) -> str:
        path = match.group(1).split(".")
        value: Any = context
        for part in path:
            if isinstance(value, Mapping) and part in value:
                value = value[part]
            elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
                value = value[int(part)]
            else:
                raise TaskInputInvalid(f"template needs '{match.group(1)}', not in the input")
        return _as_text(value)

    return _PLACEHOLDER.sub(repl, template)


_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.S)


def parse_json_answer(text: str) -> Any:
    """JSON from a model answer: plain, fenced in ```json, or the outermost {...}."""
    candidate = text.strip()
    fenced = _FENCE.match(candidate)
    if fenced:
        candidate = fenced.group(1)
    try:
        return orjson.loads(candidate)
    except orjson.JSONDecodeError:
        start, end = candidate.find("{"), candidate.rfind("}")
        if 0 <= start < end:
            try:
                return orjson.loads(candidate[start : end + 1])
            except orjson.JSONDecodeError:
                pass
    raise TaskOutputInvalid(f"model answer is not JSON: {text[:200]!r}")


# ------------------------------------------------------------------ running


@dataclass(slots=True)
class TaskResult:
    output: dict[str, Any]
    confidence: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0
    models: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "output": self.output,
            "confidence": self.confidence,
            "usage": {
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "calls": self.calls,
            },
            "models": self.models,
        }


def _content(comp: Completion) -> str:
    try:
        message = comp.body["choices"][0]["message"]
    except (KeyError, IndexError, TypeError):
        raise TaskOutputInvalid("model answer has no choices[0].message") from None
    content = message.get("content")
    if isinstance(content, list):
        content = "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    if not isinstance(content, str):
        raise TaskOutputInvalid("model answer has no text content")
    return content


class TaskRunner:
    """Runs declared tasks through the gateway pipeline."""

    def __init__(
        self,
        pipeline: ChatPipeline,
        tasks: Mapping[str, TaskSpec],
        *,
        default_model: str = "local",
        source: str = "jobs",
        default_principal: Principal = SYSTEM_PRINCIPAL,
        task_routes: Mapping[str, str] | None = None,
    ) -> None:
        self.default_principal = default_principal
        self.task_routes = dict(task_routes or {})
        """``Config.tasks``: task name -> public model, used when a task names no model."""
        self.pipeline = pipeline
        self.tasks = dict(tasks)
        self.default_model = default_model
        self.source = source
        self._validators: dict[int, Draft202012Validator] = {}

    def spec(self, name: str) -> TaskSpec:
        try:
            return self.tasks[name]
        except KeyError:
            raise UnknownTask(
                f"unknown task '{name}' (known: {', '.join(sorted(self.tasks)) or 'none'})"
            ) from None

    def _validator(self, schema: dict[str, Any]) -> Draft202012Validator:
        key = id(schema)
        v = self._validators.get(key)
        if v is None:
            v = self._validators[key] = Draft202012Validator(schema)
        return v

    async def run(
        self,
        name: str,
        input: Any,
        *,
        principal: Principal | None = None,
        request_id: str | None = None,
    ) -> TaskResult:
        spec = self.spec(name)
        context: dict[str, Any] = {"input": input, "steps": {}}
        result = TaskResult(output={})
        for step in spec.chain():
            model = (
                step.model or spec.model or self.task_routes.get(spec.name) or self.default_model
            )
            messages: list[dict[str, Any]] = []
            system = step.system or spec.system
            if system:
                messages.append({"role": "system", "content": render(system, context)})
            messages.append({"role": "user", "content": render(step.prompt, context)})
            body: dict[str, Any] = {
                "model": model,
                "messages": messages,
                "temperature": spec.temperature,
            }
            if spec.max_tokens:
                body["max_tokens"] = spec.max_tokens
            if step.output_schema is not None and spec.json_mode:
                body["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {
                        "name": f"{spec.name}_{step.name}",
                        "schema": step.output_schema,
                    },
                }
            call = Call(
                kind="chat",
                model=model,
                body=body,
                principal=principal or self.default_principal,
                source=self.source,
                task=spec.name,
            )
            if request_id:
                call.request_id = f"{request_id}-{step.name}"
            comp = await self.pipeline.chat(call)
            result.calls += 1
            result.prompt_tokens += comp.usage.prompt_tokens
            result.completion_tokens += comp.usage.completion_tokens
            result.models.append(model)
            text = _content(comp)
            if step.output_schema is None:
                out: Any = {"text": text}
            else:
                out = parse_json_answer(text)
                errors = sorted(
                    self._validator(step.output_schema).iter_errors(out), key=lambda e: e.path
                )
                if errors:
                    where = "/".join(str(p) for p in errors[0].absolute_path) or "(root)"
                    raise TaskOutputInvalid(
                        f"step '{step.name}': answer breaks the schema at {where}: "
                        f"{errors[0].message}"
                    )
            context["steps"][step.name] = out
            if isinstance(out, dict):
                result.output.update(out)
            else:
                result.output[step.name] = out
        if spec.kind == "triage":
            label = str(result.output.get("label", ""))
            result.output["team"] = spec.routes.get(label, spec.default_team)
        if spec.confidence_field:
            raw = result.output.get(spec.confidence_field)
            if isinstance(raw, int | float) and not isinstance(raw, bool):
                result.confidence = float(raw)
        return result
