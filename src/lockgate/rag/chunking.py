"""Structure-aware chunking: headings open sections, paragraphs are units, sentences the fallback.

Input is a document's text where headings are Markdown ``#`` lines (the loaders
turn HTML ``<h1>``.., DOCX "Heading N" styles and Markdown into that form).
A chunk never crosses a heading; paragraphs are packed up to ``target_chars``;
a paragraph longer than ``max_chars`` is split at sentence ends (or hard-cut).
Each chunk keeps its heading path ("Guide > Install") and its exact character
span in the text, and its id is ``<doc_id>#<hash>`` where the hash is taken over
the document id and the chunk's text, so an unchanged chunk keeps its id (and its
cached embedding) when other parts of the document change.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from lockgate.rag.types import Chunk

__all__ = ["ChunkingOptions", "chunk_document", "chunk_id_for"]

_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$")
_FENCE = re.compile(r"^(```|~~~)")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")


@dataclass(frozen=True, slots=True)
class ChunkingOptions:
    target_chars: int = 900
    """Pack paragraphs up to about this size (MiniLM reads 256 tokens, ~1,000 characters)."""
    max_chars: int = 1400
    min_chars: int = 1


def chunk_id_for(doc_id: str, text: str) -> str:
    digest = hashlib.sha256(f"{doc_id}\x00{text}".encode()).hexdigest()[:16]
    return f"{doc_id}#{digest}"


@dataclass(slots=True)
class _Block:
    start: int
    end: int
    heading_path: str


def _blocks(text: str) -> list[_Block]:
    """Paragraph blocks (char spans) under their heading path; heading lines are excluded."""
    blocks: list[_Block] = []
    path: list[tuple[int, str]] = []
    in_fence = False
    para_start: int | None = None
    para_end = 0
    pos = 0

    def flush() -> None:
        nonlocal para_start
        if para_start is not None:
            blocks.append(_Block(para_start, para_end, " > ".join(h for _, h in path)))
            para_start = None

    for line in text.splitlines(keepends=True):
        start, end = pos, pos + len(line.rstrip("\r\n"))
        pos += len(line)
        stripped = line.strip()
        if _FENCE.match(stripped):
            in_fence = not in_fence
        m = None if in_fence else _HEADING.match(stripped)
        if m:
            flush()
            level = len(m.group(1))
            path = [(lvl, h) for lvl, h in path if lvl < level]
            path.append((level, m.group(2).strip()))
            continue
        if not stripped and not in_fence:
            flush()
            continue
        if para_start is None:
            para_start = start + (len(line) - len(line.lstrip()))
        para_end = end
    flush()
    return blocks


def _split_long(text: str, start: int, end: int, max_chars: int) -> list[tuple[int, int]]:
    """Split [start, end) at sentence ends (then at spaces) into pieces of at most max_chars."""
    pieces: list[tuple[int, int]] = []
    cuts = [start] + [start + m.end() for m in _SENTENCE_END.finditer(text[start:end])] + [end]
    cur = start
    last_ok = start
    for c in cuts[1:]:
        if c - cur > max_chars and last_ok > cur:
            pieces.append((cur, last_ok))
            cur = last_ok
        last_ok = c
    pieces.append((cur, end))
    out: list[tuple[int, int]] = []
    for s, e in pieces:
        while e - s > max_chars:
            cut = text.rfind(" ", s + max_chars // 2, s + max_chars)
            cut = cut if cut > s else s + max_chars
            out.append((s, cut))
            s = cut
            while s < e and text[s].isspace():
                s += 1
        if e > s:
            out.append((s, e))
    return out


def chunk_document(doc_id: str, text: str, options: ChunkingOptions | None = None) -> list[Chunk]:
    """Chunks of ``text`` in order; spans index into ``text`` itself."""
    opts = options or ChunkingOptions()
    spans: list[tuple[int, int, str]] = []
    cur: tuple[int, int, str] | None = None
    for b in _blocks(text):
        for s, e in _split_long(text, b.start, b.end, opts.max_chars):
            if cur is not None and cur[2] == b.heading_path and e - cur[0] <= opts.target_chars:
                cur = (cur[0], e, cur[2])
                continue
            if cur is not None:
                spans.append(cur)
            cur = (s, e, b.heading_path)
    if cur is not None:
        spans.append(cur)
    chunks: list[Chunk] = []
    seen: dict[str, int] = {}
    for s, e, heading in spans:
        body = text[s:e]
        if len(body.strip()) < opts.min_chars:
            continue
        cid = chunk_id_for(doc_id, body)
        n = seen.get(cid, 0)
        seen[cid] = n + 1
        if n:
            cid = f"{cid}-{n + 1}"
        chunks.append(Chunk(cid, len(chunks), body, heading, s, e))
    return chunks
