"""Facade rules: which rule applies to a message, and what it does to a decoded body.

A :class:`Rule` is a :class:`~lockgate.settings.facades.FacadeRule` compiled once: its path
regex, the PII scanner it needs and the task it runs. :class:`Body` is a buffered request
or response body, decoded once (JSON when the media type says so, else UTF-8 text).

What a rule does with a body (the HTTP side is :mod:`lockgate.facade.proxy`):

* ``enrich`` -- :meth:`RuleEngine.compute` runs the task through the pipeline (a
  :class:`~lockgate.jobs.tasks.TaskRunner`) on ``input`` of the body and selects
  ``select`` of the output; the proxy places it (or counts a miss).
* ``redact`` -- :func:`redact_json` replaces PII in every string of the body (labels like
  ``<EMAIL>``); any error propagates: the caller fails closed.
* ``block`` -- :meth:`RuleEngine.should_block`: the PII detectors found something, or the
  task's label is one of ``block_labels``; errors propagate (fail closed).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from lockgate.facade.headers import media_type
from lockgate.facade.paths import MISSING, compile_path, get_path, json_matches
from lockgate.guards import PiiScanner, redact_text
from lockgate.guards.pii.detectors import detectors_for
from lockgate.jobs.tasks import TaskRunner
from lockgate.settings.facades import FacadeRule

__all__ = ["Body", "Rule", "RuleEngine", "redact_json", "walk_strings"]


@dataclass(slots=True)
class Body:
    """A buffered body. ``doc`` is the decoded JSON (``MISSING`` when not JSON)."""

    raw: bytes
    content_type: str
    doc: Any = MISSING
    changed: bool = False

    @classmethod
    def of(cls, raw: bytes, content_type: str | None) -> Body:
        mt = media_type(content_type)
        doc: Any = MISSING
        if raw and (mt == "application/json" or mt.endswith("+json")):
            try:
                doc = orjson.loads(raw)
            except orjson.JSONDecodeError:
                doc = MISSING
        return cls(raw, mt, doc)

    @property
    def is_json(self) -> bool:
        return self.doc is not MISSING

    def text(self) -> str | None:
        try:
            return self.raw.decode("utf-8")
        except UnicodeDecodeError:
            return None

    def value(self, path: str) -> Any:
        """``path`` of the JSON body; the whole text for ``""`` on a text body."""
        if self.is_json:
            return get_path(self.doc, path)
        if path == "":
            text = self.text()
            return text if text else MISSING
        return MISSING

    def encode(self) -> bytes:
        if self.changed and self.is_json:
            return orjson.dumps(self.doc)
        return self.raw


@dataclass
class Rule:
    spec: FacadeRule
    regex: re.Pattern[str]
    methods: frozenset[str]
    scanner: PiiScanner | None = None
    shadow: bool = False

    @classmethod
    def compile(cls, spec: FacadeRule, facade_shadow: bool) -> Rule:
        scanner = None
        if spec.action == "redact" or spec.detector == "pii":
            scanner = PiiScanner(detectors_for(spec.entities))
        return cls(spec, compile_path(spec.match.path), frozenset(spec.match.methods),
                   scanner, facade_shadow if spec.shadow is None else spec.shadow)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def side(self) -> str:
        return self.spec.inspected_side

    def path_matches(self, path: str) -> bool:
        return self.regex.fullmatch(path) is not None

    def body_matches(self, body: Body) -> bool:
        """The ``content_type`` and ``json`` predicates hold for ``body``."""
        m = self.spec.match
        if m.content_type is not None and body.content_type != m.content_type.lower():
            return False
        if m.json_:
            return body.is_json and json_matches(body.doc, m.json_)
        return True


def walk_strings(doc: Any, fn: Any) -> Any:
    """``doc`` with ``fn`` applied to every string (keys kept)."""
    if isinstance(doc, str):
        return fn(doc)
    if isinstance(doc, list):
        return [walk_strings(v, fn) for v in doc]
    if isinstance(doc, dict):
        return {k: walk_strings(v, fn) for k, v in doc.items()}
    return doc


def redact_json(scanner: PiiScanner, body: Body) -> int:
    """Redact PII in ``body`` in place; the number of findings. Raises ValueError for a body
    that is neither JSON nor UTF-8 text (the caller fails closed)."""
    count = 0

    def fn(text: str) -> str:
        nonlocal count
        out, found = redact_text(scanner, text)
        count += len(found)
        return out

    if body.is_json:
        new = walk_strings(body.doc, fn)
        if count:
            body.doc = new
            body.changed = True
        return count
    text = body.text()
    if text is None:
        raise ValueError("body is not UTF-8 text: cannot be redacted")
    out = fn(text)
    if count:
        body.raw = out.encode()
    return count


def pii_found(scanner: PiiScanner, body: Body) -> bool:
    found = False

    def fn(text: str) -> str:
        nonlocal found
        if not found and scanner.find(text):
            found = True
        return text

    if body.is_json:
        walk_strings(body.doc, fn)
        return found
    text = body.text()
    if text is None:
        raise ValueError("body is not UTF-8 text: cannot be checked")
    fn(text)
    return found


@dataclass
class RuleEngine:
    """Runs rules' tasks through the pipeline (``runner``, source ``facade``)."""

    runner: TaskRunner

    def check_tasks(self, rules: list[Rule]) -> None:
        """UnknownTask (one line) for a rule naming a task that does not exist."""
        for rule in rules:
            if rule.spec.task:
                self.runner.spec(rule.spec.task)

    async def compute(self, rule: Rule, body: Body, request_id: str) -> Any:
        """The selected output of the rule's task on ``body``; MISSING when the body has no
        ``input``. Task errors propagate."""
        value = body.value(rule.spec.input)
        if value is MISSING:
            return MISSING
        assert rule.spec.task is not None
        result = await self.runner.run(rule.spec.task, value,
                                       request_id=f"{request_id}-{rule.name}")
        if rule.spec.select:
            return get_path(result.output, rule.spec.select)
        return result.output

    async def should_block(self, rule: Rule, body: Body, request_id: str) -> bool:
        if rule.scanner is not None:
            return pii_found(rule.scanner, body)
        label = await self.compute(rule, body, request_id)
        if label is MISSING:
            return False
        if isinstance(label, dict):
            label = label.get("label")
        return str(label) in rule.spec.block_labels
