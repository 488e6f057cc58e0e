"""Answers from retrieved passages: the prompt, citation clean-up, extractive answers, refusal.

Passages are numbered [1]..[n] in the prompt. After generation, every ``[n]``
(or ``[n, m]``) whose number is not a passage in the context is removed from the
text, and the citations list maps each number that remains to its passage
(document id, title, chunk id, character span, score). :class:`CitationFilter`
does the same on a stream, holding back only an unfinished ``[...`` at the end
of a delta.

A passage the injection guard flagged at or over the caller's threshold is
*withheld*: its number stays (so citations keep their meaning) but the model sees
:data:`WITHHELD` instead of its text; :attr:`Answer.flagged_passages` names it.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from lockgate.rag.analysis import analyze
from lockgate.rag.types import Hit

__all__ = [
    "REFUSAL",
    "WITHHELD",
    "Answer",
    "CitationFilter",
    "build_messages",
    "citations_for",
    "clean_citations",
    "extractive_answer",
]

REFUSAL = "I can't answer that from the available documents."

WITHHELD = "[passage withheld by the gateway: it looks like a prompt-injection attempt]"

_CITE = re.compile(r"\[(\d{1,3}(?:\s*[,;]\s*\d{1,3})*)\]")
_SENT = re.compile(r"(?<=[.!?])\s+")

SYSTEM_PROMPT = (
    "You answer questions using only the numbered passages provided. Cite the passages you use "
    "with their numbers in square brackets, like [1] or [2][3]. If the passages do not contain "
    f'the answer, reply exactly: "{REFUSAL}" Do not use outside knowledge.'
)


@dataclass(slots=True)
class Answer:
    answer: str
    citations: list[dict[str, Any]]
    passages: list[Hit]
    refused: bool
    confidence: float | None
    confidence_kind: str
    threshold: float | None
    mode: str
    model: str | None
    extractive: bool
    usage: dict[str, int] = field(default_factory=dict)
    flagged_passages: list[dict[str, Any]] = field(default_factory=list)
    """Passages the injection guard flagged: ``n``, ``doc_id``, ``rules``, ``withheld``."""
    facts: list[dict[str, Any]] = field(default_factory=list)
    """Knowledge-graph facts given to the answer: ``n`` (cited as [Gn]), subject,
    predicate, object, doc_id, chunk_id, evidence, ``cited``."""
    mode_note: str | None = None
    """Why ``mode`` differs from the mode asked for (e.g. hybrid without embeddings)."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "answer": self.answer,
            "citations": self.citations,
            "passages": [dict(h.as_dict(), n=i + 1) for i, h in enumerate(self.passages)],
            "refused": self.refused,
            "confidence": None if self.confidence is None else round(self.confidence, 6),
            "confidence_kind": self.confidence_kind,
            "threshold": self.threshold,
            "mode": self.mode,
            "model": self.model,
            "extractive": self.extractive,
            "usage": self.usage,
            "flagged_passages": self.flagged_passages,
            "facts": self.facts,
            **({"mode_note": self.mode_note} if self.mode_note else {}),
        }


def build_messages(
    question: str, hits: Sequence[Hit], withheld: Collection[int] = (),
    facts: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """The prompt; passage numbers in ``withheld`` (1-based) are replaced by :data:`WITHHELD`;
    ``facts`` (knowledge-graph facts as text) are listed as [G1]..."""
    blocks = []
    for i, h in enumerate(hits, 1):
        head = h.title + (f" — {h.heading}" if h.heading else "")
        blocks.append(f"[{i}] {head}\n{WITHHELD if i in withheld else h.text}")
    context = "\n\n".join(blocks)
    system = SYSTEM_PROMPT
    if facts:
        context += "\n\nGraph facts:\n" + "\n".join(f"[G{i}] {f}" for i, f in enumerate(facts, 1))
        system += " Graph facts are numbered [G1], [G2]...; cite them the same way."
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": f"Passages:\n\n{context}\n\nQuestion: {question}"},
    ]


def clean_citations(text: str, n_passages: int) -> tuple[str, list[int]]:
    """Drop citation numbers outside 1..n; return the text and the numbers kept, in order."""
    used: list[int] = []

    def repl(m: re.Match[str]) -> str:
        nums = [int(x) for x in re.split(r"\s*[,;]\s*", m.group(1))]
        ok = [n for n in nums if 1 <= n <= n_passages]
        for n in ok:
            if n not in used:
                used.append(n)
        return "".join(f"[{n}]" for n in ok)

    cleaned = _CITE.sub(repl, text)
    cleaned = re.sub(r"[ \t]+([.,;:!?])", r"\1", cleaned)
    cleaned = re.sub(r"[ \t]{2,}", " ", cleaned)
    return cleaned.strip(), used


def citations_for(numbers: Sequence[int], hits: Sequence[Hit]) -> list[dict[str, Any]]:
    out = []
    for n in numbers:
        h = hits[n - 1]
        out.append(
            {
                "n": n,
                "doc_id": h.doc_id,
                "title": h.title,
                "chunk_id": h.chunk_id,
                "char_start": h.char_start,
                "char_end": h.char_end,
                "score": round(h.score, 6),
            }
        )
    return out


def extractive_answer(question: str, hits: Sequence[Hit], max_passages: int = 3) -> str:
    """Best-matching sentence of each of the top passages, each with its citation.

    Passages scoring under half of the best one are left out (they are still
    returned as passages, just not quoted as the answer).
    """
    q = set(analyze(question))
    parts = []
    top = max((h.score for h in hits), default=0.0)
    for i, h in enumerate(hits[:max_passages], 1):
        if i > 1 and top > 0 and h.score < 0.5 * top:
            continue
        sentences = [s.strip() for s in _SENT.split(h.text) if s.strip()]
        if not sentences:
            continue
        best = max(sentences, key=lambda s: (len(q & set(analyze(s))), -abs(len(s) - 200)))
        if len(best) > 400:
            best = best[:400].rsplit(" ", 1)[0] + " …"
        parts.append(f"{best} [{i}]")
    return " ".join(parts)


class CitationFilter:
    """Streaming version of :func:`clean_citations`: feed deltas, get cleaned deltas."""

    def __init__(self, n_passages: int) -> None:
        self.n = n_passages
        self._buf = ""
        self.used: list[int] = []

    def _clean(self, text: str) -> str:
        def repl(m: re.Match[str]) -> str:
            nums = [int(x) for x in re.split(r"\s*[,;]\s*", m.group(1))]
            ok = [n for n in nums if 1 <= n <= self.n]
            for n in ok:
                if n not in self.used:
                    self.used.append(n)
            return "".join(f"[{n}]" for n in ok)

        return _CITE.sub(repl, text)

    def feed(self, delta: str) -> str:
        self._buf += delta
        cut = self._buf.rfind("[")
        if cut >= 0 and "]" not in self._buf[cut:] and len(self._buf) - cut <= 16:
            ready, self._buf = self._buf[:cut], self._buf[cut:]
        else:
            ready, self._buf = self._buf, ""
        return self._clean(ready)

    def flush(self) -> str:
        rest, self._buf = self._buf, ""
        return self._clean(rest)
