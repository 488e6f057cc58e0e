"""Query cost is bounded: at most 64 distinct terms, each counted at most 4 times; questions
over 8 KB are a 400.

On both lexical backends (SQLite FTS5 and PostgreSQL postings), through the service.
The HTTP paths (``/v1/rag/{c}/query``, ``model: rag/<c>`` on both APIs) are in
tests/gateway/test_gateway_rag_cost.py.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest

from lockgate.errors import BadRequest
from lockgate.rag.analysis import MAX_QUERY_TERMS, MAX_TERM_REPEAT, analyze, query_terms
from lockgate.rag.retrieval import MAX_QUESTION_BYTES, check_question
from lockgate.rag.service import RagService
from lockgate.rag.types import Caller, SourceDocument
from tests.rag.rag_support import OPERATOR

DOCS = [
    SourceDocument(doc_id="zoo", title="Zoo guide", text=(
        "# Animals\n\nZebras graze on the savanna grass.\n\n# Feeding\n\n"
        "Okapis eat leaves from tall trees every morning.")),
    SourceDocument(doc_id="cars", title="Car manual", text=(
        "# Engine\n\nCheck the engine oil every month.\n\n# Tyres\n\n"
        "Tyre pressure should match the door sticker.")),
]

FILLER = [f"word{i}x" for i in range(300)]  # distinct, not stop-words, never in the documents


def test_query_terms_are_distinct_and_capped() -> None:
    assert query_terms("okapis okapis eat the leaves, okapis") == ["okapi", "eat", "leav"]
    rng = random.Random(7)
    words = FILLER + ["okapis"] * 5 + ["leaves"] * 3
    rng.shuffle(words)
    terms = query_terms(" ".join(words))
    assert len(terms) == MAX_QUERY_TERMS == len(set(terms))
    # the most repeated terms are kept, in order of first occurrence
    assert "okapi" in terms and "leav" in terms
    all_terms = analyze(" ".join(words))
    positions = [all_terms.index(t) for t in terms]
    assert positions == sorted(positions)
    assert query_terms("x " * 10, max_terms=3) == ["x"]


def test_check_question_counts_utf8_bytes() -> None:
    assert check_question("a" * MAX_QUESTION_BYTES)
    with pytest.raises(BadRequest) as exc:
        check_question("a" * (MAX_QUESTION_BYTES + 1))
    assert exc.value.code == "question_too_long" and exc.value.status == 400
    with pytest.raises(BadRequest):
        check_question("é" * (MAX_QUESTION_BYTES // 2 + 1))  # 2 bytes each


async def test_long_valid_question_searches_64_distinct_terms(
    service: RagService, monkeypatch: pytest.MonkeyPatch
) -> None:
    await service.ingest_documents("cost", DOCS, principal=OPERATOR)
    seen: list[list[str]] = []
    real = service.store.lexical_search

    async def spy(cid: int, terms: Sequence[str], **kw: Any) -> Any:
        seen.append(list(terms))
        return await real(cid, terms, **kw)

    monkeypatch.setattr(service.store, "lexical_search", spy)
    # ~7.9 KB: the real question repeated, plus 300 distinct filler words
    question = ("what do okapis eat from tall trees? " * 100 + " ".join(FILLER))[:8000]
    assert len(question.encode()) <= MAX_QUESTION_BYTES
    res = await service.retrieve("cost", question, Caller(), mode="bm25")
    assert len(seen) == 1
    terms = seen[0]
    counts = Counter(terms)  # distinct terms capped; each repeat counted up to the cap
    assert len(counts) <= MAX_QUERY_TERMS
    assert len(terms) <= MAX_QUERY_TERMS * MAX_TERM_REPEAT
    assert counts["okapi"] == MAX_TERM_REPEAT  # 100 times in the question
    assert len(set(analyze(question))) > MAX_QUERY_TERMS  # so the cap did something
    assert {"okapi", "eat", "tall", "tree"} <= set(terms)
    assert res.hits and res.hits[0].doc_id == "zoo"


async def test_too_long_question_is_refused_before_any_search(
    service: RagService, monkeypatch: pytest.MonkeyPatch
) -> None:
    await service.ingest_documents("cost2", DOCS, principal=OPERATOR)

    async def boom(*a: Any, **kw: Any) -> Any:
        raise AssertionError("searched")

    monkeypatch.setattr(service.store, "lexical_search", boom)
    with pytest.raises(BadRequest) as exc:
        await service.answer("cost2", "okapis " * 100_000, Caller(), principal=OPERATOR)
    assert exc.value.code == "question_too_long"
