"""Permission-aware RAG: collections, ingestion, ACL-filtered hybrid retrieval, cited answers.

Public surface (adapters build one :class:`RagService` per process)::

    from lockgate.rag import Caller, RagService, RagSettings, RagStore
    svc = RagService(RagStore(rt.store.engine), rt.pipeline, RagSettings(embed_model="embed"))

Modules: ``types`` (records, principals), ``loaders`` (files -> documents),
``chunking``, ``analysis`` (BM25 terms), ``repository`` (:class:`RagStore`, the
storage facade over ``catalog`` (collections), ``documents`` (documents, ACL rows),
``chunks``, ``lexical`` (FTS5 / postings index) and ``access`` (ACL + filters in
SQL); the tables are the store's, under its migrations), ``bm25`` (the scoring
formula), ``dense`` (in-memory vectors), ``models`` (the pipeline door),
``ingest``, ``retrieval`` (BM25/dense/hybrid + fusion), ``answer`` (prompt,
citations, refusal), ``service`` (the facade), ``evaluation`` (BEIR metrics,
calibration).
"""

from lockgate.rag.access import Filters
from lockgate.rag.answer import REFUSAL, Answer
from lockgate.rag.catalog import CollectionInfo
from lockgate.rag.ingest import IngestReport
from lockgate.rag.repository import RagStore
from lockgate.rag.retrieval import Reranker, RetrievalResult
from lockgate.rag.service import RagService, RagSettings, StreamEvent, UnknownCollection
from lockgate.rag.types import PUBLIC, Caller, Hit, SourceDocument, normalize_principal

__all__ = [
    "PUBLIC",
    "REFUSAL",
    "Answer",
    "Caller",
    "CollectionInfo",
    "Filters",
    "Hit",
    "IngestReport",
    "RagService",
    "RagSettings",
    "RagStore",
    "Reranker",
    "RetrievalResult",
    "SourceDocument",
    "StreamEvent",
    "UnknownCollection",
    "normalize_principal",
]
