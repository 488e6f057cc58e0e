"""Hybrid retrieval on a collection without an embeddings model says so instead of silently
answering as BM25 (retrieval result, answer, evaluation)."""

from __future__ import annotations

from lockgate.rag.evaluation import evaluate
from lockgate.rag.service import RagService
from lockgate.rag.types import Caller, SourceDocument
from tests.rag.rag_support import OPERATOR

DOCS = [SourceDocument(doc_id="a", text="The vacation policy grants 25 days per year."),
        SourceDocument(doc_id="b", text="Laptops are collected from the IT desk.")]


async def test_hybrid_without_embeddings_is_reported(service: RagService) -> None:
    await service.store.create_collection("bm", None)
    await service.ingest_documents("bm", DOCS, principal=OPERATOR)
    res = await service.retrieve("bm", "vacation days", Caller(), mode="hybrid")
    assert res.mode == "bm25" and res.hits[0].doc_id == "a"
    assert res.note is not None and "no embeddings model" in res.note
    ans = await service.answer("bm", "vacation days", Caller(), mode="hybrid")
    assert ans.as_dict()["mode"] == "bm25"
    assert "hybrid ran as BM25 only" in ans.as_dict()["mode_note"]
    ev = await evaluate(service, "bm", {"q": "vacation days"}, {"q": {"a": 1}}, mode="hybrid")
    assert ev["mode"] == "bm25" and "no embeddings model" in ev["mode_note"]
    # asking for BM25 explicitly is not a degradation: no note
    res = await service.retrieve("bm", "vacation days", Caller(), mode="bm25")
    assert res.note is None and "mode_note" not in (
        await service.answer("bm", "vacation days", Caller(), mode="bm25")).as_dict()


async def test_hybrid_with_embeddings_has_no_note(service: RagService) -> None:
    await service.ingest_documents("emb", DOCS, principal=OPERATOR)
    res = await service.retrieve("emb", "vacation days", Caller(), mode="hybrid")
    assert res.mode == "hybrid" and res.note is None
