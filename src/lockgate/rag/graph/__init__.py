"""Knowledge-graph RAG: entities and relations extracted at ingest, expanded at query time.

:class:`KnowledgeGraph` is what :class:`~lockgate.rag.RagService` holds when
``knowledge_graph.enabled`` is set: the ingestor calls :meth:`index_document` after a
document's chunks are written (same ACL: graph rows point at the chunk and its document and
are read through that document's principals), and the retriever calls :meth:`expand`
(entity linking + k-hop expansion) and adds the graph's passage scores to its fused BM25 /
dense scores. The facts used come back with the retrieval and are cited in answers
(``[G1]``...).

Modules: ``extract`` (rule and model extractors), ``store`` (tables, ACL-joined reads),
``expand`` (linking, expansion, score merge).

Partial: a document's graph rows are written in a second transaction right after its
chunks (a query in between sees the passages without their facts); entities no longer
mentioned by any passage stay as bare names (never returned: every read goes through a
mention or relation of a readable passage).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lockgate.pipeline import Principal
from lockgate.rag.access import Filters
from lockgate.rag.graph.expand import GraphFact, GraphResult, expand, merge_graph_scores
from lockgate.rag.graph.extract import (
    EXTRACTION_SCHEMA,
    Extraction,
    Extractor,
    ModelExtractor,
    RuleExtractor,
)
from lockgate.rag.graph.store import GraphStore
from lockgate.rag.types import Chunk

__all__ = [
    "EXTRACTION_SCHEMA",
    "Extraction",
    "Extractor",
    "GraphFact",
    "GraphOptions",
    "GraphResult",
    "GraphStore",
    "KnowledgeGraph",
    "ModelExtractor",
    "RuleExtractor",
    "merge_graph_scores",
]


@dataclass(frozen=True, slots=True)
class GraphOptions:
    hops: int = 2
    weight: float = 1.0
    """How much the graph's passage score (0..1) adds to the normalised fused score."""
    max_facts: int = 12
    per_hop: int = 500


class KnowledgeGraph:
    def __init__(self, store: GraphStore, extractor: Extractor,
                 options: GraphOptions | None = None) -> None:
        self.store = store
        self.extractor = extractor
        self.options = options or GraphOptions()

    def for_principal(self, principal: Principal | None) -> KnowledgeGraph:
        """This graph, extracting as ``principal`` (model calls are that key's calls)."""
        return KnowledgeGraph(self.store, self.extractor.with_principal(principal),
                              self.options)

    async def index_document(self, cid: int, doc_pk: int, title: str,
                             chunks: Sequence[Chunk]) -> tuple[int, int]:
        """Extract from each chunk (title included) and store; (mentions, relations)."""
        pks = await self.store.chunk_pks(doc_pk)
        texts = [(pks[c.chunk_id], c.text) for c in chunks if c.chunk_id in pks]
        return await self._index(cid, doc_pk, title, texts)

    async def _index(self, cid: int, doc_pk: int, title: str,
                     texts: Sequence[tuple[int, str]]) -> tuple[int, int]:
        extracted: list[tuple[int, Extraction]] = []
        for pk, chunk_text in texts:
            text = (f"{title}. {chunk_text}" if title and title not in chunk_text[:200]
                    else chunk_text)
            extracted.append((pk, await self.extractor.extract(text)))
        return await self.store.write_document(cid, doc_pk, extracted)

    async def rebuild(self, cid: int) -> dict[str, int]:
        """Re-extract every document of a collection (after enabling the graph on an
        existing collection, or changing the extractor): its rows are replaced."""
        docs = await self.store.documents(cid)
        for doc_pk, title in docs:
            await self.store.clear_document(doc_pk)
            await self._index(cid, doc_pk, title, await self.store.chunk_texts(doc_pk))
        return {"documents": len(docs), **await self.store.stats(cid)}

    async def expand(self, cid: int, question: str, *, principals: Sequence[str] | None,
                     filters: Filters | None = None,
                     exclude_doc_ids: Sequence[str] | None = None) -> GraphResult:
        o = self.options
        return await expand(self.store, cid, question, principals=principals, filters=filters,
                            exclude_doc_ids=exclude_doc_ids, hops=o.hops, per_hop=o.per_hop,
                            max_facts=o.max_facts)
