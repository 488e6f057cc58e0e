"""Path patterns and JSON dot paths of facade rules (pure functions, no I/O).

* :func:`compile_path` turns ``/tickets/{id}``, ``/a/*/b`` or ``/files/**`` into a regex:
  ``*`` and ``{name}`` match one non-empty segment, a final ``/**`` matches any rest
  (including nothing). Matching is on the raw (still percent-encoded) path.
* :func:`get_path` / :func:`set_path` read and write ``a.b.c`` in decoded JSON (list
  indexes as digits); :func:`json_matches` checks a rule's ``json`` predicate.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["MISSING", "compile_path", "get_path", "json_matches", "set_path"]

MISSING: Any = object()
"""What :func:`get_path` returns for a path that is not there."""


def compile_path(pattern: str) -> re.Pattern[str]:
    rest = pattern.endswith("/**")
    body = pattern[:-3] if rest else pattern
    parts = []
    for segment in body.split("/")[1:]:
        if segment == "*" or (segment.startswith("{") and segment.endswith("}")):
            parts.append("[^/]+")
        else:
            parts.append(re.escape(segment))
    regex = "/" + "/".join(parts) if parts else ""
    if rest:
        regex += "(?:/.*)?"
    return re.compile(regex or "/")


def get_path(doc: Any, path: str) -> Any:
    if not path:
        return doc
    value = doc
    for part in path.split("."):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return MISSING
    return value


def set_path(doc: Any, path: str, value: Any) -> bool:
    """Set ``path`` in ``doc`` (creating objects on the way); False when a step is not an
    object (e.g. the body is a list or a string sits on the path)."""
    if not isinstance(doc, dict):
        return False
    parts = path.split(".")
    node: Any = doc
    for part in parts[:-1]:
        nxt = node.get(part) if isinstance(node, dict) else None
        if nxt is None:
            nxt = {}
            node[part] = nxt
        if not isinstance(nxt, dict):
            return False
        node = nxt
    node[parts[-1]] = value
    return True


def json_matches(doc: Any, predicate: Mapping[str, Any]) -> bool:
    return all(get_path(doc, key) == want for key, want in predicate.items())
