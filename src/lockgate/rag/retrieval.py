"""Retrieval: BM25, dense and hybrid, each ACL-filtered inside the retriever, then re-checked.

Order of work for one query (``Retriever.retrieve``):

1. BM25 candidates from the store (SQL with the ACL and caller filters in the
   WHERE clause, then ORDER BY score LIMIT n);
2. dense candidates from the in-memory index (ACL mask applied before top-n),
   concurrently with step 1 (the database and the index work at the same time);
3. fusion: ``rrf`` (reciprocal rank fusion, k=60) or ``convex`` (default):
   ``alpha * cosine' + (1 - alpha) * bm25'`` where bm25' = bm25 / max bm25 of the
   query's candidates (theoretical minimum 0) and cosine' the same min-max with
   the theoretical minimum 0; every candidate gets its exact cosine from the
   matrix, a candidate outside the BM25 list gets bm25 0. ``alpha`` was tuned on
   held-out CISI queries (bench/rag_cisi.py, bench/RESULTS.md);
4. optional rerank hook over the top ``rerank_depth`` fused hits;
5. survivors re-read from the documents table with the ACL and filters again
   (the record of truth): a chunk deleted or re-permissioned since the index was
   loaded is dropped here.

Cost bounds: a question longer than :data:`MAX_QUESTION_BYTES` (UTF-8) is refused
with a 400 (``question_too_long``) before any work; the lexical search uses the
query's distinct terms, at most :data:`~lockgate.rag.analysis.MAX_QUERY_TERMS`, each
weighted by its count in the query up to :data:`~lockgate.rag.analysis.MAX_TERM_REPEAT`
(:func:`~lockgate.rag.analysis.query_term_list`). Every stage awaits, so a caller that
cancels the retrieval (client gone) stops it between stages.

``confidence`` is meaningful on its own, for refusal: the best cosine when
dense retrieval ran, otherwise the best BM25 score divided by the query's
maximum possible BM25 (sum of idf * (k1 + 1) over its terms), in [0, 1).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

from lockgate.errors import BadRequest
from lockgate.lazy import lazy_module
from lockgate.pipeline.call import Principal
from lockgate.rag.access import Filters
from lockgate.rag.analysis import query_term_list
from lockgate.rag.catalog import CollectionInfo
from lockgate.rag.dense import DenseIndex, DenseIndexes, one_blas_thread
from lockgate.rag.graph import GraphFact, KnowledgeGraph, merge_graph_scores
from lockgate.rag.models import Embedder
from lockgate.rag.repository import RagStore
from lockgate.rag.types import Caller, Hit, Mode

if TYPE_CHECKING:
    import numpy as np

    from lockgate.rag.dense import F32
else:
    np = lazy_module("numpy")

__all__ = [
    "DEFAULT_ALPHA",
    "MAX_QUESTION_BYTES",
    "Fusion",
    "Reranker",
    "RetrievalResult",
    "Retriever",
    "check_question",
    "convex_fuse",
    "rrf_fuse",
]

Fusion = Literal["rrf", "convex"]
DEFAULT_ALPHA = 0.6
"""Weight of the dense score in convex fusion (tuned on held-out CISI queries)."""
RRF_K = 60
MAX_QUESTION_BYTES = 8 * 1024
"""Longest question (UTF-8 bytes) retrieval accepts; longer ones are a 400."""


def check_question(question: str, limit: int = MAX_QUESTION_BYTES, *,
                   param: str = "question") -> str:
    """``question`` if it fits in ``limit`` UTF-8 bytes, else a 400 ``question_too_long``."""
    if len(question) > limit or len(question.encode("utf-8", "surrogatepass")) > limit:
        raise BadRequest(
            f"The question is too long: at most {limit} bytes (UTF-8) are searched; "
            "shorten it or split it into several questions.",
            param=param, code="question_too_long",
        )
    return question


class Reranker(Protocol):
    """Optional second stage: scores for (query, hit) pairs, higher is better."""

    async def rerank(self, query: str, hits: Sequence[Hit]) -> list[float]: ...


@dataclass(slots=True)
class RetrievalResult:
    hits: list[Hit]
    mode: Mode
    confidence: float | None
    confidence_kind: Literal["cosine", "bm25_norm", "none"]
    candidates: int = 0
    dropped_on_recheck: int = 0
    timings_ms: dict[str, float] = field(default_factory=dict)
    facts: list[GraphFact] = field(default_factory=list)
    """Knowledge-graph facts used (retrieval with ``graph=True``), ACL-checked like passages."""
    note: str | None = None
    """Set when the mode asked for is not the mode that ran (hybrid without embeddings)."""


def rrf_fuse(lists: Sequence[Sequence[tuple[int, float]]], k: int = RRF_K) -> dict[int, float]:
    out: dict[int, float] = {}
    for ranked in lists:
        for rank, (pk, _) in enumerate(ranked, 1):
            out[pk] = out.get(pk, 0.0) + 1.0 / (k + rank)
    return out


def convex_fuse(
    bm25: dict[int, float], cosine: dict[int, float], alpha: float
) -> dict[int, float]:
    """alpha * cos/max(cos) + (1 - alpha) * bm25/max(bm25), theoretical minimum 0 for both."""
    keys = set(bm25) | set(cosine)
    bmax = max(bm25.values(), default=0.0)
    cmax = max((max(v, 0.0) for v in cosine.values()), default=0.0)
    out: dict[int, float] = {}
    for pk in keys:
        b = bm25.get(pk, 0.0) / bmax if bmax > 0 else 0.0
        c = max(cosine.get(pk, 0.0), 0.0) / cmax if cmax > 0 else 0.0
        out[pk] = alpha * c + (1.0 - alpha) * b
    return out


class Retriever:
    """Runs one query against one collection for one caller."""

    def __init__(
        self,
        store: RagStore,
        dense: DenseIndexes,
        embedder_for: dict[str, Embedder],
        *,
        reranker: Reranker | None = None,
        rerank_depth: int = 30,
    ) -> None:
        self.store = store
        self.dense = dense
        self.embedders = embedder_for
        self.reranker = reranker
        self.rerank_depth = rerank_depth
        self.graph: KnowledgeGraph | None = None
        """Knowledge-graph expansion (lockgate.rag.graph), set when enabled."""

    def embedder(self, coll: CollectionInfo) -> Embedder | None:
        if not coll.embed_model:
            return None
        return self.embedders.get(coll.embed_model)

    async def retrieve(
        self,
        coll: CollectionInfo,
        query: str,
        caller: Caller,
        *,
        mode: Mode = "hybrid",
        k: int = 5,
        filters: Filters | None = None,
        exclude_doc_ids: Sequence[str] | None = None,
        candidates: int = 100,
        fusion: Fusion = "convex",
        alpha: float = DEFAULT_ALPHA,
        principal: Principal | None = None,
        graph: bool = False,
    ) -> RetrievalResult:
        import time

        check_question(query)
        timings: dict[str, float] = {}
        principals = None if caller.all_access else caller.principals()
        version = await self.store.version(coll.id)
        embedder = self.embedder(coll)
        if mode == "dense" and embedder is None:
            raise ValueError(f"collection {coll.name!r} has no embeddings model: use --mode bm25")
        use_dense = mode in ("dense", "hybrid") and embedder is not None
        use_lex = mode in ("bm25", "hybrid")
        note = None
        if mode == "hybrid" and not use_dense:
            note = (f"hybrid ran as BM25 only: collection {coll.name!r} has no embeddings model"
                    + (f" ({coll.embed_model!r} is not configured)" if coll.embed_model else "")
                    + "; ingest it with one (rag.embed_model) for dense and hybrid retrieval")
        if not use_dense:
            mode = "bm25"
        n_cand = max(candidates, k)
        terms = query_term_list(query)  # a term repeated in the query weighs more
        # the lexical query (database) and the dense search (embedding + in-memory index)
        # run concurrently; a failure or cancellation of either cancels the other
        async def lexical() -> list[tuple[int, float]]:
            t0 = time.perf_counter()
            found: list[tuple[int, float]] = []
            if use_lex:
                found = await self.store.lexical_search(
                    coll.id, terms, principals=principals, filters=filters,
                    exclude_doc_ids=exclude_doc_ids, k=n_cand, version=version,
                )
            timings["bm25"] = (time.perf_counter() - t0) * 1000
            return found

        async def dense() -> tuple[list[tuple[int, float]], DenseIndex, F32] | None:
            if not use_dense or embedder is None:
                return None
            t0 = time.perf_counter()
            qvec = (await embedder.embed([query], principal=principal))[0]
            timings["embed"] = (time.perf_counter() - t0) * 1000
            t0 = time.perf_counter()
            index = await self.dense.get(coll.id, version)
            found = await index.search(
                qvec, principals=principals, filters=filters,
                exclude_doc_ids=exclude_doc_ids, k=n_cand,
            )
            timings["dense"] = (time.perf_counter() - t0) * 1000
            return found, index, qvec

        tasks = (asyncio.ensure_future(lexical()), asyncio.ensure_future(dense()))
        for task in tasks:  # a second failure is consumed, not logged as never retrieved
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
        try:
            lex, dense_out = await asyncio.gather(*tasks)  # the first error, unwrapped
        except BaseException:
            for task in tasks:
                task.cancel()
            raise
        cos: dict[int, float] = {}
        dense_list: list[tuple[int, float]] = []
        if dense_out is not None:
            dense_list, index, qvec = dense_out
            cos = dict(dense_list)
            missing = [pk for pk, _ in lex if pk not in cos]
            if missing and index.size:
                found = [(pk, p) for pk, p in zip(missing, index.positions(missing), strict=True)
                         if p is not None]
                if found:
                    with one_blas_thread():
                        sims = index.matrix[[p for _, p in found]] @ qvec.astype(np.float32)
                    cos.update((pk, float(s)) for (pk, _), s in zip(found, sims.tolist(),
                                                                     strict=True))
        bm = dict(lex)
        if mode == "bm25":
            fused = bm
        elif mode == "dense":
            fused = dict(dense_list)
        elif fusion == "rrf":
            fused = rrf_fuse([lex, dense_list])
        else:
            fused = convex_fuse(bm, cos, alpha)
        facts: list[GraphFact] = []
        if graph and self.graph is not None:  # entity linking + k-hop expansion
            t0 = time.perf_counter()
            gres = await self.graph.expand(coll.id, query, principals=principals,
                                           filters=filters, exclude_doc_ids=exclude_doc_ids)
            if gres.chunk_scores:
                fused = merge_graph_scores(fused, gres.chunk_scores, self.graph.options.weight)
            facts = gres.facts
            timings["graph"] = (time.perf_counter() - t0) * 1000
        ranked = sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))
        take = ranked[: k + 10]
        t0 = time.perf_counter()
        rows = await self.store.fetch_hits(
            coll.id, [pk for pk, _ in take], principals=principals, filters=filters,
            exclude_doc_ids=exclude_doc_ids,
        )
        timings["recheck"] = (time.perf_counter() - t0) * 1000
        hits: list[Hit] = []
        for pk, score in take:
            hit = rows.get(pk)
            if hit is None:
                continue
            hit.score = score
            hit.bm25 = bm.get(pk)
            hit.cosine = cos.get(pk)
            hits.append(hit)
        dropped = len(take) - len(hits)
        if self.reranker is not None and hits:
            depth = hits[: self.rerank_depth]
            scores = await self.reranker.rerank(query, depth)
            for h, s in zip(depth, scores, strict=True):
                h.score = float(s)
            depth.sort(key=lambda h: -h.score)
            hits = depth + hits[self.rerank_depth :]
        hits = hits[:k]
        confidence: float | None
        kind: Literal["cosine", "bm25_norm", "none"]
        if use_dense and hits:
            confidence = max((h.cosine for h in hits if h.cosine is not None), default=None)
            kind = "cosine"
        elif hits and terms:
            confidence = await self._bm25_norm(coll, terms, hits, version)
            kind = "bm25_norm"
        else:
            confidence, kind = (0.0, "bm25_norm") if not hits else (None, "none")
        return RetrievalResult(
            hits=hits, mode=mode, confidence=confidence, confidence_kind=kind,
            candidates=len(fused), dropped_on_recheck=dropped, timings_ms=timings, facts=facts,
            note=note,
        )

    async def _bm25_norm(
        self, coll: CollectionInfo, terms: list[str], hits: list[Hit], version: int
    ) -> float:
        best = max((h.bm25 for h in hits if h.bm25 is not None), default=0.0)
        ceiling = await self.store.bm25_ceiling(coll.id, terms, version)
        return float(best / ceiling) if ceiling > 0 else 0.0
