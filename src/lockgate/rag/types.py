"""Plain records the RAG package passes around: documents, chunks, callers, hits."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "PUBLIC",
    "Caller",
    "Chunk",
    "Hit",
    "Mode",
    "SourceDocument",
    "normalize_principal",
]

Mode = Literal["bm25", "dense", "hybrid"]

PUBLIC = "public"
_PRINCIPAL = re.compile(r"^(public|(user|group|team):[^\s]{1,200})$")


def normalize_principal(value: str) -> str:
    """Validate one ACL principal (``public``, ``user:<id>``, ``group:<name>``, ``team:<id>``)."""
    v = value.strip()
    if not _PRINCIPAL.match(v):
        raise ValueError(
            f"bad ACL principal {value!r}: use public, user:<id>, group:<name> or team:<id>"
        )
    return v


@dataclass(frozen=True, slots=True)
class Caller:
    """On whose behalf a query runs. ``principals()`` is what the ACL is matched against.

    ``all_access`` is for operators (the master key, ``lockgate rag eval``): it
    skips the ACL and must never be set from a client-supplied value.
    """

    user_id: str | None = None
    groups: tuple[str, ...] = ()
    team_id: str | None = None
    all_access: bool = False

    def principals(self) -> list[str]:
        out = [PUBLIC]
        if self.user_id:
            out.append(f"user:{self.user_id}")
        out.extend(f"group:{g}" for g in self.groups if g)
        if self.team_id:
            out.append(f"team:{self.team_id}")
        return sorted(set(out))


@dataclass(slots=True)
class SourceDocument:
    """One document as read from a file or an API request, before chunking."""

    doc_id: str
    text: str
    title: str = ""
    source: str = ""
    principals: tuple[str, ...] = (PUBLIC,)
    metadata: dict[str, Any] = field(default_factory=dict)
    fmt: str = "text"
    """markdown, text, html, pdf, docx, beir: decides how the chunker reads structure."""
    source_mtime: float | None = None


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of a document, with its character span in the document's text."""

    chunk_id: str
    ord: int
    text: str
    heading: str
    char_start: int
    char_end: int


@dataclass(slots=True)
class Hit:
    """One retrieved chunk with what a citation needs."""

    chunk_pk: int
    chunk_id: str
    doc_id: str
    title: str
    text: str
    heading: str
    char_start: int
    char_end: int
    score: float = 0.0
    """The fused (ranking) score; meaningful only relative to other hits of one query."""
    bm25: float | None = None
    cosine: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "chunk_id": self.chunk_id,
            "doc_id": self.doc_id,
            "title": self.title,
            "text": self.text,
            "heading": self.heading,
            "char_start": self.char_start,
            "char_end": self.char_end,
            "score": round(self.score, 6),
            "bm25": None if self.bm25 is None else round(self.bm25, 6),
            "cosine": None if self.cosine is None else round(self.cosine, 6),
            "metadata": self.metadata,
        }
