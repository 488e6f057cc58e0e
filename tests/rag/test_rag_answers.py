"""Citations map to the right chunks, bad citation numbers vanish, refusal when gold is gone."""

from __future__ import annotations

from lockgate.rag.answer import REFUSAL, CitationFilter, clean_citations
from lockgate.rag.evaluation import calibrate
from lockgate.rag.service import RagService
from lockgate.rag.types import Caller, SourceDocument
from tests.rag.rag_support import OPERATOR, FakePipeline

DOCS = [
    SourceDocument(doc_id="zoo", title="Zoo guide", text=(
        "# Animals\n\nZebras graze on the savanna grass.\n\n# Feeding\n\n"
        "Okapis eat leaves from tall trees every morning.")),
    SourceDocument(doc_id="cars", title="Car manual", text=(
        "# Engine\n\nCheck the engine oil every month.\n\n# Tyres\n\n"
        "Tyre pressure should match the door sticker.")),
    SourceDocument(doc_id="cook", title="Cookbook", text=(
        "# Bread\n\nKnead the dough for ten minutes before baking.")),
]


def test_clean_citations_drops_unknown_numbers() -> None:
    text, used = clean_citations("A [1]. B [7] and [2, 9]. C [3;1]", 3)
    assert text == "A [1]. B and [2]. C [3][1]"
    assert used == [1, 2, 3]
    f = CitationFilter(2)
    out = "".join(f.feed(p) for p in ["See [", "1", "] and [", "12", "] ok [2", "]"]) + f.flush()
    assert out == "See [1] and  ok [2]"
    assert f.used == [1, 2]


async def test_answer_citations_map_to_chunks(service: RagService) -> None:
    pipe = service.pipeline
    assert isinstance(pipe, FakePipeline)
    pipe.reply = "Okapis eat leaves [1]. Oil monthly [2][8]."
    await service.ingest_documents("ans", DOCS, principal=OPERATOR)
    ans = await service.answer("ans", "okapis eat leaves from trees",
                               Caller(), principal=OPERATOR, model="local", mode="hybrid")
    assert not ans.refused
    assert "[8]" not in ans.answer and ans.answer.endswith("Oil monthly [2].")
    by_doc = {d.doc_id: d for d in DOCS}
    assert [c["n"] for c in ans.citations] == [1, 2]
    for c in ans.citations:
        passage = ans.passages[c["n"] - 1]
        assert c["chunk_id"] == passage.chunk_id and c["doc_id"] == passage.doc_id
        assert by_doc[c["doc_id"]].text[c["char_start"]:c["char_end"]] == passage.text
    assert ans.passages[0].doc_id == "zoo" and "Okapis" in ans.passages[0].text
    chat = [c for c in pipe.calls if c.kind == "chat"]
    assert chat and chat[-1].source == "rag" and chat[-1].model == "local"
    assert "[1]" in pipe.prompts[-1] and "Question:" in pipe.prompts[-1]

    events = [e async for e in service.answer_stream(
        "ans", "okapis eat leaves from trees", Caller(), principal=OPERATOR,
        model="local", mode="hybrid")]
    text = "".join(e.text for e in events if e.kind == "delta")
    done = events[-1].answer
    assert done is not None and "[8]" not in text and text.strip() == done.answer
    assert [c["n"] for c in done.citations] == [1, 2]


async def test_extractive_answer_without_model(service: RagService) -> None:
    await service.ingest_documents("ext", DOCS, principal=OPERATOR)
    ans = await service.answer("ext", "how long to knead dough", Caller(), mode="bm25")
    assert ans.extractive and not ans.refused
    assert "Knead the dough" in ans.answer and "[1]" in ans.answer
    assert ans.citations[0]["doc_id"] == "cook"


async def test_refusal_when_gold_documents_removed(service: RagService) -> None:
    await service.ingest_documents("ref", DOCS, principal=OPERATOR)
    q = "okapis eat leaves from tall trees"
    for mode, kind, threshold in (("bm25", "bm25_norm", 0.3), ("hybrid", "cosine", 0.45)):
        await service.set_threshold("ref", threshold, kind)
        ans = await service.answer("ref", q, Caller(), mode=mode)  # type: ignore[arg-type]
        assert not ans.refused, (mode, ans.confidence)
        assert ans.confidence_kind == kind and ans.threshold == threshold
    await service.delete_documents("ref", ["zoo"])
    for mode, kind, threshold in (("bm25", "bm25_norm", 0.3), ("hybrid", "cosine", 0.45)):
        await service.set_threshold("ref", threshold, kind)
        ans = await service.answer("ref", q, Caller(), mode=mode)  # type: ignore[arg-type]
        assert ans.refused and ans.answer == REFUSAL, (mode, ans.confidence)
        assert all(c["doc_id"] != "zoo" for c in ans.citations)


async def test_calibrate_separates_answerable(service: RagService) -> None:
    await service.ingest_documents("cal", DOCS, principal=OPERATOR)
    queries = {"1": "okapis eat leaves", "2": "knead dough baking", "3": "tyre pressure sticker"}
    qrels = {"1": {"zoo": 1}, "2": {"cook": 1}, "3": {"cars": 1}}
    cal = await calibrate(service, "cal", queries, qrels, mode="hybrid")
    assert cal.kind == "cosine" and cal.queries == 3
    assert cal.answerable_mean > cal.unanswerable_mean
    assert cal.balanced_accuracy == 1.0
