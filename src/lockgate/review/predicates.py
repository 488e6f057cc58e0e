"""Evaluate parsed review predicates (:mod:`lockgate.settings.review_predicates`)."""

from __future__ import annotations

from typing import Any

from lockgate.settings.review_predicates import Predicate

__all__ = ["MISSING", "evaluate", "lookup"]


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


def lookup(doc: Any, path: tuple[str | int, ...]) -> Any:
    """The value at ``path`` in ``doc``, or :data:`MISSING`."""
    cur = doc
    for step in path:
        if isinstance(step, int):
            if not isinstance(cur, list) or not -len(cur) <= step < len(cur):
                return MISSING
            cur = cur[step]
        else:
            if not isinstance(cur, dict) or step not in cur:
                return MISSING
            cur = cur[step]
    return cur


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _equal(a: Any, b: Any) -> bool:
    if _number(a) and _number(b):
        return bool(a == b)
    return type(a) is type(b) and bool(a == b)


def evaluate(pred: Predicate, output: Any, request: Any) -> bool:
    """True when the predicate holds; a missing path or mismatched kinds is False."""
    value = lookup(request if pred.on == "request" else output, pred.path)
    op = pred.op
    if op == "exists":
        return value is not MISSING
    if value is MISSING:
        return False
    want = pred.value
    if op == "==":
        return _equal(value, want)
    if op == "!=":
        return not _equal(value, want)
    if op == "in":
        return any(_equal(value, w) for w in want)
    if op == "not_in":
        return not any(_equal(value, w) for w in want)
    if op == "contains":
        if isinstance(value, str) and isinstance(want, str):
            return want in value
        if isinstance(value, list):
            return any(_equal(v, want) for v in value)
        return False
    # ordering: numbers with numbers, strings with strings
    if _number(value) and _number(want):
        a, b = float(value), float(want)
    elif isinstance(value, str) and isinstance(want, str):
        a, b = value, want  # type: ignore[assignment]
    else:
        return False
    if op == ">":
        return a > b
    if op == ">=":
        return a >= b
    if op == "<":
        return a < b
    return a <= b
