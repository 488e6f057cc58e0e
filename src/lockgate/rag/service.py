"""RagService: the RAG feature's public surface (HTTP and CLI adapters call only this).

Build one per process with the store engine and the gateway pipeline::

    svc = RagService(RagStore(rt.store.engine), rt.pipeline, RagSettings(embed_model="embed"))
    await svc.ingest_paths("handbook", [Path("docs/")], principal=p, acl=("group:eng",))
    ans = await svc.answer("handbook", "How do I ...?", Caller(user_id="u1", groups=("eng",)),
                           principal=p)

Every model call (embeddings at ingest and query, generation) is a ``Call``
through the pipeline, with ``source="rag"`` and the caller's principal.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lockgate.pipeline.call import Principal
from lockgate.rag.access import Filters
from lockgate.rag.answer import (
    REFUSAL,
    Answer,
    CitationFilter,
    build_messages,
    citations_for,
    clean_citations,
    extractive_answer,
)
from lockgate.rag.catalog import CollectionInfo, UnknownCollection
from lockgate.rag.chunking import ChunkingOptions
from lockgate.rag.dense import DenseIndexes, DenseOptions
from lockgate.rag.graph import (
    Extractor,
    GraphOptions,
    GraphStore,
    KnowledgeGraph,
    ModelExtractor,
    RuleExtractor,
)
from lockgate.rag.graph.cite import cite_facts, extractive_facts
from lockgate.rag.ingest import Ingestor, IngestReport, Progress, documents_from_paths
from lockgate.rag.loaders import DEFAULT_MAX_BYTES
from lockgate.rag.models import Embedder, ModelPipeline, chat_call
from lockgate.rag.repository import RagStore
from lockgate.rag.retrieval import DEFAULT_ALPHA, Fusion, Reranker, RetrievalResult, Retriever
from lockgate.rag.types import PUBLIC, Caller, Hit, Mode, SourceDocument

__all__ = ["DEFAULT_THRESHOLDS", "RagService", "RagSettings", "StreamEvent", "UnknownCollection"]

DEFAULT_THRESHOLDS = {"cosine": 0.30, "bm25_norm": 0.12}
"""Refusal thresholds used until ``lockgate rag calibrate`` stores one for the collection."""


@dataclass(frozen=True, slots=True)
class RagSettings:
    embed_model: str | None = None
    """Public model name (through the gateway) for new collections; None = BM25 only."""
    generation_model: str | None = None
    """Public chat model for answers; None = extractive answers."""
    mode: Mode = "hybrid"
    fusion: Fusion = "convex"
    alpha: float = DEFAULT_ALPHA
    k: int = 5
    candidates: int = 100
    max_tokens: int = 384
    embed_batch: int = 64
    chunking: ChunkingOptions = field(default_factory=ChunkingOptions)
    max_file_bytes: int = DEFAULT_MAX_BYTES
    pinned_thresholds: Mapping[str, tuple[float, str | None]] = field(default_factory=dict)
    """collection -> (threshold, kind or None for any): the operator's config
    (``rag.collections.<name>.threshold``) wins over a calibrated/stored one."""
    graph: GraphOptions | None = None
    """Knowledge graph (lockgate.rag.graph): extracted at ingest, expanded at query; None = off."""
    graph_model: str | None = None
    """Chat model extracting entities/relations through the pipeline; None = rule extractor."""


@dataclass(slots=True)
class StreamEvent:
    """``delta`` (text) events, then one ``done`` carrying the full :class:`Answer`."""

    kind: str
    text: str = ""
    answer: Answer | None = None


class RagService:
    def __init__(
        self,
        store: RagStore,
        pipeline: ModelPipeline,
        settings: RagSettings | None = None,
        *,
        reranker: Reranker | None = None,
        dense: DenseOptions | None = None,
    ) -> None:
        self.store = store
        self.pipeline = pipeline
        self.settings = settings or RagSettings()
        self.dense = DenseIndexes(store, dense)
        self._embedders: dict[str, Embedder] = {}
        self.retriever = Retriever(store, self.dense, self._embedders, reranker=reranker)
        self.graph: KnowledgeGraph | None = None
        if self.settings.graph is not None:
            extractor: Extractor = (ModelExtractor(pipeline, self.settings.graph_model)
                                    if self.settings.graph_model else RuleExtractor())
            self.graph = KnowledgeGraph(GraphStore(store.engine), extractor,
                                        self.settings.graph)
            self.retriever.graph = self.graph

    async def aclose(self) -> None:
        """Stop background work (dense graph builds)."""
        await self.dense.aclose()

    # ------------------------------------------------------------ collections

    def _embedder(self, model: str | None) -> Embedder | None:
        if not model:
            return None
        emb = self._embedders.get(model)
        if emb is None:
            emb = Embedder(self.pipeline, model, None, batch_size=self.settings.embed_batch)
            self._embedders[model] = emb
        return emb

    async def collection(self, name: str, *, create: bool = False,
                         embed_model: str | None = None) -> CollectionInfo:
        info = await self.store.get_collection(name)
        if info is None:
            if not create:
                raise UnknownCollection(f"no RAG collection named {name!r}")
            info = await self.store.create_collection(
                name, embed_model if embed_model is not None else self.settings.embed_model
            )
        self._embedder(info.embed_model)
        return info

    async def collections(self) -> list[CollectionInfo]:
        return await self.store.list_collections()

    async def drop(self, name: str) -> None:
        info = await self.collection(name)
        await self.store.drop_collection(info.id)
        self.dense.forget(info.id)

    # ------------------------------------------------------------ ingestion

    def _ingestor(self, coll: CollectionInfo, principal: Principal | None) -> Ingestor:
        emb = self._embedder(coll.embed_model)
        if emb is not None:
            emb = Embedder(self.pipeline, emb.model, principal,
                           batch_size=self.settings.embed_batch)
        graph = self.graph.for_principal(principal) if self.graph is not None else None
        return Ingestor(self.store, coll, emb, chunking=self.settings.chunking, graph=graph)

    async def ingest_documents(
        self,
        collection: str,
        documents: Sequence[SourceDocument] | AsyncIterator[SourceDocument],
        *,
        principal: Principal | None = None,
        sync: bool = False,
        progress: Progress | None = None,
        embed_model: str | None = None,
    ) -> IngestReport:
        coll = await self.collection(collection, create=True, embed_model=embed_model)
        total = len(documents) if isinstance(documents, Sequence) else None
        return await self._ingestor(coll, principal).run(
            documents, sync=sync, progress=progress, total=total
        )

    async def ingest_paths(
        self,
        collection: str,
        paths: Sequence[Path],
        *,
        principal: Principal | None = None,
        acl: tuple[str, ...] = (PUBLIC,),
        metadata: dict[str, Any] | None = None,
        sync: bool = False,
        progress: Progress | None = None,
        embed_model: str | None = None,
    ) -> IngestReport:
        coll = await self.collection(collection, create=True, embed_model=embed_model)
        report = IngestReport()
        docs = documents_from_paths(
            paths, report, principals=acl, metadata=metadata,
            max_bytes=self.settings.max_file_bytes,
        )
        return await self._ingestor(coll, principal).run(
            docs, report, sync=sync, progress=progress
        )

    async def rebuild_graph(self, collection: str, *,
                            principal: Principal | None = None) -> dict[str, int]:
        """Extract the knowledge graph of every document again (model calls as ``principal``)."""
        if self.graph is None:
            raise ValueError("the knowledge graph is off (knowledge_graph.enabled: false)")
        coll = await self.collection(collection)
        return await self.graph.for_principal(principal).rebuild(coll.id)

    async def refresh_term_stats(self, collection: str) -> int | None:
        """PostgreSQL: recount the collection's BM25 term statistics (the bounds deletes
        leave only ever loosen, which costs pruning, not correctness); the number of
        terms, None on SQLite."""
        info = await self.collection(collection)
        return await self.store.rebuild_term_stats(info.id)

    async def delete_documents(self, collection: str, doc_ids: Sequence[str]) -> int:
        coll = await self.collection(collection)
        return await self.store.delete_documents(coll.id, doc_ids)

    async def status(self, collection: str) -> dict[str, Any]:
        coll = await self.collection(collection)
        st = await self.store.status(coll.id)
        if self.graph is not None:  # entity, relation and mention counts
            st["graph"] = await self.graph.store.stats(coll.id)
        return {
            "collection": coll.name,
            "embed_model": coll.embed_model,
            "dim": coll.dim,
            "threshold": coll.threshold,
            "version": await self.store.version(coll.id),
            **st,
        }

    # ------------------------------------------------------------ retrieval

    async def retrieve(
        self,
        collection: str,
        query: str,
        caller: Caller,
        *,
        mode: Mode | None = None,
        k: int | None = None,
        filters: Filters | None = None,
        exclude_doc_ids: Sequence[str] | None = None,
        fusion: Fusion | None = None,
        alpha: float | None = None,
        candidates: int | None = None,
        principal: Principal | None = None,
        graph: bool | None = None,
    ) -> RetrievalResult:
        """``graph``: add knowledge-graph expansion (default: on when the graph is enabled)."""
        coll = await self.collection(collection)
        s = self.settings
        return await self.retriever.retrieve(
            coll, query, caller, mode=mode or s.mode, k=k or s.k, filters=filters,
            exclude_doc_ids=exclude_doc_ids, candidates=candidates or s.candidates,
            fusion=fusion or s.fusion, alpha=s.alpha if alpha is None else alpha,
            principal=principal, graph=self.graph is not None if graph is None else graph,
        )

    def threshold_for(self, coll: CollectionInfo, kind: str) -> float | None:
        pinned = self.settings.pinned_thresholds.get(coll.name)
        if pinned is not None and pinned[1] in (None, kind):
            return pinned[0]
        if coll.threshold is not None and coll.threshold_kind in (None, kind):
            return coll.threshold
        return DEFAULT_THRESHOLDS.get(kind)

    async def _prepare_answer(
        self, collection: str, question: str, caller: Caller, principal: Principal | None,
        mode: Mode | None, k: int | None, filters: Filters | None,
    ) -> tuple[RetrievalResult, float | None, bool]:
        coll = await self.collection(collection)
        res = await self.retrieve(collection, question, caller, mode=mode, k=k,
                                  filters=filters, principal=principal)
        threshold = self.threshold_for(coll, res.confidence_kind)
        refuse = not res.hits or (
            threshold is not None and (res.confidence or 0.0) < threshold
        )
        return res, threshold, refuse

    async def answer(
        self,
        collection: str,
        question: str,
        caller: Caller,
        *,
        principal: Principal | None = None,
        model: str | None = None,
        mode: Mode | None = None,
        k: int | None = None,
        filters: Filters | None = None,
    ) -> Answer:
        res, threshold, refuse = await self._prepare_answer(
            collection, question, caller, principal, mode, k, filters
        )
        gen = model or self.settings.generation_model
        base = dict(
            passages=res.hits, confidence=res.confidence, confidence_kind=res.confidence_kind,
            threshold=threshold, mode=res.mode, mode_note=res.note,
        )
        if refuse:
            return Answer(answer=REFUSAL, citations=citations_for(
                range(1, len(res.hits) + 1), res.hits), refused=True, model=None,
                extractive=False, **base)  # type: ignore[arg-type]
        if not gen:
            text, used = clean_citations(extractive_answer(question, res.hits), len(res.hits))
            text, facts = cite_facts(" ".join(
                p for p in (text, extractive_facts(res.facts)) if p), res.facts)
            return Answer(answer=text, citations=citations_for(used, res.hits), refused=False,
                          model=None, extractive=True, facts=facts,
                          **base)  # type: ignore[arg-type]
        flagged, withheld = self._screen(res.hits, principal)
        call = chat_call(gen, build_messages(question, res.hits, withheld,
                                             [f.text() for f in res.facts]), principal,
                         max_tokens=self.settings.max_tokens, end_user=caller.user_id)
        comp = await self.pipeline.chat(call)
        content = _message_text(comp.body)
        text, used = clean_citations(content, len(res.hits))
        text, facts = cite_facts(text, res.facts)
        refused = text.strip().startswith(REFUSAL[:20])
        return Answer(
            answer=text, citations=citations_for(used, res.hits), refused=refused, model=gen,
            extractive=False,
            usage={"prompt_tokens": comp.usage.prompt_tokens,
                   "completion_tokens": comp.usage.completion_tokens},
            flagged_passages=flagged, facts=facts,
            **base,  # type: ignore[arg-type]
        )

    async def answer_stream(
        self,
        collection: str,
        question: str,
        caller: Caller,
        *,
        principal: Principal | None = None,
        model: str | None = None,
        mode: Mode | None = None,
        k: int | None = None,
        filters: Filters | None = None,
    ) -> AsyncIterator[StreamEvent]:
        """Text deltas (citation numbers already cleaned), then a ``done`` event with the Answer."""
        gen = model or self.settings.generation_model
        res, threshold, refuse = await self._prepare_answer(
            collection, question, caller, principal, mode, k, filters
        )
        if refuse or not gen:
            ans = await self.answer(collection, question, caller, principal=principal,
                                    model=None, mode=mode, k=k, filters=filters) if not refuse \
                else Answer(REFUSAL, citations_for(range(1, len(res.hits) + 1), res.hits),
                            res.hits, True, res.confidence, res.confidence_kind, threshold,
                            res.mode, None, False, mode_note=res.note)
            yield StreamEvent("delta", text=ans.answer)
            yield StreamEvent("done", answer=ans)
            return
        flagged, withheld = self._screen(res.hits, principal)
        call = chat_call(gen, build_messages(question, res.hits, withheld,
                                             [f.text() for f in res.facts]), principal,
                         max_tokens=self.settings.max_tokens, stream=True,
                         end_user=caller.user_id)
        filt = CitationFilter(len(res.hits))
        parts: list[str] = []
        usage: dict[str, int] = {}
        stream = await self.pipeline.chat_stream(call)
        async for chunk in stream:
            for choice in chunk.get("choices") or []:
                delta = (choice.get("delta") or {}).get("content") or ""
                if delta:
                    out = filt.feed(delta)
                    if out:
                        parts.append(out)
                        yield StreamEvent("delta", text=out)
            if chunk.get("usage"):
                u = chunk["usage"]
                usage = {"prompt_tokens": int(u.get("prompt_tokens") or 0),
                         "completion_tokens": int(u.get("completion_tokens") or 0)}
        tail = filt.flush()
        if tail:
            parts.append(tail)
            yield StreamEvent("delta", text=tail)
        text = "".join(parts).strip()
        _, facts = cite_facts(text, res.facts)
        yield StreamEvent("done", answer=Answer(
            answer=text, citations=citations_for(filt.used, res.hits), passages=res.hits,
            refused=text.startswith(REFUSAL[:20]), confidence=res.confidence,
            confidence_kind=res.confidence_kind, threshold=threshold, mode=res.mode,
            model=gen, extractive=False, usage=usage, flagged_passages=flagged, facts=facts,
            mode_note=res.note,
        ))

    def _screen(
        self, hits: Sequence[Hit], principal: Principal | None
    ) -> tuple[list[dict[str, Any]], set[int]]:
        """The pipeline's injection guard on the passages about to be sent to the model:
        (flagged passages for the answer, 1-based numbers to withhold)."""
        screen = getattr(self.pipeline, "screen_passages", None)
        if screen is None or not hits:
            return [], set()
        flagged: list[dict[str, Any]] = []
        withheld: set[int] = set()
        for n, (hit, verdict) in enumerate(zip(hits, screen([h.text for h in hits], principal),
                                               strict=True), 1):
            if not verdict.rules:
                continue
            flagged.append({"n": n, "doc_id": hit.doc_id, "chunk_id": hit.chunk_id,
                            "rules": list(verdict.rules), "withheld": verdict.withheld})
            if verdict.withheld:
                withheld.add(n)
        return flagged, withheld

    async def set_threshold(
        self, collection: str, value: float | None, kind: str | None = None
    ) -> None:
        """Store the refusal threshold; ``kind`` (cosine, bm25_norm) limits it to that score."""
        coll = await self.collection(collection)
        await self.store.set_collection(
            coll.id, threshold=value, threshold_kind=kind, clear_threshold=value is None
        )


def _message_text(body: dict[str, Any]) -> str:
    choices = body.get("choices") or []
    if not choices:
        return ""
    msg = choices[0].get("message") or {}
    content = msg.get("content")
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content or "")
