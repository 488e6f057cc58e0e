"""Tasks: declared units of AI work (prompt or chain + model + output contract).

A task run is one or more ``pipeline.chat`` calls (never a provider directly)
plus JSON parsing and validation of each answer against its schema.

Declared in config (``jobs.tasks``, :class:`~lockgate.settings.TaskSpec`)::

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
from typing import Any, Protocol

import orjson
from jsonschema import Draft202012Validator

from lockgate.jobs.taskspec import BUILTIN_KINDS, builtin_tasks, task_chain
from lockgate.pipeline import Call, Completion, Principal
from lockgate.settings.jobs import TaskSpec

__all__ = [
    "BUILTIN_KINDS",
    "SYSTEM_PRINCIPAL",
    "ChatPipeline",
    "TaskError",
    "TaskInputInvalid",
    "TaskOutputInvalid",
    "TaskResult",
    "TaskRunner",
    "UnknownTask",
    "builtin_tasks",
    "parse_json_answer",
    "render",
]

SYSTEM_PRINCIPAL = Principal(key_id="system:jobs", team_id=None, is_master=True)
"""Whose calls these are when a job/batch/event has no submitter (operator-run work)."""


class ChatPipeline(Protocol):
    """The part of :class:`lockgate.pipeline.Pipeline` a task needs."""

    async def chat(self, call: Call) -> Completion: ...


class TaskError(Exception):
    """A task run failed. ``permanent`` errors skip the remaining retries (straight to DLQ)."""

    permanent = False


class ReviewRejected(TaskError):
    """A person rejected the task's output in review: no retry."""

    permanent = True


class UnknownTask(TaskError):
    permanent = True


class TaskInputInvalid(TaskError):
    """The input cannot fill the template (missing field): retrying will not help."""

    permanent = True


class TaskOutputInvalid(TaskError):
    """The model's answer is not JSON or breaks the output schema (retried: models vary)."""


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
        for step in task_chain(spec):
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
