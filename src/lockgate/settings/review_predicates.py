"""The predicate language of ``review.policies.<task>.when.predicates``, parsed at load time.

One predicate is ``[request:]PATH OP VALUE``:

- ``PATH`` is a JSON path from the root ``$``: ``$.amount``, ``$.lines[0].sku``,
  ``$['odd key']``. Without a prefix it reads the model's (validated) answer; with
  ``request:`` the request body.
- ``OP`` is one of ``== != > >= < <= in not_in contains`` (``not in`` works too), or
  ``exists`` with no value.
- ``VALUE`` is a number, ``true``/``false``/``null``, a quoted or bare string, or a list
  ``[legal, medical]`` of those.

A predicate on a missing path, or comparing values of different kinds (a string
``> 10``), is false, never an error: a malformed answer must not crash the gate.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["Op", "Predicate", "parse_predicate"]

Op = Literal["==", "!=", ">", ">=", "<", "<=", "in", "not_in", "contains", "exists"]
_OPS: tuple[str, ...] = ("==", "!=", ">=", "<=", ">", "<")
_WORD_OPS = {"in": "in", "not in": "not_in", "not_in": "not_in", "contains": "contains"}

_STEP = re.compile(
    r"\.([A-Za-z_][A-Za-z0-9_-]*)|\[(\d+)\]|\[\s*'([^']*)'\s*\]|\[\s*\"([^\"]*)\"\s*\]"
)
_NUMBER = re.compile(r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_BARE = re.compile(r"[A-Za-z0-9_.@/-]+")
MAX_LEN = 1000


@dataclass(frozen=True, slots=True)
class Predicate:
    text: str
    on: Literal["output", "request"]
    path: tuple[str | int, ...]
    op: Op
    value: Any = None


def _path(text: str) -> tuple[tuple[str | int, ...], str]:
    """Parse ``$...`` at the start of ``text``; returns the steps and the rest."""
    if not text.startswith("$"):
        raise ValueError("a path starts with '$'")
    pos = 1
    steps: list[str | int] = []
    while pos < len(text):
        m = _STEP.match(text, pos)
        if m is None:
            break
        name, index, q1, q2 = m.groups()
        if index is not None:
            steps.append(int(index))
        else:
            steps.append(next(s for s in (name, q1, q2) if s is not None))
        pos = m.end()
    return tuple(steps), text[pos:]


def _literal(text: str) -> tuple[Any, str]:
    text = text.lstrip()
    if not text:
        raise ValueError("a value is missing")
    if text[0] in "'\"":
        end = text.find(text[0], 1)
        if end < 0:
            raise ValueError("an unterminated string")
        return text[1:end], text[end + 1 :]
    if text[0] == "[":
        items: list[Any] = []
        rest = text[1:].lstrip()
        if rest.startswith("]"):
            return items, rest[1:]
        while True:
            item, rest = _literal(rest)
            if isinstance(item, list):
                raise ValueError("lists cannot be nested")
            items.append(item)
            rest = rest.lstrip()
            if rest.startswith(","):
                rest = rest[1:]
                continue
            if rest.startswith("]"):
                return items, rest[1:]
            raise ValueError("a list needs ',' between items and a closing ']'")
    m = _NUMBER.match(text)
    if m is not None and (m.end() == len(text) or not _BARE.match(text[m.end()])):
        raw = m.group(0)
        value: Any = float(raw) if any(c in raw for c in ".eE") else int(raw)
        return value, text[m.end() :]
    m = _BARE.match(text)
    if m is None:
        raise ValueError(f"cannot read a value at {text[:20]!r}")
    word = m.group(0)
    const = {"true": True, "false": False, "null": None}
    return (const.get(word, word)), text[m.end() :]


def parse_predicate(text: str) -> Predicate:
    """Parse one predicate; ValueError names what is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("a predicate is a non-empty string")
    if len(text) > MAX_LEN:
        raise ValueError(f"a predicate is at most {MAX_LEN} characters")
    src = text.strip()
    on: Literal["output", "request"] = "output"
    if src.startswith("request:"):
        on, src = "request", src[len("request:") :].lstrip()
    elif src.startswith("output:"):
        src = src[len("output:") :].lstrip()
    try:
        path, rest = _path(src)
        rest = rest.strip()
        op: str | None = None
        for word in ("not in", "not_in", "in", "contains", "exists"):
            if rest.startswith(word) and (len(rest) == len(word) or rest[len(word)] in " \t[\"'"):
                op, rest = ("exists" if word == "exists" else _WORD_OPS[word]), rest[len(word):]
                break
        if op is None:
            for sym in _OPS:
                if rest.startswith(sym):
                    op, rest = sym, rest[len(sym) :]
                    break
        if op is None:
            raise ValueError("an operator (== != > >= < <= in not in contains exists) is missing")
        value: Any = None
        if op != "exists":
            value, rest = _literal(rest)
        if rest.strip():
            raise ValueError(f"unexpected text after the value: {rest.strip()[:30]!r}")
        if op in ("in", "not_in") and not isinstance(value, list):
            raise ValueError(f"'{op}' needs a list like [a, b]")
        if op in (">", ">=", "<", "<=") and (
            isinstance(value, bool) or not isinstance(value, int | float | str)
        ):
            raise ValueError(f"'{op}' needs a number or a string")
    except ValueError as exc:
        raise ValueError(f"review predicate {text!r}: {exc}") from None
    return Predicate(text=text, on=on, path=path, op=op, value=value)  # type: ignore[arg-type]
