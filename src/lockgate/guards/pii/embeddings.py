"""PII policy actions applied to an OpenAI embeddings request's ``input``.

``input`` is a string, a list of strings, or token ids (a list of ints / of lists
of ints). Strings are scanned; token ids cannot be read and pass unchanged.

* ``block``: raise :class:`~lockgate.guards.errors.PiiBlocked`
* ``redact`` and ``redact_restore``: values become ``[EMAIL]`` etc. (an embedding
  has no text to restore placeholders into, so both redact with labels)
* ``log_only``: report findings, change nothing

The body is never mutated; an unchanged body is returned as the same object.
"""

from __future__ import annotations

from typing import Any

from lockgate.guards.errors import PiiBlocked
from lockgate.guards.pii.body import BodyFinding, PiiAction, PiiOutcome
from lockgate.guards.pii.scanner import PiiScanner, step
from lockgate.guards.pii.transform import redact_text

__all__ = ["guard_embeddings_request"]


def guard_embeddings_request(
    body: dict[str, Any], scanner: PiiScanner, action: PiiAction
) -> PiiOutcome:
    findings: list[BodyFinding] = []
    redact = action in ("redact", "redact_restore")

    def visit(text: str, path: str) -> str:
        if not redact:
            found, _ = step(scanner, text, 0, final=True)
            findings.extend(BodyFinding(f.entity, path) for f in found)
            return text
        new, found = redact_text(scanner, text)
        findings.extend(BodyFinding(f.entity, path) for f in found)
        return new

    value = body.get("input")
    new_value: Any = value
    if isinstance(value, str):
        new_value = visit(value, "input")
    elif isinstance(value, list):
        items: list[Any] | None = None
        for i, item in enumerate(value):
            if isinstance(item, str):
                text = visit(item, f"input[{i}]")
                if text is not item:
                    if items is None:
                        items = list(value)
                    items[i] = text
        if items is not None:
            new_value = items
    if action == "block" and findings:
        raise PiiBlocked(f.entity for f in findings)
    if new_value is value:
        return PiiOutcome(body, findings)
    return PiiOutcome({**body, "input": new_value}, findings)
