"""Graph facts in answers: ``[G1]``... citations cleaned and mapped back to their facts."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from lockgate.rag.graph.expand import GraphFact

__all__ = ["cite_facts", "extractive_facts"]

_GCITE = re.compile(r"\[G(\d{1,3})\]")


def cite_facts(text: str, facts: Sequence[GraphFact]) -> tuple[str, list[dict[str, Any]]]:
    """Drop ``[Gn]`` outside 1..len(facts); every fact with ``n`` and ``cited``."""
    used: set[int] = set()

    def repl(m: re.Match[str]) -> str:
        n = int(m.group(1))
        if 1 <= n <= len(facts):
            used.add(n)
            return m.group(0)
        return ""

    cleaned = _GCITE.sub(repl, text)
    return cleaned, [dict(f.as_dict(), n=i, cited=i in used) for i, f in enumerate(facts, 1)]


def extractive_facts(facts: Sequence[GraphFact], limit: int = 3) -> str:
    """The top facts as a sentence for an extractive answer, each cited."""
    if not facts:
        return ""
    parts = [f"{f.text()} [G{i}]" for i, f in enumerate(facts[:limit], 1)]
    return "Graph facts: " + "; ".join(parts) + "."
