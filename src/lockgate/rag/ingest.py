"""Ingestion: documents -> chunks -> (cached or new) embeddings -> one atomic write per document.

* unchanged content (sha256 of title + text) is skipped, only ``indexed_at`` is
  refreshed; same content with a new ACL/title/metadata swaps those in place;
* changed content is re-chunked; chunks whose id (document id + chunk text) is
  unchanged keep their stored vectors, the rest are embedded through the
  pipeline in batches across documents; old chunks out and new chunks in happen
  in one transaction;
* ``sync`` also deletes documents of the collection that are not in the source;
* every bad input (unreadable, unknown type, too large, embedding failure for
  that batch) is reported in :class:`IngestReport` and skipped.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lockgate.rag.access import acl_hash
from lockgate.rag.analysis import term_counts
from lockgate.rag.catalog import CollectionInfo
from lockgate.rag.chunking import ChunkingOptions, chunk_document
from lockgate.rag.dense import to_blob
from lockgate.rag.graph import KnowledgeGraph
from lockgate.rag.loaders import DEFAULT_MAX_BYTES, LoadError, iter_files, load_file
from lockgate.rag.models import Embedder
from lockgate.rag.repository import RagStore
from lockgate.rag.types import PUBLIC, Chunk, SourceDocument

__all__ = ["IngestReport", "Ingestor", "content_hash", "documents_from_paths"]

MAX_BATCH_DOCS = 256
"""Documents written per transaction at most (also without embeddings)."""

Progress = Callable[[int, int | None], None]
"""Called with (documents done, total or None)."""


def content_hash(doc: SourceDocument) -> str:
    h = hashlib.sha256()
    h.update(doc.title.encode())
    h.update(b"\x00")
    h.update(doc.text.encode())
    return h.hexdigest()


@dataclass(slots=True)
class IngestReport:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    permissions_updated: int = 0
    removed: int = 0
    chunks_written: int = 0
    chunks_embedded: int = 0
    chunks_reused: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "permissions_updated": self.permissions_updated,
            "removed": self.removed,
            "chunks_written": self.chunks_written,
            "chunks_embedded": self.chunks_embedded,
            "chunks_reused": self.chunks_reused,
            "failed": [{"source": s, "reason": r} for s, r in self.failed],
        }


async def documents_from_paths(
    paths: Sequence[Path],
    report: IngestReport,
    *,
    principals: tuple[str, ...] = (PUBLIC,),
    metadata: dict[str, Any] | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> AsyncIterator[SourceDocument]:
    """Documents read from files and directories; failures go to ``report.failed``."""
    for file, root in iter_files(list(paths)):
        try:
            docs = load_file(file, root, principals=principals, metadata=metadata,
                             max_bytes=max_bytes)
        except LoadError as exc:
            report.failed.append((exc.path, exc.reason))
            continue
        except Exception as exc:  # a parser bug must not end the run
            report.failed.append((str(file), f"{exc.__class__.__name__}: {exc}"))
            continue
        for d in docs:
            yield d


@dataclass(slots=True)
class _Pending:
    doc: SourceDocument
    chash: str
    chunks: list[Chunk]
    terms: list[Counter[str]]
    vectors: list[bytes | None]
    todo: list[int]
    is_new: bool = True


def _embed_text(doc: SourceDocument, chunk: Chunk) -> str:
    parts = [doc.title, chunk.heading, chunk.text]
    return "\n".join(p for p in parts if p)


def _lex_text(doc: SourceDocument, chunk: Chunk) -> str:
    return " ".join(p for p in (doc.title, chunk.heading, chunk.text) if p)


class Ingestor:
    """Writes documents into one collection."""

    def __init__(
        self,
        store: RagStore,
        coll: CollectionInfo,
        embedder: Embedder | None,
        *,
        chunking: ChunkingOptions | None = None,
        embed_batch_chunks: int = 256,
        graph: KnowledgeGraph | None = None,
    ) -> None:
        self.store = store
        self.coll = coll
        self.embedder = embedder
        self.chunking = chunking or ChunkingOptions()
        self.embed_batch_chunks = embed_batch_chunks
        self.graph = graph

    async def run(
        self,
        documents: AsyncIterator[SourceDocument] | Iterable[SourceDocument],
        report: IngestReport | None = None,
        *,
        sync: bool = False,
        progress: Progress | None = None,
        total: int | None = None,
    ) -> IngestReport:
        report = report or IngestReport()
        existing = await self.store.documents(self.coll.id)
        seen: set[str] = set()
        unchanged: list[str] = []
        pending: list[_Pending] = []
        n_pending_chunks = 0
        done = 0

        async def source() -> AsyncIterator[SourceDocument]:
            if hasattr(documents, "__aiter__"):
                async for d in documents:
                    yield d
            else:
                for d in documents:
                    yield d

        async for doc in source():
            done += 1
            if doc.doc_id in seen:
                report.failed.append((doc.source or doc.doc_id, f"duplicate id {doc.doc_id!r}"))
                continue
            seen.add(doc.doc_id)
            chash = content_hash(doc)
            old = existing.get(doc.doc_id)
            if old is not None and old.content_hash == chash:
                if old.attrs_hash != acl_hash(doc.principals, doc.metadata, doc.title):
                    await self.store.update_attributes(self.coll.id, doc)
                    report.permissions_updated += 1
                else:
                    unchanged.append(doc.doc_id)
                    report.unchanged += 1
                if progress:
                    progress(done, total)
                continue
            item = await self._prepare(doc, chash, old.pk if old else None, report)
            item.is_new = old is None
            pending.append(item)
            n_pending_chunks += len(item.todo)
            if n_pending_chunks >= self.embed_batch_chunks or len(pending) >= MAX_BATCH_DOCS:
                await self._flush(pending, report)
                pending, n_pending_chunks = [], 0
            if progress:
                progress(done, total)
        await self._flush(pending, report)
        await self.store.touch(self.coll.id, unchanged)
        if sync:
            gone = sorted(set(existing) - seen)
            report.removed = await self.store.delete_documents(self.coll.id, gone)
        return report

    async def _prepare(
        self, doc: SourceDocument, chash: str, old_pk: int | None, report: IngestReport
    ) -> _Pending:
        chunks = chunk_document(doc.doc_id, doc.text, self.chunking)
        terms = [term_counts(_lex_text(doc, c)) for c in chunks]
        vectors: list[bytes | None] = [None] * len(chunks)
        todo: list[int] = []
        if self.embedder is not None:
            cached = await self.store.chunk_embeddings(old_pk) if old_pk is not None else {}
            for i, c in enumerate(chunks):
                blob = cached.get(c.chunk_id)
                if blob is not None:
                    vectors[i] = blob
                    report.chunks_reused += 1
                else:
                    todo.append(i)
        return _Pending(doc, chash, chunks, terms, vectors, todo)

    async def _flush(self, pending: list[_Pending], report: IngestReport) -> None:
        if not pending:
            return
        if self.embedder is not None:
            texts = [_embed_text(p.doc, p.chunks[i]) for p in pending for i in p.todo]
            if texts:
                try:
                    vecs = await self.embedder.embed(texts)
                except Exception as exc:  # reported per document; the run goes on
                    for p in pending:
                        report.failed.append(
                            (p.doc.source or p.doc.doc_id, f"embedding failed: {exc}")
                        )
                    return
                j = 0
                for p in pending:
                    for i in p.todo:
                        p.vectors[i] = to_blob(vecs[j])
                        j += 1
                report.chunks_embedded += len(texts)
                if self.coll.dim is None and len(vecs):
                    await self.store.set_collection(self.coll.id, dim=int(vecs.shape[1]))
        pks = await self.store.replace_documents(
            self.coll.id, [(p.doc, p.chash, p.chunks, p.terms, p.vectors) for p in pending]
        )
        for p, pk in zip(pending, pks, strict=True):
            if self.graph is not None:  # entities/relations of the chunks, same ACL
                try:
                    await self.graph.index_document(self.coll.id, pk, p.doc.title, p.chunks)
                except Exception as exc:  # the passages are in; report the missing facts
                    report.failed.append((p.doc.source or p.doc.doc_id,
                                          f"graph extraction failed: {exc}"))
            report.chunks_written += len(p.chunks)
            if p.is_new:
                report.added += 1
            else:
                report.updated += 1
